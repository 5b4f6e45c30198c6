"Multi-process training: torchrun with 2 CPU processes (gloo) keeps every rank's parameters identical; 1 process resumes."
import json, os, subprocess, sys
from pathlib import Path
from sg2im_nb.checkpoint import load_checkpoint
from sg2im_nb.data.shapes import make_shapes_dataset

REPO = Path(__file__).resolve().parent.parent


def test_ddp_gloo_two_processes(tmp_path):
    shapes = tmp_path / 'shapes'
    make_shapes_dataset(shapes, num_train=16, num_val=8, num_test=0, image_size=32, seed=0, num_workers=0)
    out, dbg = tmp_path / 'run', tmp_path / 'dbg'
    flags = ['--preset', 'tiny', '--device', 'cpu', '--shapes_dir', str(shapes), '--output_dir', str(out),
             '--print_every', '2', '--checkpoint_every', '3']
    env = {**os.environ, 'SG2IM_TRAIN_DEBUG_DIR': str(dbg), 'OMP_NUM_THREADS': '1'}
    res = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          '-m', 'sg2im_nb.train.loop', *flags, '--num_iterations', '6'],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (json.loads((dbg / f'params_rank{r}.json').read_text()) for r in (0, 1))
    assert r0['world'] == r1['world'] == 2 and r0['t'] == r1['t'] == 6
    for net in ('model', 'd_obj', 'd_img'): assert r0[net]['sha256'] == r1[net]['sha256'], net
    ck = load_checkpoint(out / 'checkpoint_with_model.pt')
    assert ck['counters']['t'] == 6 and ck['checkpoint_ts'] == [3, 6]
    # the checkpoint resumes on one process
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.train.loop', *flags, '--num_iterations', '8', '--restore_from_checkpoint', '1'],
                         capture_output=True, text=True, cwd=REPO, env={**env, 'SG2IM_TRAIN_DEBUG_DIR': str(tmp_path / 'dbg1')}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'at t=6' in res.stdout
    assert load_checkpoint(out / 'checkpoint_with_model.pt')['counters']['t'] == 8
