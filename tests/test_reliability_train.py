"""A training run is never destroyed by accident (issue 23, items 1, 2, 3, 4, 7 and 13), on the tiny preset:

1. a folder that holds a run is refused without --restore_from_checkpoint 1 (or --overwrite 1), nothing touched;
2. a run whose weights or losses stop being finite stops with one line, and no checkpoint with NaN/Inf is written;
3. flags changed on resume: those that would make the checkpoint describe another model are refused, the others are
   applied (the learning rate reaches the restored optimizers) and recorded in the checkpoint's `args`;
4. SIGTERM and Ctrl-C save a checkpoint of the current iteration, print one line, release the lock and exit with
   143 and 130; the saved run resumes bit for bit;
7. a stale lock is taken over by exactly one of several trainers racing for it; a lock naming a 20-digit PID is one line;
13. `sg2im-strip-checkpoint --input_dir` reads a training folder as sg2im-train leaves it.

`python tests/test_reliability_train.py` prints the table of what a user sees (exit code, stderr lines, first line)."""
import contextlib, io, json, multiprocessing, os, re, signal, socket, subprocess, sys, time, traceback
from pathlib import Path
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning', 'ignore::UserWarning')


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return _make_shapes(tmp_path_factory.mktemp('shapes'))


def _make_shapes(d):
    from sg2im_nb.data.shapes import make_shapes_dataset
    make_shapes_dataset(d, num_train=8, num_val=4, num_test=0, image_size=32, seed=0, num_workers=0, progress=False)
    return d


def _tiny(shapes, out, *extra):
    return ['--preset', 'tiny', '--device', 'cpu', '--shapes_dir', str(shapes), '--output_dir', str(out), '--num_val_samples', '4',
            *map(str, extra)]


def _lines(err:str) -> list:
    "What the user reads on stderr: its lines without progress bars."
    return [l for l in err.replace('\r', '\n').splitlines() if l.strip() and not re.search(r'\|\s*\d+/\d+ \[', l)]


def _train(argv) -> tuple:
    "(exit code, stderr lines, stdout) of `sg2im-train argv`, run in this process as its entry point."
    from sg2im_nb.train.loop import main
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try: main([str(a) for a in argv]); code = 0
        except SystemExit as e: code = e.code if isinstance(e.code, int) else 1
        except BaseException: traceback.print_exc(); code = 1
    return code, _lines(err.getvalue()), out.getvalue()


def _one_error(code, lines) -> str:
    assert code == 2 and not any(l.startswith('Traceback') for l in lines), (code, lines[-20:])
    errors = [l for l in lines if l.startswith('error: ')]
    assert len(errors) == 1 and lines[-1] == errors[0], lines[-20:]
    return errors[0]


def _ck(out): return torch.load(out / 'checkpoint_with_model.pt', weights_only=False)


def _finite(ck) -> bool:
    return all(v.isfinite().all() for k in ck if k.endswith('_state') and k != 'rng_state' and isinstance(ck[k], dict)
               for v in ck[k].values() if isinstance(v, torch.Tensor) and v.is_floating_point())


# ---------------------------------------------------------------------------------------------------------------
# 1. a folder holding a run

def test_existing_run_is_refused_not_replaced(shapes, tmp_path):
    out = tmp_path / 'run'
    assert _train(_tiny(shapes, out, '--num_iterations', 3, '--checkpoint_every', 3, '--print_every', 1))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, lines, _ = _train(_tiny(shapes, out, '--num_iterations', 1, '--checkpoint_every', 1))
    msg = _one_error(code, lines)
    assert 'holds a training run' in msg and '--restore_from_checkpoint 1' in msg and '--overwrite 1' in msg, msg
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched, no lock left
    # the explicit overwrite starts again
    code, lines, _ = _train(_tiny(shapes, out, '--num_iterations', 1, '--checkpoint_every', 1, '--overwrite', 1))
    assert code == 0, lines[-10:]
    assert _ck(out)['counters']['t'] == 1
    assert [json.loads(l)['t'] for l in (out / 'metrics.jsonl').read_text().splitlines()] == [1]


# ---------------------------------------------------------------------------------------------------------------
# 2. diverged weights are never saved

def test_diverged_weights_stop_the_run_in_one_line(shapes, tmp_path):
    "The default mask loss at --learning_rate 1e10: the weights are NaN after t=1; one line, no checkpoint with NaN."
    out = tmp_path / 'run'
    code, lines, _ = _train(_tiny(shapes, out, '--learning_rate', '1e10', '--num_iterations', 6, '--checkpoint_every', 3))
    msg = _one_error(code, lines)
    assert 'diverged at t=2' in msg and '--learning_rate' in msg, msg
    assert not (out / 'checkpoint_with_model.pt').exists() or _finite(_ck(out))
    assert not (out / '.sg2im-train.lock').exists()


