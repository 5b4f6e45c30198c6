"sg2im-evaluate and sg2im-sample-images end to end on a tiny shapes split; the shipped shapes classifier."
import json, subprocess, sys
from pathlib import Path
import pytest
import torch
from sg2im_nb.checkpoint import save_checkpoint, safe_load
from sg2im_nb.eval.classifier import default_classifier_path, load_classifier, dataset_crops, crops_of, crop_accuracy
from sg2im_nb.data.coco import CocoSceneGraphDataset
from sg2im_nb.model.generator import Sg2ImModel
from sg2im_nb.data.shapes import make_shapes_dataset

ROOT = Path(__file__).resolve().parent.parent
KEYS = ('object_accuracy', 'recall_at_0.3', 'recall_at_0.5', 'relation_satisfaction', 'inception_score', 'fid', 'num_samples')


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    "A tiny shapes world (the layout sg2im-train caches) and a tiny untrained checkpoint on its vocab."
    d = tmp_path_factory.mktemp('eval')
    make_shapes_dataset(d / 'shapes', num_train=1, num_val=1, num_test=8, image_size=64, seed=0, num_workers=0)
    ds = CocoSceneGraphDataset(d / 'shapes/images/test', d / 'shapes/annotations/instances_test.json',
                               d / 'shapes/annotations/stuff_test.json', image_size=(32, 32), mask_size=8)
    torch.manual_seed(0)
    model = Sg2ImModel(ds.vocab, image_size=(32, 32), embedding_dim=16, gconv_dim=16, gconv_hidden_dim=32, gconv_num_layers=2,
                       refinement_dims=(32, 16, 8), mask_size=8, layout_noise_dim=4)
    ck = save_checkpoint({'model_kwargs': model.model_kwargs, 'model_state': model.state_dict()}, d / 'tiny.pt')
    return d, ck


def run(*args, module='sg2im_nb.eval.evaluate'):
    cmd = [sys.executable, '-m', module, *map(str, args)] if module else [sys.executable, '-c', *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize('layout', ['pred', 'real'])
def test_evaluate_cli(world, layout):
    d, ck = world
    out = d / f'out_{layout}'
    r = run('--checkpoint', ck, '--dataset', 'shapes', '--shapes_dir', d / 'shapes', '--num_samples', 6, '--layout', layout,
            '--device', 'cpu', '--output_dir', out)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    res = json.loads(lines[0])
    assert all(k in res for k in KEYS)
    assert res['num_samples'] == 6
    assert 0 <= res['object_accuracy'] <= 1 and 0 <= res['relation_satisfaction'] <= 1
    assert res['inception_score'] >= 1 - 1e-6 and res['fid'] >= 0
    if layout == 'real':
        assert res['recall_at_0.3'] is None and res['object_accuracy'] > 0.8
    else:
        assert 0 <= res['recall_at_0.5'] <= res['recall_at_0.3'] <= 1
    table = (out / 'results.md').read_text()
    assert '| Method |' in table and 'R@0.3' in table and 'FID' in table
    assert (out / 'samples.png').stat().st_size > 0 and (out / 'results.json').is_file()


def test_sample_images_cli(world):
    d, ck = world
    out = d / 'samples'
    code = 'import sys; from sg2im_nb.eval.evaluate import sample_images_main; sample_images_main(sys.argv[1:])'
    r = run(code, '--checkpoint', ck, '--shapes_dir', d / 'shapes', '--num_samples', 3, '--device', 'cpu', '--output_dir', out, module=None)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / 'generated').iterdir()) == ['000000.png', '000001.png', '000002.png']
    assert len(list((out / 'real').iterdir())) == 3


BAD = [(['--checkpoint', 'no/such/model.pt'], 'checkpoint not found'),
       (['--dataset', 'imagenet'], "--dataset 'imagenet' is not one of"),
       (['--layout', 'sideways'], 'is not one of gt, pred, real'),
       (['--features', 'inception', '--real', '1'], 'needs torchvision'),
       (['--dataset', 'coco', '--checkpoint', 'TINY', '--coco_image_dir', 'no/such/dir'], '--coco_image_dir')]


