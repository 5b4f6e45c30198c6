"""Packaging, as a library user meets it: build the wheel, install it into a fresh virtual environment where torch is
already installed (the lowest version pyproject.toml claims), check that torch was kept, and generate an image with
the shipped model from another folder, with no network. About a minute and a half on 2 cores (mostly installing)."""
import json, os, shutil, subprocess, sys, zipfile
from importlib.metadata import version
from pathlib import Path
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TORCH_LOWEST = '2.13.0'  # the lower bound of torch in pyproject.toml
GRAPH = [{'objects': ['sky', 'grass', 'circle'], 'relationships': [[0, 'above', 1], [2, 'above', 1]], 'seed': 3}]


def _run(cmd, **kw):
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert res.returncode == 0, (cmd, res.stdout[-2000:], res.stderr[-3000:])
    return res


def _build_wheel(tmp: Path) -> Path:
    "Build from a copy of the files a build reads, so that nothing (build/, *.egg-info) lands in the working tree."
    src = tmp / 'src'
    (src / 'data').mkdir(parents=True)
    for rel in ('pyproject.toml', 'README.md', 'LICENSE'): shutil.copy(REPO / rel, src / rel)
    shutil.copytree(REPO / 'sg2im_nb', src / 'sg2im_nb', ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copytree(REPO / 'data' / 'models', src / 'data' / 'models')
    shutil.copytree(REPO / 'scene_graphs', src / 'scene_graphs')
    try: isolated = int(version('setuptools').split('.')[0]) < 77  # the build backend pyproject.toml asks for
    except Exception: isolated = True
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', tmp / 'dist', src] + ([] if isolated else ['--no-build-isolation']))
    return next((tmp / 'dist').glob('sg2im_nb-*.whl'))


def test_wheel_installs_beside_torch_and_runs_the_shipped_model_offline(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        for name in ('shapes64.pt', 'shapes_classifier.pt'):  # the shipped models, byte for byte
            assert zf.read(f'sg2im_nb/models/{name}') == (REPO / 'data' / 'models' / name).read_bytes(), name
        examples = sorted(p.name for p in (REPO / 'scene_graphs').glob('*.json'))
        for name in examples:  # the example scene graphs, byte for byte
            assert zf.read(f'sg2im_nb/scene_graphs/{name}') == (REPO / 'scene_graphs' / name).read_bytes(), name
        for name in ('editor.js', 'editor.css'):  # the editor's browser side, byte for byte
            assert zf.read(f'sg2im_nb/editor/static/{name}') == (REPO / 'sg2im_nb' / 'editor' / 'static' / name).read_bytes(), name
        meta = zf.read(next(n for n in zf.namelist() if n.endswith('METADATA'))).decode()
    assert 'Requires-Dist: torch<3,>=2.13' in meta, [l for l in meta.splitlines() if 'torch' in l]
    env = tmp_path / 'env'
    _run([sys.executable, '-m', 'venv', env])
    pip = [env / 'bin' / 'python', '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '--no-compile']
    _run(pip + [f'torch=={TORCH_LOWEST}'])  # the user's torch, there first
    _run(pip + [wheel])
    py = env / 'bin' / 'python'
    assert _run([py, '-c', 'import torch; print(torch.__version__)']).stdout.split('+')[0].strip() == TORCH_LOWEST  # kept
    elsewhere = tmp_path / 'elsewhere'; elsewhere.mkdir()
    (elsewhere / 'graphs.json').write_text(json.dumps(GRAPH))
    offline = {k: v for k, v in os.environ.items() if k not in ('SG2IM_CHECKPOINT', 'PYTHONPATH')}
    offline.update(HTTP_PROXY='http://127.0.0.1:9', HTTPS_PROXY='http://127.0.0.1:9', http_proxy='http://127.0.0.1:9',
                   https_proxy='http://127.0.0.1:9', NO_PROXY='', no_proxy='')  # any download would fail
    res = _run([env / 'bin' / 'sg2im-run-model', '--scene_graphs_json', 'graphs.json', '--output_dir', 'out', '--device', 'cpu'],
               cwd=elsewhere, env=offline)
    assert 'untrained' not in res.stdout + res.stderr and 'wrote 1 files' in res.stdout, res.stdout + res.stderr
    where = _run([py, '-c', 'import sg2im_nb.inference as i; print(i.default_checkpoint_path())'], cwd=elsewhere, env=offline).stdout.strip()
    assert where.startswith(str(env)) and where.endswith('sg2im_nb/models/shapes64.pt'), where  # the wheel's copy
    # no --scene_graphs_json: the default scene_graphs/shapes_demo.json is the wheel's copy of the example
    demo = json.loads((REPO / 'scene_graphs' / 'shapes_demo.json').read_text())
    res = _run([env / 'bin' / 'sg2im-run-model', '--output_dir', 'demo', '--device', 'cpu'], cwd=elsewhere, env=offline)
    assert f'wrote {len(demo)} files' in res.stdout, res.stdout + res.stderr
    code = 'from sg2im_nb.inference import examples_dir; print(examples_dir()); print(len(list(examples_dir().glob("*.json"))))'
    where, n = _run([py, '-c', code], cwd=elsewhere, env=offline).stdout.split()
    assert where.startswith(str(env)) and where.endswith('sg2im_nb/scene_graphs') and int(n) == len(examples), (where, n)
    # the same picture as the repository's shapes64.pt draws for this graph
    from sg2im_nb.checkpoint import build_model
    from sg2im_nb.inference import generate
    want = generate(build_model(REPO / 'data' / 'models' / 'shapes64.pt'), GRAPH)[0].image
    np.testing.assert_array_equal(np.asarray(Image.open(elsewhere / 'out' / 'img000000.png')), want)
    # the shipped classifier (object accuracy, IS, FID of sg2im-evaluate) loads from the wheel too
    code = 'from sg2im_nb.eval.classifier import load_classifier; from sg2im_nb.checkpoint import shipped_model; ' \
           "print(len(load_classifier(shipped_model('shapes_classifier.pt')).names))"
    assert int(_run([py, '-c', code], cwd=elsewhere, env=offline).stdout) > 10
