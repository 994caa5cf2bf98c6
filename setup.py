"""Build hook; the metadata lives in setup.cfg.

Ships ``tools/``, ``configs/`` and ``model-index.yml`` inside the package as
``ms_rcnn_mm/.mim/`` (the OpenMMLab convention), where ``mim train
ms_rcnn_mm CONFIG``, ``mim test`` and mmengine's ``ms_rcnn_mm::`` config
prefix look for them: both resolve ``<location of the installed
distribution>/ms_rcnn_mm/.mim``.

- Wheel builds (``pip install .``, ``pip wheel .``) copy the files there.
- Editable installs (``pip install -e .``, PEP 660) keep the distribution's
  metadata in site-packages, so the ``.mim`` folder must be there too, and a
  wheel cannot hold symbolic links. Each ``.py`` file there forwards to the
  repository's file (a config inherits it, a tool runs it), so edits in the
  checkout take effect at once; other files (metafiles, README, shell
  scripts) are copied. setup.cfg's ``package_dir = =.`` makes the editable
  install put the checkout on ``sys.path``, so this ``.mim``-only folder in
  site-packages does not hide the package itself. The checkout also gets
  ``ms_rcnn_mm/.mim`` as symbolic links (mmdet's ``add_mim_extension`` in
  develop mode), for processes that find the distribution there.

Builds one C extension, ``ms_rcnn_mm.models._box_areas`` (the CPU kernel of
the MaskIoU targets' area ratios, ``ms_rcnn_mm/models/csrc``), with OpenMP.
It is optional: where it cannot be built the package falls back to its
portable path, and says so when it is first used.
"""
import os
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGE = 'ms_rcnn_mm'
#: what mim and mmengine read from ``<package>/.mim``
MIM_ITEMS = ('configs', 'tools', 'model-index.yml')
SKIPPED = shutil.ignore_patterns('__pycache__', '*.pyc')


def forwarding_stub(source: Path) -> str:
    """A ``.py`` file that stands for ``source``: a config that inherits it,
    or a script that runs it."""
    if source.relative_to(ROOT).parts[0] == 'configs':
        return (f'# ms_rcnn_mm installed in editable mode: this config is\n'
                f'_base_ = {str(source)!r}\n')
    return (f'"""ms_rcnn_mm installed in editable mode: runs {source}."""\n'
            'import runpy\n\n'
            f'runpy.run_path({str(source)!r}, run_name="__main__")\n')


def write_item(source: Path, target: Path, editable: bool) -> None:
    """Copy ``source`` (file or folder) to ``target``; in editable mode
    ``.py`` files become forwarding stubs."""
    if source.is_dir():
        names = set(os.listdir(source)) - SKIPPED(str(source),
                                                  os.listdir(source))
        for name in sorted(names):
            write_item(source / name, target / name, editable)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if editable and source.suffix == '.py':
        target.write_text(forwarding_stub(source))
    else:
        shutil.copy2(source, target)


def link_checkout_mim() -> None:
    """``ms_rcnn_mm/.mim/<item>`` -> ``../../<item>`` in the checkout (git
    ignores them), for processes that find the distribution there: those
    with the checkout's root on ``sys.path`` before site-packages (``python
    -m ...`` run from it), where ``ms_rcnn_mm.egg-info`` lies."""
    mim = ROOT / PACKAGE / '.mim'
    mim.mkdir(exist_ok=True)
    for item in MIM_ITEMS:
        link = mim / item
        if link.is_symlink() or link.exists():
            continue
        try:
            link.symlink_to(Path('..', '..', item))
        except OSError as error:  # no symbolic links on this file system
            print(f'warning: cannot link {link}: {error}')


class BuildPyWithMim(build_py):
    """``build_py`` that also writes ``ms_rcnn_mm/.mim``."""

    def run(self) -> None:
        super().run()
        editable = getattr(self, 'editable_mode', False)
        # editable_wheel installs the files of its ``install`` command's
        # ``install_lib`` as they are; a wheel build packs ``build_lib``
        base = (self.get_finalized_command('install').install_lib
                if editable else self.build_lib)
        mim = Path(base, PACKAGE, '.mim')
        shutil.rmtree(mim, ignore_errors=True)
        for item in MIM_ITEMS:
            write_item(ROOT / item, mim / item, editable)
        if editable:
            link_checkout_mim()


#: the CPU kernel of ``ms_rcnn_mm/models/area_ratio.py``; OpenMP gives it the
#: thread pool torch already runs (one libgomp in the process)
BOX_AREAS = Extension(
    f'{PACKAGE}.models._box_areas',
    sources=[f'{PACKAGE}/models/csrc/box_areas.c'],
    extra_compile_args=['-O3', '-fopenmp'],
    extra_link_args=['-fopenmp'],
    optional=True)

setup(cmdclass={'build_py': BuildPyWithMim}, ext_modules=[BOX_AREAS])