def test_a_diverging_resume_keeps_the_last_finite_checkpoint(shapes, tmp_path):
    "No mask loss, resumed from a finite checkpoint at t=2 with --learning_rate 1e10: the checkpoint of t=2 stays."
    out = tmp_path / 'run'
    assert _train(_tiny(shapes, out, '--num_iterations', 2, '--checkpoint_every', 2, '--mask_loss_weight', 0))[0] == 0
    code, lines, _ = _train(_tiny(shapes, out, '--num_iterations', 6, '--checkpoint_every', 1, '--mask_loss_weight', 0,
                                  '--learning_rate', '1e10', '--restore_from_checkpoint', 1))
    msg = _one_error(code, lines)
    assert 'diverged' in msg and 't=2' in msg, msg
    ck = _ck(out)
    assert ck['counters']['t'] == 2 and _finite(ck)


def test_many_skipped_steps_in_a_row_stop_the_run(shapes, tmp_path):
    "A loss that is always infinite (a weight beyond float32) skips every step; the run stops after a few, one line."
    out = tmp_path / 'run'
    code, lines, _ = _train(_tiny(shapes, out, '--l1_pixel_loss_weight', '1e300', '--max_nonfinite_steps', 3,
                                  '--num_iterations', 8, '--checkpoint_every', 8))
    msg = _one_error(code, lines)
    assert '3 iterations in a row' in msg and 't=3' in msg, msg
    assert not (out / 'checkpoint_with_model.pt').exists()


# ---------------------------------------------------------------------------------------------------------------
# 3. flags changed on resume

def test_flags_changed_on_resume(shapes, tmp_path):
    out = tmp_path / 'run'
    assert _train(_tiny(shapes, out, '--num_iterations', 2, '--checkpoint_every', 2))[0] == 0
    saved = (out / 'checkpoint_with_model.pt').read_bytes()
    resume = lambda *extra: _train(_tiny(shapes, out, '--num_iterations', 3, '--checkpoint_every', 3, '--restore_from_checkpoint', 1, *extra))
    msg = _one_error(*resume('--image_size', '64,64', '--embedding_dim', 8)[:2])
    assert '--image_size 64,64 (it has 32,32)' in msg and '--embedding_dim 8 (it has 16)' in msg, msg
    assert '--batch_size 2' in _one_error(*resume('--batch_size', 2)[:2])
    assert 'd_img' in _one_error(*resume('--d_img_weight', 0)[:2])
    assert (out / 'checkpoint_with_model.pt').read_bytes() == saved  # refused before any work
    # applied: the learning rate reaches the restored optimizers, and the checkpoint records what was used
    code, lines, _ = resume('--learning_rate', '0.001', '--mask_loss_weight', 0)
    assert code == 0, lines[-10:]
    notes = [l for l in lines if l.startswith('note: ')]
    assert any('--learning_rate' in l and '--mask_loss_weight' in l for l in notes), lines
    ck = _ck(out)
    assert ck['counters']['t'] == 3 and ck['args']['learning_rate'] == 0.001 and ck['args']['mask_loss_weight'] == 0
    for key in ('optim_state', 'd_obj_optim_state', 'd_img_optim_state'): assert ck[key]['param_groups'][0]['lr'] == 0.001, key
    assert 'mask_loss' not in {k for k, v in ck['losses'].items() if len(v) == len(ck['losses_ts'])}


# ---------------------------------------------------------------------------------------------------------------
# 4. SIGTERM and Ctrl-C

