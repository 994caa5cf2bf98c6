"""``tools/``, ``configs/`` and ``model-index.yml`` ship as
``ms_rcnn_mm/.mim`` (wheel and editable installs), and the metafile lists
every config with its baseline. ``mim train`` and ``mim test`` themselves
run in test_zoo_tools.py."""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import mmdet
import pytest
import yaml
from helpers import REPO
from mmengine.config import Config

#: the model zoo: the configs the metafiles list
ZOO = sorted(path for folder in ('ms-rcnn', 'cascade-ms-rcnn', 'htc-ms')
             for path in (REPO / 'configs' / folder).glob('*.py'))
METAFILES = ('configs/ms-rcnn/metafile.yml',
             'configs/cascade-ms-rcnn/metafile.yml')
MIM = Path(sys.executable).with_name('mim')
#: prints where mim finds the package (mmengine's lookup of installed
#: OpenMMLab packages is the same) and loads the R50 config from there
PROBE = '''
import warnings
warnings.simplefilter('ignore')
from pathlib import Path
from mim.utils import get_installed_path
from mmengine.config import Config
import ms_rcnn_mm
from ms_rcnn_mm.models import area_ratio
installed = get_installed_path('ms_rcnn_mm')
cfg = Config.fromfile(
    f'{installed}/.mim/configs/ms-rcnn/ms-rcnn-mm_r50_fpn_1x_coco.py')
print(installed)
print(ms_rcnn_mm.__file__)
print(cfg.model.type, cfg.model.roi_head.mask_iou_head.type)
print(area_ratio._box_areas.__file__)
'''
MODEL = 'ms_rcnn_mm.MaskScoringRCNN ms_rcnn_mm.MaskIoUHead'


def shipped_files():
    """Repository files that must appear under ``ms_rcnn_mm/.mim``."""
    files = [REPO / 'model-index.yml']
    for folder in ('configs', 'tools'):
        files += [p for p in (REPO / folder).rglob('*')
                  if p.is_file() and '__pycache__' not in p.parts]
    return sorted(files)


