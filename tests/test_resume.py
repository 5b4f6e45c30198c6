"""Resume that repairs (issue 17): a torn metrics line, side files lost to a kill after the checkpoint rename, a lock
against a second trainer, and errors of loader workers as one short line. Tiny shapes runs on the CPU."""
import dataclasses, json, os, subprocess
from pathlib import Path
import pytest
import torch
from sg2im_nb.checkpoint import load_checkpoint
from sg2im_nb.data.shapes import make_shapes_dataset
from sg2im_nb.train.loop import train, main
from sg2im_nb.train.config import make_config

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning')


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    d = tmp_path_factory.mktemp('shapes')
    make_shapes_dataset(d, num_train=12, num_val=4, num_test=0, image_size=32, seed=0, num_workers=0)
    return d


def _cfg(shapes, out, **kw):
    return make_config('tiny', shapes_dir=str(shapes), output_dir=str(out), device='cpu', num_val_samples=4,
                       print_every=1, checkpoint_every=3, **kw)


def _records(out): return [json.loads(l) for l in (out / 'metrics.jsonl').read_text().splitlines()]


def test_torn_metrics_and_lost_side_files_are_repaired_bit_identically(shapes, tmp_path, capsys):
    "Kill after the rename of checkpoint_with_model.pt (side files gone), then a torn metrics line: resume repairs both."
    full = train(_cfg(shapes, tmp_path / 'full', num_iterations=6), progress=False)
    out = tmp_path / 'run'
    train(_cfg(shapes, out, num_iterations=3), progress=False)
    # what a kill right after the rename at t=3 leaves: no side files of t=3, no validation line of t=3
    for name in ('checkpoint_no_model.pt', 'checkpoint_train_samples.png', 'checkpoint_val_samples.png'): (out / name).unlink()
    os.utime(out / 'checkpoint_losses.png', ns=(1, 1))  # older than the checkpoint: behind
    kept = [r for r in _records(out) if r['kind'] != 'val']
    (out / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in kept) + '{"t": 4, "epoch": 2, "kind": "tr')  # disk full
    capsys.readouterr()
    ck = train(dataclasses.replace(_cfg(shapes, out, num_iterations=6), restore_from_checkpoint=True), progress=False)
    err = capsys.readouterr().err
    assert 'dropped 1 damaged line(s) of metrics.jsonl' in err and 'restored 1 validation line(s)' in err, err
    assert 'checkpoint_no_model.pt' in err and 'checkpoint_losses.png' in err
    recs = _records(out)
    assert [r['t'] for r in recs if r['kind'] == 'val'] == [3, 6]
    assert [r['t'] for r in recs if r['kind'] == 'train'] == list(range(1, 7))
    assert load_checkpoint(out / 'checkpoint_no_model.pt', generator=False)['counters']['t'] == 6
    for name in ('checkpoint_train_samples.png', 'checkpoint_val_samples.png'): assert (out / name).is_file()
    # the repair drew no random numbers: the resumed run is the uninterrupted one, bit for bit
    for key in ('model_state', 'd_obj_state', 'd_img_state'):
        assert all(torch.equal(a, b) for a, b in zip(ck[key].values(), full[key].values())), key
    assert recs[-1] == {**_records(tmp_path / 'full')[-1], 'epoch': recs[-1]['epoch']}


def test_second_trainer_is_refused_then_a_stale_lock_is_taken_over(shapes, tmp_path, capsys):
    "A live process holds the folder's lock: a trainer is refused with its PID and how to override; once it is dead, taken over."
    out = tmp_path / 'run'; out.mkdir()
    holder = subprocess.Popen(['sleep', '60'])
    lock = out / '.sg2im-train.lock'
    lock.write_text(json.dumps({'pid': holder.pid, 'host': os.uname().nodename}))
    flags = ['--preset', 'tiny', '--device', 'cpu', '--shapes_dir', str(shapes), '--output_dir', str(out), '--num_iterations', '2']
    try:
        capsys.readouterr()
        with pytest.raises(SystemExit) as e: main(flags)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and f'(PID {holder.pid} on ' in err and f'delete {lock}' in err, err
    finally:
        holder.kill(); holder.wait()
    ck = train(_cfg(shapes, out, num_iterations=2), progress=False)
    assert 'no longer runs (PID' in capsys.readouterr().err and ck['counters']['t'] == 2
    assert not lock.exists()


def test_bad_image_in_a_loader_worker_is_one_short_line(shapes, tmp_path, capsys):
    "A damaged image read by a DataLoader worker: one line naming the image, not the worker's flattened traceback."
    img = sorted((shapes / 'images' / 'train').glob('*.png'))[0]
    bad = tmp_path / 'train_images'; bad.mkdir()
    for p in (shapes / 'images' / 'train').glob('*.png'): (bad / p.name).write_bytes(p.read_bytes())
    (bad / img.name).write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(200))
    ann = shapes / 'annotations'
    argv = ['--preset', 'tiny', '--dataset', 'coco', '--device', 'cpu', '--output_dir', str(tmp_path / 'run'), '--loader_num_workers', '1',
            '--coco_train_image_dir', str(bad), '--coco_train_instances_json', str(ann / 'instances_train.json'),
            '--coco_train_stuff_json', str(ann / 'stuff_train.json'), '--coco_val_image_dir', str(shapes / 'images' / 'val'),
            '--coco_val_instances_json', str(ann / 'instances_val.json'), '--coco_val_stuff_json', str(ann / 'stuff_val.json'),
            '--min_objects_per_image', '1', '--num_iterations', '6']
    with pytest.raises(SystemExit) as e: main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    errors = [l for l in err.splitlines() if l.startswith('error:')]
    assert len(errors) == 1 and len(errors[0]) < 300, err[-3000:]
    assert f"cannot read image '{bad / img.name}'" in errors[0] and 'Traceback' not in errors[0]
