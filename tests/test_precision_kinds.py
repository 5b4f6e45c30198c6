"""The commands on both kinds of CPU, on any machine.

`--amp auto` picks bf16 on CPUs with native bf16 (AVX512-BF16 or AMX) and float32 elsewhere, so a branch that only
one kind takes could fail unseen on the other (it did: `sg2im-bench --impl published` refused `--amp auto` on a
native-bf16 CPU). `SG2IM_CPU_BF16=1` makes the package see the CPU as native-bf16, `SG2IM_CPU_BF16=0` as AVX2
(`05a_precision`); every command whose behaviour depends on the precision runs here both ways, and must succeed and
report the precision it used."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
from sg2im_nb.data.shapes import make_shapes_dataset

REPO = Path(__file__).resolve().parent.parent
KINDS = {'native-bf16': ('1', 'bf16'), 'avx2': ('0', 'none')}  # SG2IM_CPU_BF16, what --amp auto must become


def _run(module, *args, seen):
    env = {**os.environ, 'SG2IM_CPU_BF16': seen, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, '-m', module, *map(str, args)], capture_output=True, text=True, timeout=600,
                          cwd=REPO, env=env)


def _json_line(res) -> dict:
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads([l for l in res.stdout.splitlines() if l.startswith('{')][-1])


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    d = tmp_path_factory.mktemp('shapes')
    make_shapes_dataset(d, num_train=8, num_val=4, num_test=4, image_size=32, seed=0, num_workers=0)
    return d


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('mode', ['generate', 'train'])
def test_bench_auto_both_impls(kind, mode):
    "The published baseline runs float32 under --amp auto; ours runs what auto resolves to."
    seen, want = KINDS[kind]
    for impl, used in (('published', 'none'), ('ours', want)):
        r = _json_line(_run('sg2im_nb.reference.bench', '--config', 'tiny', '--batch_size', 2, '--iters', 1, '--warmup', 0,
                            '--mode', mode, '--impl', impl, '--profile', 0, seen=seen))
        assert (r['impl'], r['amp'], r['amp_used']) == (impl, 'auto', used), r


@pytest.mark.parametrize('kind', KINDS)
def test_bench_published_refuses_explicit_bf16(kind):
    res = _run('sg2im_nb.reference.bench', '--config', 'tiny', '--iters', 1, '--impl', 'published', '--amp', 'bf16',
               seen=KINDS[kind][0])
    why = 'float32 eager baseline' if kind == 'native-bf16' else 'no native bfloat16'  # AVX2: bf16 itself is refused first
    assert res.returncode == 2 and res.stderr.count('\n') == 1 and why in res.stderr, res.stderr


@pytest.mark.parametrize('kind', KINDS)
def test_train_auto(kind, shapes, tmp_path):
    "Two tiny iterations under --amp auto; the checkpoint records the precision that ran."
    seen, want = KINDS[kind]
    res = _run('sg2im_nb.train.loop', '--preset', 'tiny', '--device', 'cpu', '--shapes_dir', shapes, '--output_dir',
               tmp_path / 'run', '--num_iterations', 2, '--checkpoint_every', 2, '--amp', 'auto', seen=seen)
    assert res.returncode == 0, res.stderr[-2000:]
    from sg2im_nb.checkpoint import load_checkpoint
    ck = load_checkpoint(tmp_path / 'run' / 'checkpoint_with_model.pt')
    assert ck['counters']['t'] == 2
    assert ck['args']['amp'] in ('auto', want), ck['args']['amp']


@pytest.mark.parametrize('kind', KINDS)
def test_run_model_and_evaluate_auto(kind, shapes, tmp_path):
    seen, _ = KINDS[kind]
    res = _run('sg2im_nb.inference', '--scene_graphs_json', 'scene_graphs/shapes_demo.json', '--output_dir', tmp_path / 'out',
               '--amp', 'auto', seen=seen)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(list((tmp_path / 'out').glob('img*.png'))) >= 1
    r = _json_line(_run('sg2im_nb.eval.evaluate', '--dataset', 'shapes', '--shapes_dir', shapes, '--num_samples', 4,
                        '--batch_size', 4, '--amp', 'auto', '--output_dir', tmp_path / 'eval', seen=seen))
    assert r['num_samples'] == 4 or r.get('n') == 4 or 'object_accuracy' in json.dumps(r), r