@pytest.mark.parametrize('args,msg', BAD[:2])
def test_bad_input_cli(world, args, msg):
    "The console script: exit 2, one line on stderr, no traceback, nothing on stdout."
    d, ck = world
    r = run(*args, '--shapes_dir', d / 'shapes', '--device', 'cpu', '--output_dir', d / 'bad')
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and msg in err[0], r.stderr
    assert 'Traceback' not in r.stderr and r.stdout == ''


def test_missing_env_checkpoint(world, monkeypatch, capsys):
    "$SG2IM_CHECKPOINT naming a missing file is an error, as in sg2im-run-model, not a silent untrained stand-in."
    from sg2im_nb.cli import run_cli
    from sg2im_nb.eval.evaluate import main
    d, _ = world
    monkeypatch.setenv('SG2IM_CHECKPOINT', str(d / 'gone.pt'))
    with pytest.raises(SystemExit) as e:
        run_cli(main.__wrapped__, ['--shapes_dir', str(d / 'shapes'), '--device', 'cpu', '--output_dir', str(d / 'bad')])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'checkpoint not found' in err[0] and 'gone.pt' in err[0], err


@pytest.mark.parametrize('args,msg', BAD[2:])
def test_bad_input(world, args, msg, capsys):
    "The same parser and error path in-process (cheaper than a subprocess each)."
    from sg2im_nb.cli import run_cli
    from sg2im_nb.eval.evaluate import main
    d, ck = world
    args = [str(ck) if a == 'TINY' else a for a in args]
    with pytest.raises(SystemExit) as e:
        run_cli(main.__wrapped__, [*args, '--shapes_dir', str(d / 'shapes'), '--device', 'cpu', '--output_dir', str(d / 'bad')])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and msg in err[0]


def test_shipped_classifier(tmp_path):
    path = default_classifier_path()
    assert path.stat().st_size < 2_000_000
    ck = torch.load(path, map_location='cpu', weights_only=True)  # plain tensors, dicts, lists, str, numbers only
    assert {'kwargs', 'state', 'vocab', 'val_accuracy'} <= set(ck) and ck['val_accuracy'] >= 0.98
    assert safe_load(path)['vocab'] == ck['vocab']
    clf = load_classifier()
    # fresh real crops: a seed no classifier or evaluation run has used
    make_shapes_dataset(tmp_path / 's', num_train=0, num_val=60, num_test=0, image_size=128, seed=11, num_workers=0)
    ds = CocoSceneGraphDataset(tmp_path / 's/images/val', tmp_path / 's/annotations/instances_val.json',
                               tmp_path / 's/annotations/stuff_val.json', image_size=(64, 64))
    x, y = crops_of(dataset_crops(ds, clf.names))
    assert len(y) >= 200
    assert crop_accuracy(clf, x, y) >= 0.98


def test_diversity_cli(world):
    "sg2im-evaluate prints the diversity of K draws per graph in its JSON line and writes it into the table (issue 24)."
    d, ck = world
    for layout in ('real', 'pred'):
        out = d / f'div_{layout}'
        r = run('--checkpoint', ck, '--shapes_dir', d / 'shapes', '--num_samples', 4, '--layout', layout, '--device', 'cpu',
                '--diversity_seeds', 3, '--output_dir', out)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res['diversity_seeds'] == 3 and res['diversity_l1'] > 0 and 0 < res['diversity_feature'] <= 2
        table = (out / 'results.md').read_text()
        assert 'Div. L1' in table and 'Div. feat.' in table and f"{res['diversity_l1']:.2f}" in table


def test_diversity_off_and_bad(world, capsys):
    "--diversity_seeds 0 turns the measure off; 1 is refused with one line (nothing to pair)."
    from sg2im_nb.cli import run_cli
    from sg2im_nb.eval.evaluate import main
    d, ck = world
    common = ['--checkpoint', str(ck), '--shapes_dir', str(d / 'shapes'), '--num_samples', '2', '--device', 'cpu']
    run_cli(main.__wrapped__, [*common, '--diversity_seeds', '0', '--output_dir', str(d / 'div_off')])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not any(k.startswith('diversity') for k in res)
    assert 'Div. L1' not in (d / 'div_off' / 'results.md').read_text()
    with pytest.raises(SystemExit) as e:
        run_cli(main.__wrapped__, [*common, '--diversity_seeds', '1', '--output_dir', str(d / 'bad')])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--diversity_seeds must be 0 (off) or 2..1000' in err[0]
