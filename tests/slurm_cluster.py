"""A throwaway single-node SLURM cluster for tests: SLURM 22.05 daemons and
munge, started without systemd or cgroups and stopped by their PIDs.

Needs root (the daemons, and munged runs as the ``munge`` user) and the
Debian packages ``slurmctld slurmd slurm-client munge``, which
:func:`install` gets with apt-get when they are missing. Every path (key,
sockets, state, logs) lives under one temporary folder, the ports are free
ones, and clients find the cluster through ``SLURM_CONF`` in :attr:`env`, so
the cluster leaves the machine as it found it.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

PACKAGES = ('slurmctld', 'slurmd', 'slurm-client', 'munge')
COMMANDS = ('munged', 'slurmctld', 'slurmd', 'srun', 'sinfo', 'scontrol')
MUNGE_USER = 'munge'
MUNGE_KEY_BYTES = 1024
PARTITION = 'debug'
#: seconds to wait for the node to be idle, and for a daemon to stop
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 10
APT_TIMEOUT_S = 600

SLURM_CONF = """\
ClusterName=ms-rcnn-mm-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def missing_requirement() -> Optional[str]:
    """Why a cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return 'a SLURM cluster needs root (the daemons run as root)'
    if not all(map(shutil.which, COMMANDS)) and not shutil.which('apt-get'):
        return ('SLURM is not installed and apt-get is missing to install '
                + ' '.join(PACKAGES))
    return None


def install() -> None:
    """apt-get install the packages where a command is missing.

    Raises:
        RuntimeError: apt-get failed (its output is in the message).
    """
    if all(map(shutil.which, COMMANDS)):
        return
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    command = ['apt-get', 'install', '-y', '--no-install-recommends',
               *PACKAGES]
    out = subprocess.run(command, env=env, capture_output=True, text=True,
                         timeout=APT_TIMEOUT_S)
    if out.returncode != 0:  # a fresh machine may have no package lists
        subprocess.run(['apt-get', 'update'], env=env, capture_output=True,
                       timeout=APT_TIMEOUT_S)
        out = subprocess.run(command, env=env, capture_output=True,
                             text=True, timeout=APT_TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(f'{" ".join(command)} failed:\n'
                           f'{out.stdout[-2000:]}{out.stderr[-2000:]}')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class SlurmCluster:
    """munged, slurmctld and slurmd on this machine, as one node.

    Args:
        cpus (int, optional): CPUs of the node. Defaults to ``os.cpu_count``.
    """

    def __init__(self, cpus: Optional[int] = None) -> None:
        self.cpus = cpus or os.cpu_count()
        self.host = socket.gethostname().split('.')[0]
        self.root = Path(tempfile.mkdtemp(prefix='ms_rcnn_mm_slurm_'))
        self.root.chmod(0o755)  # munged, as user munge, reaches its folder
        self.conf = self.root / 'slurm.conf'
        self.env: Dict[str, str] = dict(os.environ, SLURM_CONF=str(self.conf))
        self.daemons: List[subprocess.Popen] = []

    def __enter__(self) -> 'SlurmCluster':
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start the daemons and wait until the node is idle.

        Raises:
            RuntimeError: a daemon exited, or the node is not idle in time
                (the daemons' logs are in the message).
        """
        munge_socket = self._start_munged()
        (self.root / 'state').mkdir()
        (self.root / 'spool').mkdir()
        self.conf.write_text(SLURM_CONF.format(
            host=self.host, root=self.root, cpus=self.cpus,
            partition=PARTITION, munge_socket=munge_socket,
            ctld_port=free_port(), slurmd_port=free_port()))
        self._spawn(['slurmctld', '-D', '-i', '-f', str(self.conf)])
        self._spawn(['slurmd', '-D', '-f', str(self.conf)])
        self._wait_idle()

    def _start_munged(self) -> Path:
        munge = self.root / 'munge'
        munge.mkdir()
        munge.chmod(0o755)  # clients reach the socket; the key stays 0400
        key = munge / 'munge.key'
        key.write_bytes(os.urandom(MUNGE_KEY_BYTES))
        key.chmod(0o400)
        user = pwd.getpwnam(MUNGE_USER)
        for path in (munge, key):
            os.chown(path, user.pw_uid, user.pw_gid)
        munge_socket = munge / 'munge.socket'
        self._spawn(['munged', '--foreground', f'--socket={munge_socket}',
                     f'--key-file={key}', f'--pid-file={munge}/munged.pid',
                     f'--log-file={munge}/munged.log',
                     f'--seed-file={munge}/munged.seed'], user=MUNGE_USER)
        self._wait(lambda: munge_socket.exists(), 'munged socket')
        return munge_socket

    def _spawn(self, command: List[str], user: Optional[str] = None) -> None:
        log = open(self.root / f'{command[0]}.out', 'w')
        self.daemons.append(subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, user=user,
            env=self.env, start_new_session=True))
        log.close()

    def _wait_idle(self) -> None:
        def idle():
            out = subprocess.run(['sinfo', '-h', '-o', '%t'], env=self.env,
                                 capture_output=True, text=True)
            return out.stdout.strip() == 'idle'
        self._wait(idle, 'an idle node in sinfo')

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            exited = [p.args[0] for p in self.daemons if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                raise RuntimeError(
                    f'SLURM test cluster: no {what} (exited: {exited})\n'
                    + self.logs())
            time.sleep(0.1)

    def logs(self) -> str:
        """The tail of every daemon log, for error messages."""
        parts = []
        for log in sorted(self.root.glob('*.out')) + sorted(
                self.root.glob('*.log')):
            parts.append(f'--- {log.name}\n{log.read_text()[-1500:]}')
        return '\n'.join(parts)

    def stop(self) -> None:
        """Stop the daemons by PID (TERM, then KILL) and remove the folder."""
        for daemon in reversed(self.daemons):
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        self.daemons.clear()
        shutil.rmtree(self.root, ignore_errors=True)
