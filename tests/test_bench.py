"The sg2im-bench command (sg2im_nb.reference.bench): a tiny run of the CLI and its JSON line, and its flags checked once; no timing assertions."
import json, os, subprocess, sys
import pytest
from pathlib import Path
import torch
from sg2im_nb.precision import native_amp

REPO = Path(__file__).resolve().parent.parent


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'sg2im_nb.reference.bench', *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def _line(res):
    assert res.returncode == 0, res.stderr
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    assert len(lines) == 1 and 'USDT' not in res.stdout + res.stderr
    return json.loads(lines[0])


def test_compare_json_line():
    r = _line(_cli('--config', 'tiny', '--batch_size', 2, '--iters', 3, '--warmup', 0, '--device', 'cpu', '--compare'))
    for k in ('sec_per_step', 'imgs_per_s', 'peak_mb', 'config', 'device', 'threads', 'mode', 'impl', 'batch_size',
              'amp', 'amp_used', 'compile', 'memory_meter', 'published', 'speedup', 'speedup_min', 'speedup_max',
              'speedup_rounds', 'memory_ratio', 'machine', 'profile'):
        assert k in r, k
    assert (r['config'], r['device'], r['mode'], r['impl'], r['batch_size']) == ('tiny', 'cpu', 'train', 'ours', 2)
    assert set(r['published']) >= {'sec_per_step', 'imgs_per_s', 'peak_mb', 'rounds'}
    assert r['sec_per_step'] > 0 and r['peak_mb'] > 0 and r['threads'] >= 1
    # the ratio round by round: three rounds, and the median between the extremes
    assert len(r['speedup_rounds']) == 3 and r['speedup_min'] <= r['speedup'] <= r['speedup_max']
    # the machine: instruction set, native bf16, threads, load
    m = r['machine']
    assert m['cpu_capability'] == torch.backends.cpu.get_cpu_capability() and m['native_bf16'] == native_amp('cpu')['bf16']
    assert m['threads'] == r['threads'] and len(m['load_avg']) == 3
    # --amp auto: float32 unless this CPU has native bf16
    assert r['amp'] == 'auto' and r['amp_used'] == ('bf16' if m['native_bf16'] else 'none')
    # model FLOPs are the same for both (counted once, on ours); no MFU without a known peak (CPU)
    assert r['gflop_per_step'] > 0 and r['published']['gflop_per_step'] == r['gflop_per_step']
    assert r['mfu'] is None and r['peak_tflops'] is None and r['tflops'] > 0
    # where the time goes: convolution time, rate against the measured matrix-product peak, and the bound
    p = r['profile']['ours']
    assert 0 < p['conv_share'] <= 1 and p['conv_gflops'] > 0 and p['gemm_gflops'] > 0 and p['bound'] > 0
    assert abs(p['of_bound'] - r['speedup'] / p['bound']) < 1e-9
    # the published loop keeps its gradients between steps, ours frees them after each update
    assert r['held_grads_mb'] == 0 and r['published']['held_grads_mb'] > 0


def test_recompute_crn_flag():
    r = _line(_cli('--config', 'tiny', '--batch_size', 2, '--iters', 1, '--warmup', 0, '--recompute_crn', 2, '--profile', 0))
    assert r['recompute_crn'] == 2 and 'profile' not in r


def test_generate_json_line():
    r = _line(_cli('--config', 'tiny', '--batch-size', 2, '--iters', 1, '--warmup', 0, '--mode', 'generate', '--impl', 'published'))
    assert r['mode'] == 'generate' and r['impl'] == 'published' and r['latency_s'] > 0 and r['imgs_per_s'] > 0


def _error(*args):
    "A bad flag: exit code 2, one line on stderr, nothing on stdout, no traceback."
    res = _cli(*args)
    assert res.returncode == 2 and res.stdout == '' and 'Traceback' not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ')
    return lines[0]


