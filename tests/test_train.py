"sg2im-train (sg2im_nb.train.loop*): a tiny CPU run with both checkpoints, SIGKILL + resume, strip, bf16, overfitting, bad input."
import dataclasses, json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from sg2im_nb.checkpoint import load_checkpoint, build_model, save_checkpoint
from sg2im_nb.cli import UserError
from sg2im_nb.data.shapes import make_shapes_dataset
from sg2im_nb.train.loop import train, main
from sg2im_nb.train.config import make_config
from sg2im_nb.train.step import build_nets, build_optims, train_step
from sg2im_nb.train.data import build_datasets
from sg2im_nb.data.common import collate_scene_graphs

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='session')
def shapes(tmp_path_factory):
    "16 train / 8 val shapes images at 32 px, made once per session."
    d = tmp_path_factory.mktemp('shapes')
    make_shapes_dataset(d, num_train=16, num_val=8, num_test=0, image_size=32, seed=0, num_workers=0)
    return d


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, '-m', 'sg2im_nb.train.loop', *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, **kw)


def _tiny(shapes, out, *extra):
    return ['--preset', 'tiny', '--device', 'cpu', '--shapes_dir', shapes, '--output_dir', out, *extra]


def test_run_kill_resume_strip(shapes, tmp_path):
    "20 iterations: SIGKILL after the first checkpoint, restart resumes from its t and finishes; strip; build_model."
    out = tmp_path / 'run'
    ck_path = out / 'checkpoint_with_model.pt'
    p = _cli(*_tiny(shapes, out, '--num_iterations', 20, '--checkpoint_every', 5))
    deadline = time.time() + 120
    while not ck_path.exists() and p.poll() is None and time.time() < deadline: time.sleep(0.02)
    assert ck_path.exists(), p.communicate()[1][-2000:]
    os.kill(p.pid, signal.SIGKILL); p.wait()
    saved = load_checkpoint(ck_path)  # always readable
    t0 = saved['counters']['t']
    assert t0 in (5, 10, 15, 20) and p.returncode == -signal.SIGKILL
    p = _cli(*_tiny(shapes, out, '--num_iterations', 20, '--checkpoint_every', 5, '--restore_from_checkpoint', 1))
    stdout, stderr = p.communicate(timeout=180)
    assert p.returncode == 0, stderr[-2000:]
    if t0 < 20: assert f'at t={t0}' in stdout
    ck = load_checkpoint(ck_path)
    assert ck['counters']['t'] == 20
    assert ck['losses_ts'] == [5, 10, 15, 20] and ck['checkpoint_ts'] == [5, 10, 15, 20]
    assert len(ck['losses']['total_loss']) == 4 and len(ck['d_losses']['d_img_gan_loss']) == 4
    assert {'model_state', 'optim_state', 'd_obj_state', 'd_img_optim_state', 'rng_state'} <= set(ck)
    small = torch.load(out / 'checkpoint_no_model.pt', weights_only=False)  # no model_state, so not for load_checkpoint
    assert 'model_state' not in small and small['counters']['t'] == 20
    for name in ('losses', 'train_samples', 'val_samples'): assert (out / f'checkpoint_{name}.png').stat().st_size > 0
    lines = [json.loads(l) for l in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [l['t'] for l in lines if l['kind'] == 'train'] == [5, 10, 15, 20]  # nothing duplicated by the restart
    assert not list(out.glob('.*'))  # no temporary files
    model = build_model(ck_path)
    assert model.image_size == (32, 32) and not model.training
    # the resumed run ends exactly where an uninterrupted one does (same batches, same noise, same updates)
    ref = train(make_config('tiny', device='cpu', shapes_dir=str(shapes), output_dir=str(tmp_path / 'ref'),
                            checkpoint_every=5), progress=False)
    assert all(torch.equal(v, ck['model_state'][k]) for k, v in ref['model_state'].items())
    assert all(torch.equal(v, ck['d_obj_state'][k]) for k, v in ref['d_obj_state'].items())
    # strip, as a process, with the published flags
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.train.strip', '--input_checkpoint', ck_path, '--output_checkpoint',
                          tmp_path / 'small.pt', '--keep_discriminators', '0'], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert sorted(load_checkpoint(tmp_path / 'small.pt')) == ['args', 'model_kwargs', 'model_state', 'vocab']
    build_model(tmp_path / 'small.pt')


def test_bf16_run(shapes, tmp_path):
    "--amp bf16 trains with finite losses where the CPU has native bf16; elsewhere it stops before any work, one line."
    from sg2im_nb.precision import native_amp
    flags = dict(device='cpu', amp='bf16', shapes_dir=str(shapes), output_dir=str(tmp_path), num_iterations=4, print_every=2,
                 checkpoint_every=4)
    if not native_amp('cpu')['bf16']:
        with pytest.raises(UserError, match='has no native bfloat16'): make_config('tiny', **flags)
        assert not (tmp_path / 'checkpoint_with_model.pt').exists()
        return
    ck = train(make_config('tiny', **flags), progress=False)
    assert ck['counters']['t'] == 4
    assert all(np.isfinite(v).all() for v in ck['losses'].values()) and np.isfinite(ck['val_losses']['total_loss']).all()


def test_amp_auto_is_the_default():
    from sg2im_nb.precision import native_amp, resolve_amp
    cfg = make_config('tiny', device='cpu')
    assert cfg.amp == 'auto' and resolve_amp(cfg.amp, 'cpu') == ('bf16' if native_amp('cpu')['bf16'] else 'none')


