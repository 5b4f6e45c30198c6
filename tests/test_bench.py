"The sg2im-bench command (sg2im_nb.bench): a tiny smoke run of the CLI and its JSON line; no timing assertions."
import json, subprocess, sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'sg2im_nb.bench', *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_compare_json_line():
    res = _cli('--config', 'tiny', '--batch_size', 2, '--iters', 1, '--warmup', 0, '--device', 'cpu', '--compare')
    assert res.returncode == 0, res.stderr
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    assert len(lines) == 1
    r = json.loads(lines[0])
    for k in ('sec_per_step', 'imgs_per_s', 'peak_mb', 'config', 'device', 'threads', 'mode', 'impl', 'batch_size',
              'amp', 'compile', 'memory_meter', 'published', 'speedup', 'memory_ratio'):
        assert k in r, k
    assert (r['config'], r['device'], r['mode'], r['impl'], r['batch_size']) == ('tiny', 'cpu', 'train', 'ours', 2)
    assert set(r['published']) >= {'sec_per_step', 'imgs_per_s', 'peak_mb'}
    assert r['sec_per_step'] > 0 and r['peak_mb'] > 0 and r['threads'] >= 1
    # model FLOPs are the same for both (counted once, on ours); no MFU without a known peak (CPU)
    assert r['gflop_per_step'] > 0 and r['published']['gflop_per_step'] == r['gflop_per_step']
    assert r['mfu'] is None and r['peak_tflops'] is None and r['tflops'] > 0
    # the published loop keeps its gradients between steps, ours frees them after each update
    assert r['held_grads_mb'] == 0 and r['published']['held_grads_mb'] > 0


def test_recompute_crn_flag():
    res = _cli('--config', 'tiny', '--batch_size', 2, '--iters', 1, '--warmup', 0, '--recompute_crn', 2)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])['recompute_crn'] == 2
    res = _cli('--config', 'tiny', '--iters', 1, '--impl', 'published', '--recompute_crn', 1)
    assert res.returncode == 2 and 'float32 eager baseline' in res.stderr and 'Traceback' not in res.stderr
    res = _cli('--config', 'tiny', '--iters', 1, '--recompute_crn', 9)
    assert res.returncode == 2 and '--recompute_crn must be between 0 and 3' in res.stderr


def test_generate_json_line():
    res = _cli('--config', 'tiny', '--batch-size', 2, '--iters', 1, '--warmup', 0, '--mode', 'generate', '--impl', 'published')
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r['mode'] == 'generate' and r['impl'] == 'published' and r['latency_s'] > 0 and r['imgs_per_s'] > 0


def test_user_error_one_line():
    res = _cli('--config', 'coco128', '--iters', 1)
    assert res.returncode == 2 and res.stdout == ''
    assert res.stderr.strip().splitlines() == ["error: --config 'coco128' is not one of coco64, small64, tiny"]