def test_flags_checked_once(capsys):
    "Two through the real command (exit code 2, one line, no traceback), the rest through the same parser in-process."
    assert _error('--config', 'tiny', '--batch_size', 0) == 'error: --batch_size 0 is out of range: use 1 or more'
    assert _error('--config', 'tiny', '--channels_last', 7) == 'error: --channels_last 7 is not one of 0, 1'
    from sg2im_nb.cli import run_cli
    from sg2im_nb.reference.bench import main
    def err(*argv):
        with pytest.raises(SystemExit) as e: run_cli(main, [str(a) for a in argv])
        out = capsys.readouterr()
        assert e.value.code == 2 and out.out == '' and out.err.count('\n') == 1
        return out.err.strip()
    assert err('--config', 'coco128', '--iters', 1) == "error: --config 'coco128' is not one of coco64, small64, tiny"
    assert '--iters 0 is out of range: use 1 or more' in err('--config', 'tiny', '--iters', 0)
    assert '--warmup -1 is out of range: use 0 or more' in err('--config', 'tiny', '--warmup', -1)
    assert '--fused_adam 3 is not one of 0, 1, 2' in err('--config', 'tiny', '--fused_adam', 3)
    assert '--recompute_crn 9 is out of range: use 0 to 3' in err('--config', 'tiny', '--iters', 1, '--recompute_crn', 9)
    assert 'float32 eager baseline' in err('--config', 'tiny', '--iters', 1, '--impl', 'published', '--recompute_crn', 1)
    assert '--cuda_graphs 1 needs a CUDA device' in err('--config', 'tiny', '--cuda_graphs', 1)


def test_amp_bf16_needs_native_bf16():
    "An explicit --amp bf16 on a CPU that would run it ten times slower stops with one line; where it is native, it runs."
    if native_amp('cpu')['bf16']:
        assert _line(_cli('--config', 'tiny', '--batch_size', 2, '--iters', 1, '--warmup', 0, '--amp', 'bf16', '--profile', 0))['amp_used'] == 'bf16'
    else:
        msg = _error('--config', 'tiny', '--iters', 1, '--amp', 'bf16')
        assert 'has no native bfloat16' in msg and 'use --amp auto' in msg
    # held to AVX2, every machine is such a CPU
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.reference.bench', '--config', 'tiny', '--amp', 'fp16'], capture_output=True,
                         text=True, timeout=300, cwd=REPO, env={**os.environ, 'ONEDNN_MAX_CPU_ISA': 'AVX2'})
    assert res.returncode == 2 and 'has no native float16' in res.stderr and 'Traceback' not in res.stderr


def test_vs_variants_and_static_shapes():
    "--static_shapes 1 times the padded step; --vs times variants in the same rounds, each with its ratio to ours."
    r = _line(_cli('--config', 'tiny', '--batch_size', 2, '--iters', 2, '--warmup', 0, '--amp', 'none', '--profile', 0,
                   '--static_shapes', 1, '--vs', 'static_shapes=0,fused_adam=1'))
    assert r['static_shapes'] is True and r['fused_adam'] == 2 and set(r['vs']) == {'static_shapes=0,fused_adam=1'}
    for v in r['vs'].values():
        assert len(v['rounds']) == len(v['ratio_rounds']) == 2 and v['ratio_min'] <= v['ratio'] <= v['ratio_max']
        assert v['sec_per_step'] > 0 and v['peak_mb'] > 0 and v['gflop_per_step'] == r['gflop_per_step']


def test_loop_mode_times_the_real_loop():
    "--mode loop runs sg2im-train itself (data loader included), plain and with --static_shapes 1 (--vs)."
    r = _line(_cli('--config', 'tiny', '--batch_size', 2, '--iters', 2, '--warmup', 1, '--amp', 'none', '--mode', 'loop',
                   '--workers', 1, '--vs', 'static_shapes=1'))
    assert (r['mode'], r['batch_size'], len(r['rounds']), r['workers'], r['static_shapes']) == ('loop', 2, 2, 1, False)
    v = r['vs']['static_shapes=1']
    assert v['static_shapes'] is True and v['sec_per_it'] > 0 and abs(v['ratio'] - v['sec_per_it'] / r['sec_per_it']) < 1e-9
    assert r['its_per_s'] > 0 and r['machine']['load_avg']
    assert 'error: --mode loop times our training loop' in _error('--config', 'tiny', '--mode', 'loop', '--compare')