def test_recompute_crn_same_training(shapes, tmp_path):
    "--recompute_crn: the same losses and weights as without it, through the whole loop."
    cks = [train(make_config('tiny', device='cpu', shapes_dir=str(shapes), output_dir=str(tmp_path / str(k)), recompute_crn=k,
                             num_iterations=3, print_every=1, checkpoint_every=3), progress=False) for k in (0, 3)]
    assert cks[1]['args']['recompute_crn'] == 3
    for name, vals in cks[0]['losses'].items(): np.testing.assert_allclose(cks[1]['losses'][name], vals, rtol=1e-4, atol=1e-6)
    for k, v in cks[0]['model_state'].items():
        torch.testing.assert_close(cks[1]['model_state'][k].float(), v.float(), rtol=1e-4, atol=1e-5)


def test_overfit_one_batch(shapes):
    "In-process: a few dozen steps on one fixed batch bring the pixel loss down."
    cfg = make_config('tiny', shapes_dir=str(shapes))
    vocab, train_ds, _ = build_datasets(cfg)
    batch = collate_scene_graphs([train_ds[i] for i in range(4)])
    torch.manual_seed(0)
    nets, _ = build_nets(cfg, vocab)
    optims = build_optims(nets, 1e-3)
    hist = [train_step(nets, optims, batch, cfg) for _ in range(40)]
    first, last = np.mean([h['L1_pixel_loss'] for h in hist[:5]]), np.mean([h['L1_pixel_loss'] for h in hist[-5:]])
    assert last < 0.8 * first, (first, last)
    assert hist[-1]['total_loss'] < hist[0]['total_loss'] - 0.1


def _err(capsys, argv):
    with pytest.raises(SystemExit) as e: main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith('error: ') and err.count('\n') == 1, err
    return err


def test_bad_inputs(shapes, tmp_path, capsys):
    out = tmp_path / 'o'
    assert 'divisible by 8' in _err(capsys, _tiny(shapes, out, '--image_size', '36,36'))
    assert '0/1 switch' in _err(capsys, _tiny(shapes, out, '--shuffle_val', '2'))
    assert 'is not one of' in _err(capsys, _tiny(shapes, out, '--gan_loss_type', 'hinge'))
    assert 'not a folder' in _err(capsys, ['--dataset', 'coco', '--coco_train_image_dir', tmp_path / 'nope', '--output_dir', out])
    assert 'not found' in _err(capsys, _tiny(shapes, out, '--checkpoint_start_from', tmp_path / 'missing.pt'))
    assert not out.exists()  # no work done
    # a checkpoint made for another vocab
    cfg = make_config('tiny', shapes_dir=str(shapes), output_dir=str(tmp_path / 'r'), num_iterations=1, checkpoint_every=1)
    ck = train(cfg, progress=False)
    ck['vocab'] = {**ck['vocab'], 'object_idx_to_name': ['__image__', 'cat', 'dog'],
                   'object_name_to_idx': {'__image__': 0, 'cat': 1, 'dog': 2}}  # consistent, but not the dataset's
    save_checkpoint(ck, tmp_path / 'other.pt')
    assert 'another vocab' in _err(capsys, _tiny(shapes, out, '--checkpoint_start_from', tmp_path / 'other.pt'))


def test_bad_input_process_level(tmp_path):
    "As a process: exit code 2, one line on stderr naming the flag, the value and the valid range, no traceback."
    cases = [(['--image_size', '60,60'], 'divisible by 8'),
             (['--crop_size', '8'], '--crop_size 8 is out of range: use 10 to 32'),
             (['--crop_size', '100000'], '--crop_size 100000 is out of range: use 10 to 32'),
             (['--image_size', '8'], '--image_size 8,8 is out of range: use sides from 16 to 1024'),
             (['--batch_size', '0'], '--batch_size 0 is out of range: use 1 or more')]
    procs = [_cli('--preset', 'tiny', *argv, '--output_dir', tmp_path) for argv, _ in cases]
    for p, (argv, words) in zip(procs, cases):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2 and err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err, err
        assert words in err, (argv, err)
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_third_discriminator_is_one_class_and_one_registration(shapes, tmp_path):
    "A toy patch discriminator on the image at half size, registered: sg2im-train trains it, saves it and resumes it."
    from torch import nn
    from sg2im_nb.train.adversarial import DiscriminatorSpec, register_discriminator, unregister_discriminator

    class HalfSizePatches(DiscriminatorSpec):
        name = 'd_half'
        def kwargs(self, cfg, vocab): return {'width': 8} if self.weight(cfg) else {}
        def build(self, kw): return nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(3, kw['width'], 3), nn.LeakyReLU(0.2), nn.Conv2d(kw['width'], 1, 1))

    register_discriminator(HalfSizePatches())
    try:
        cfg = make_config('tiny', device='cpu', shapes_dir=str(shapes), output_dir=str(tmp_path), num_iterations=2,
                          checkpoint_every=2, print_every=1, num_val_samples=4)
        ck = train(cfg, progress=False)
        assert ck['d_half_kwargs'] == {'width': 8} and ck['d_half_state']['1.weight'].shape == (8, 3, 3, 3)
        assert ck['d_half_optim_state']['state'] and ck['d_obj_state'] and ck['d_img_state']  # the published pair as before
        assert len(ck['losses']['g_gan_half_loss']) == len(ck['d_losses']['d_half_gan_loss']) == 2
        assert np.isfinite(ck['d_losses']['d_half_gan_loss']).all()
        ck = train(dataclasses.replace(cfg, num_iterations=3, restore_from_checkpoint=True), progress=False)
        assert ck['counters']['t'] == 3 and len(ck['d_losses']['d_half_gan_loss']) == 3
        assert build_model(tmp_path / 'checkpoint_with_model.pt').image_size == (32, 32)
    finally: unregister_discriminator('d_half')