def probe(tmp_path, env=None):
    out = subprocess.run([sys.executable, '-c', PROBE], capture_output=True,
                         text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.splitlines()[-4:]


def build_wheel(source, out_dir, env=None):
    """``pip wheel`` of the checkout at ``source`` into ``out_dir``."""
    pip('wheel', '--no-build-isolation', '-w', str(out_dir), str(source),
        env=env)
    (path, ) = Path(out_dir).glob('ms_rcnn_mm-*.whl')
    return path


def install_wheel(wheel, target):
    pip('install', '--target', str(target), str(wheel))
    return dict(os.environ, PYTHONPATH=str(target))


def pip(*args, env=None):
    out = subprocess.run(
        [sys.executable, '-m', 'pip', *args, '--no-deps', '-q',
         '--disable-pip-version-check'], capture_output=True, text=True,
        env=env)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    return build_wheel(REPO, tmp_path_factory.mktemp('wheel'))


def test_wheel_holds_tools_configs_and_model_index(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for path in shipped_files():
            name = 'ms_rcnn_mm/.mim/' + path.relative_to(REPO).as_posix()
            assert name in names, name
            assert archive.read(name) == path.read_bytes(), name
    assert not [n for n in names if n.startswith(('tests/', 'tools/'))]
    assert not [n for n in names if '__pycache__' in n]


def test_wheel_install_is_where_mim_looks(wheel, tmp_path):
    target = tmp_path / 'site'
    installed, module, model, kernel = probe(
        tmp_path, install_wheel(wheel, target))
    assert installed == str(target / 'ms_rcnn_mm')
    assert module == str(target / 'ms_rcnn_mm' / '__init__.py')
    assert model == MODEL
    # the wheel carries the compiled MaskIoU-target kernel
    assert Path(kernel).parent == target / 'ms_rcnn_mm' / 'models'
    copied = target / 'ms_rcnn_mm' / '.mim' / 'tools' / 'train.py'
    assert copied.read_bytes() == (REPO / 'tools' / 'train.py').read_bytes()


#: what a build ignores in the checkout's copy: its own environment and
#: builds (a built kernel would be packed as it is)
NOT_SOURCES = ('.git', '.venv', 'build', 'dist', 'work_dirs', 'data', '*.so',
               '*.egg-info', '.mim', '__pycache__', '.pytest_cache')
FALLBACK_PROBE = '''
import warnings
import numpy as np
import torch
from mmdet.structures.mask import BitmapMasks
from ms_rcnn_mm.models import area_ratio, gt_area_ratios
masks = np.zeros((1, 10, 10), np.uint8)
masks[0, 2:6, 2:6] = 1
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    ratio = gt_area_ratios(torch.tensor([[0., 0., 4., 10.]]),
                           torch.tensor([0]), BitmapMasks(masks, 10, 10))
print(area_ratio._box_areas, ratio.item())
print(*[str(w.message) for w in caught])
'''


def test_install_without_a_c_compiler_falls_back_to_the_portable_path(
        tmp_path):
    """setup.py's kernel is optional: with no working compiler the wheel
    is built without it, and the targets take the portable path, saying
    so."""
    source = tmp_path / 'source'
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    wheel = build_wheel(source, tmp_path,
                        dict(os.environ, CC='false', LDSHARED='false'))
    assert not [n for n in zipfile.ZipFile(wheel).namelist()
                if n.endswith(('.so', '.pyd'))]
    out = subprocess.run([sys.executable, '-c', FALLBACK_PROBE],
                         capture_output=True, text=True, cwd=tmp_path,
                         env=install_wheel(wheel, tmp_path / 'site'))
    assert out.returncode == 0, out.stderr[-3000:]
    kernel, warning = out.stdout.splitlines()[-2:]
    assert kernel == 'None 0.5'  # 8 of the 16 pixels lie left of x = 4
    assert "kernel is missing (No module named 'ms_rcnn_mm.models." \
        "_box_areas')" in warning


def test_editable_install_forwards_to_the_checkout(tmp_path):
    """This venv's editable install: a ``.mim`` of forwarding stubs in
    site-packages (what mim and mmengine find from any folder), the
    package itself imported from the checkout."""
    installed, module, model, kernel = probe(tmp_path)
    assert module == str(REPO / 'ms_rcnn_mm' / '__init__.py')
    assert model == MODEL
    assert Path(kernel).parent == REPO / 'ms_rcnn_mm' / 'models'
    mim = Path(installed, '.mim')
    for path in shipped_files():
        stub = mim / path.relative_to(REPO)
        assert stub.is_file(), stub
        if path.suffix != '.py':
            assert stub.read_bytes() == path.read_bytes()
        elif path.parts[len(REPO.parts)] == 'configs':
            assert Config.fromfile(str(stub)).to_dict() == Config.fromfile(
                str(path)).to_dict()
        else:
            assert f"runpy.run_path('{path}'" in stub.read_text()


def test_checkout_mim_links_serve_processes_started_in_the_checkout():
    # pytest runs with the checkout on sys.path, where ms_rcnn_mm.egg-info
    # makes pkg_resources (mim, mmengine) place the distribution
    from mim.utils import get_installed_path
    mim = Path(get_installed_path('ms_rcnn_mm'), '.mim')
    assert mim.parent == REPO / 'ms_rcnn_mm'
    for item in ('configs', 'tools', 'model-index.yml'):
        assert (mim / item).is_symlink()
        assert (mim / item).resolve() == REPO / item


def test_mim_search_reads_the_model_index(tmp_path):
    out = subprocess.run([str(MIM), 'search', 'ms_rcnn_mm'],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    listed = set(re.findall(r'config id: (\S+)', out.stdout))
    assert listed == {p.stem for p in ZOO}


def test_mim_is_an_optional_extra():
    setup_cfg = (REPO / 'setup.cfg').read_text()
    install_requires = setup_cfg.split('install_requires =')[1].split(
        '\n[')[0]
    assert 'openmim' not in install_requires
    assert re.search(r'^mim =\n    openmim>=', setup_cfg, re.M)


# ---------------------------------------------------------------- metafile


def test_model_index_imports_the_metafiles():
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    assert tuple(index['Import']) == METAFILES
    assert all((REPO / path).is_file() for path in METAFILES)


def metafile_models():
    """(models, collection names) of every metafile."""
    models, collections = [], set()
    for path in METAFILES:
        meta = yaml.safe_load((REPO / path).read_text())
        models += meta['Models']
        collections |= {c['Name'] for c in meta['Collections']}
    return models, collections


def mmdet_names():
    """Model names of MMDetection's metafiles and stems of its configs."""
    configs = Path(mmdet.__file__).parent / '.mim' / 'configs'
    names = {path.stem for path in configs.rglob('*.py')}
    for metafile in configs.glob('*/metafile.yml'):
        meta = yaml.safe_load(metafile.read_text())
        models = meta.get('Models', []) if isinstance(meta, dict) else meta
        names.update(model['Name'] for model in models)
    return names


def test_no_name_is_one_of_mmdet():
    """No model name of the metafile and no config of the package is named
    as one of MMDetection's, which a name lookup (mim, mmengine's model
    names) could resolve to mmdet's built-in model instead.

    Catches a config or model named as mmdet's, e.g.
    ``ms-rcnn_r50-caffe_fpn_1x_coco``."""
    theirs = mmdet_names()
    assert 'ms-rcnn_r50-caffe_fpn_1x_coco' in theirs
    ours = {model['Name'] for model in metafile_models()[0]}
    ours |= {path.stem for path in (REPO / 'configs').rglob('*.py')}
    assert not ours & theirs


def first_base(path: Path) -> str:
    """The first ``_base_`` entry written in a config file."""
    return re.search(r"_base_ = \[?\s*'([^']+)'", path.read_text()).group(1)


def test_metafile_lists_every_config_with_its_baseline():
    """Every zoo config is a metafile model named as its file, whose
    ``Baseline Config`` is the config it extends (mmdet's Mask R-CNN,
    Cascade Mask R-CNN or HTC, or one of ``configs/baselines/``).

    Catches a config missing from the metafiles, and a baseline that is not
    the config the model extends."""
    models, collections = metafile_models()
    assert sorted(m['Config'] for m in models) == [
        p.relative_to(REPO).as_posix() for p in ZOO]
    for model in models:
        path = REPO / model['Config']
        assert model['Name'] == path.stem
        assert model['In Collection'] in collections
        baseline = model['Metadata']['Baseline Config']
        if baseline.startswith('mmdet::'):
            assert baseline == first_base(path)
        else:
            assert Path(baseline).parent.as_posix() == 'configs/baselines'
            assert (path.parent / first_base(path)).resolve() == (
                REPO / baseline).resolve()
        cfg = Config.fromfile(str(path))
        assert model['Metadata']['Epochs'] == cfg.train_cfg.max_epochs
        # no result or checkpoint before a real training run
        assert model['Results'] == []
        assert model['Weights'] is None