def _start(shapes, out, *extra):
    return subprocess.Popen([sys.executable, '-m', 'sg2im_nb.train.loop', *_tiny(shapes, out, '--print_every', 1, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})


def _wait_for_steps(p, out, n:int, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        m = out / 'metrics.jsonl'
        if m.is_file() and sum(1 for _ in m.read_text().splitlines()) >= n: return
        time.sleep(0.05)
    raise AssertionError(p.communicate()[1][-3000:])


def test_sigterm_and_ctrl_c_save_the_current_iteration(shapes, tmp_path):
    runs = {sig: (tmp_path / sig.name, None) for sig in (signal.SIGTERM, signal.SIGINT)}
    runs = {sig: (out, _start(shapes, out, '--num_iterations', 1000, '--checkpoint_every', 1000)) for sig, (out, _) in runs.items()}
    for sig, (out, p) in runs.items():
        _wait_for_steps(p, out, 3)
        p.send_signal(sig)
    for sig, (out, p) in runs.items():
        _, err = p.communicate(timeout=120)
        lines = _lines(err)
        assert p.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig], (sig, p.returncode, err[-3000:])
        assert len(lines) == 1 and sig.name in lines[0] and 'Traceback' not in err, err[-3000:]
        t = _ck(out)['counters']['t']
        assert t >= 3 and f't={t}' in lines[0] and '--restore_from_checkpoint 1' in lines[0], lines
        assert not (out / '.sg2im-train.lock').exists() and not list(out.glob('.*.tmp'))
    # the saved iteration resumes exactly: stopped + resumed equals straight
    out = runs[signal.SIGTERM][0]
    t = _ck(out)['counters']['t']
    both = [_start(shapes, out, '--num_iterations', t + 2, '--checkpoint_every', 1000, '--restore_from_checkpoint', 1),
            _start(shapes, tmp_path / 'straight', '--num_iterations', t + 2, '--checkpoint_every', 1000)]
    for p in both:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    resumed, straight = _ck(out), _ck(tmp_path / 'straight')
    assert resumed['counters']['t'] == straight['counters']['t'] == t + 2
    for key in ('model_state', 'd_obj_state', 'd_img_state'):
        assert all(torch.equal(v, straight[key][k]) for k, v in resumed[key].items()), key


# ---------------------------------------------------------------------------------------------------------------
# 7. the lock

def _race(lock_dir, barrier, held, i):
    "Take the training lock of `lock_dir` once, at the barrier; while holding it, note so in `held`."
    from sg2im_nb.cli import UserError
    from sg2im_nb.train.run import train_lock
    sys.stderr = open(os.devnull, 'w')
    barrier.wait()
    try:
        with train_lock(lock_dir):
            held.append(('in', i, time.time())); time.sleep(0.2); held.append(('out', i, time.time()))
    except UserError: pass


def _most_at_once(events) -> int:
    now = most = 0
    for kind, _, _ in sorted(events, key=lambda e: (e[2], e[0] == 'in')):
        now += 1 if kind == 'in' else -1
        most = max(most, now)
    return most


def test_a_stale_lock_is_taken_over_by_one_trainer_only(tmp_path):
    "Eight rounds of four processes racing for a lock left by a dead trainer: never two holders at once."
    ctx = multiprocessing.get_context('fork')
    dead = subprocess.Popen(['true']); dead.wait()
    worst = 0
    with ctx.Manager() as manager:
        for r in range(8):
            d = tmp_path / f'round{r}'; d.mkdir()
            (d / '.sg2im-train.lock').write_text(json.dumps({'pid': dead.pid, 'host': socket.gethostname()}))
            barrier, held = ctx.Barrier(4), manager.list()
            procs = [ctx.Process(target=_race, args=(d, barrier, held, i)) for i in range(4)]
            for p in procs: p.start()
            for p in procs: p.join(60)
            assert any(e[0] == 'in' for e in held), r
            worst = max(worst, _most_at_once(list(held)))
    assert worst == 1, f'{worst} trainers held the lock at once'


def test_a_lock_naming_a_20_digit_pid_is_one_line(shapes, tmp_path):
    out = tmp_path / 'run'; out.mkdir()
    (out / '.sg2im-train.lock').write_text(json.dumps({'pid': 10**19 + 7, 'host': socket.gethostname()}))
    code, lines, _ = _train(_tiny(shapes, out, '--num_iterations', 1, '--checkpoint_every', 1))
    assert code == 0 and not any(l.startswith('Traceback') for l in lines), lines[-20:]
    assert len(lines) == 1 and lines[0].startswith('note: ') and str(10**19 + 7) in lines[0], lines
    assert not (out / '.sg2im-train.lock').exists()


# ---------------------------------------------------------------------------------------------------------------
# 13. strip a training folder

def test_strip_reads_a_training_folder(shapes, tmp_path, capsys):
    out = tmp_path / 'run'
    assert _train(_tiny(shapes, out, '--num_iterations', 1, '--checkpoint_every', 1))[0] == 0
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.train.strip', '--input_dir', out, '--output_dir', tmp_path / 'small'],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and 'Traceback' not in res.stderr, res.stderr
    assert 'checkpoint_no_model.pt' in res.stderr  # skipped, and said so
    from sg2im_nb.checkpoint import build_model
    assert sorted(p.name for p in (tmp_path / 'small').iterdir()) == ['checkpoint_with_model.pt']
    assert build_model(tmp_path / 'small' / 'checkpoint_with_model.pt').image_size == (32, 32)


# ---------------------------------------------------------------------------------------------------------------
# The table for the closing note: what the user sees in each case.

def _table_row(name, code, lines, saw):
    first = next((l for l in lines if l.startswith(('error:', 'Traceback'))), lines[-1] if lines else '')
    if first.startswith('Traceback'): first = 'Traceback ... ' + lines[-1]
    print(f'| {name} | {code} | {len(lines)} | {first[:140]} | {saw} |', flush=True)


if __name__ == '__main__':
    import tempfile
    tmp = Path(tempfile.mkdtemp(prefix='reliability-train-'))
    sh = _make_shapes(tmp / 'shapes')
    print('| case | exit | stderr lines | first error line | what the user saw |\n|---|---:|---:|---|---|')
    out = tmp / 'existing'
    _train(_tiny(sh, out, '--num_iterations', 3, '--checkpoint_every', 3, '--print_every', 1))
    code, lines, _ = _train(_tiny(sh, out, '--num_iterations', 1, '--checkpoint_every', 1))
    n = len((out / 'metrics.jsonl').read_text().splitlines())
    _table_row('1 start again in a run folder', code, lines, f"checkpoint t={_ck(out)['counters']['t']} (was 3), {n} metrics lines (were 4)")
    out = tmp / 'bce'
    code, lines, _ = _train(_tiny(sh, out, '--learning_rate', '1e10', '--num_iterations', 6, '--checkpoint_every', 3))
    have = (out / 'checkpoint_with_model.pt').exists()
    _table_row('2 lr 1e10, default mask loss', code, lines, f'checkpoint: {"finite" if have and _finite(_ck(out)) else "NaN/Inf" if have else "none"}')
    out = tmp / 'nomask'
    code, lines, _ = _train(_tiny(sh, out, '--learning_rate', '1e10', '--mask_loss_weight', 0, '--num_iterations', 6, '--checkpoint_every', 3))
    have = (out / 'checkpoint_with_model.pt').exists()
    _table_row('2 lr 1e10, no mask loss', code, lines, f'checkpoint: {"finite" if have and _finite(_ck(out)) else "NaN/Inf" if have else "none"}')
    out = tmp / 'inf'
    code, lines, said = _train(_tiny(sh, out, '--l1_pixel_loss_weight', '1e300', '--num_iterations', 30, '--checkpoint_every', 30))
    _table_row('2 always-infinite loss, 30 iterations', code, lines, f'{said.count("non-finite")} skipped-step warnings')
    out = tmp / 'resume'
    _train(_tiny(sh, out, '--num_iterations', 2, '--checkpoint_every', 2))
    for name, extra in (('3 resume --image_size 64,64', ['--image_size', '64,64']), ('3 resume --batch_size 2', ['--batch_size', 2]),
                        ('3 resume --learning_rate 0.001', ['--learning_rate', '0.001'])):
        code, lines, _ = _train(_tiny(sh, out, '--num_iterations', 3, '--checkpoint_every', 3, '--restore_from_checkpoint', 1, *extra))
        ck = _ck(out)
        _table_row(name, code, lines, f"trained to t={ck['counters']['t']}; args image_size {ck['args']['image_size']}, lr "
                   f"{ck['args']['learning_rate']}; optimizer lr {ck['optim_state']['param_groups'][0]['lr']}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        out = tmp / sig.name
        p = _start(sh, out, '--num_iterations', 1000, '--checkpoint_every', 1000)
        _wait_for_steps(p, out, 3); p.send_signal(sig)
        _, err = p.communicate()
        lines = _lines(err)
        have = (out / 'checkpoint_with_model.pt').exists()
        _table_row(f'4 {sig.name}', p.returncode, lines, f"checkpoint: {'t=%d' % _ck(out)['counters']['t'] if have else 'none'}; "
                   f"lock left: {(out / '.sg2im-train.lock').exists()}")
    out = tmp / 'pid'; out.mkdir()
    (out / '.sg2im-train.lock').write_text(json.dumps({'pid': 10**19 + 7, 'host': socket.gethostname()}))
    code, lines, _ = _train(_tiny(sh, out, '--num_iterations', 1, '--checkpoint_every', 1))
    _table_row('7 lock with a 20-digit PID', code, lines, 'trained' if (out / 'checkpoint_with_model.pt').exists() else 'nothing trained')
    r = subprocess.run([sys.executable, '-m', 'sg2im_nb.train.strip', '--input_dir', tmp / 'resume', '--output_dir', tmp / 'small'],
                       capture_output=True, text=True, cwd=REPO)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    _table_row('13 strip --input_dir <training folder>', r.returncode, lines, ', '.join(sorted(p.name for p in (tmp / 'small').glob('*.pt'))) or 'nothing written')
