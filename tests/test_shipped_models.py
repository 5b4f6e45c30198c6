"The models shipped in data/models: small, safe to load, stripped, the default everywhere, and actually trained."
import os, subprocess, sys
from pathlib import Path
import torch
from sg2im_nb.checkpoint import load_checkpoint, build_model
from sg2im_nb.inference import default_checkpoint_path, shapes_vocab, untrained_shapes_model
from sg2im_nb.train.strip import KEEP
from sg2im_nb.train.run import vocab_mismatch

REPO = Path(__file__).resolve().parent.parent
SHAPES64 = REPO / 'data' / 'models' / 'shapes64.pt'
CARD = REPO / 'data' / 'models' / 'shapes64.md'


def test_shapes64_is_small_stripped_and_safe():
    assert SHAPES64.is_file(), 'data/models/shapes64.pt is missing'
    assert SHAPES64.stat().st_size <= 25 * 2**20
    ck = load_checkpoint(SHAPES64)  # weights_only with the allow-list
    assert set(ck) == set(KEEP)  # no discriminators, optimizers or histories
    model = build_model(ck)
    assert tuple(model.image_size) == (64, 64)
    assert not vocab_mismatch(model.vocab, shapes_vocab())


def test_shapes64_is_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv('SG2IM_CHECKPOINT', raising=False)
    assert default_checkpoint_path() == SHAPES64.resolve()
    env = {k: v for k, v in os.environ.items() if k != 'SG2IM_CHECKPOINT'}
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.inference', '--scene_graphs_json', 'scene_graphs/shapes_demo.json',
                          '--output_dir', tmp_path / 'out'], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert 'untrained' not in res.stdout + res.stderr
    assert (tmp_path / 'out' / 'img000000.png').is_file()


def test_shapes64_is_trained():
    "Drawn from the ground-truth layout of shapes test images, it is far closer to them than the untrained stand-in."
    from sg2im_nb.eval.evaluate import eval_dataset
    from sg2im_nb.data.common import collate_scene_graphs
    from sg2im_nb.data.shapes import make_shapes_dataset
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        make_shapes_dataset(Path(d) / 'shapes', num_train=1, num_val=0, num_test=8, image_size=64, seed=123, num_workers=0)
        ds = eval_dataset('shapes', (64, 64), 16, shapes_dir=Path(d) / 'shapes')
        b = collate_scene_graphs([ds[i] for i in range(len(ds))])
    errs = {}
    torch.manual_seed(0)
    for name, m in (('trained', build_model(SHAPES64)), ('untrained', untrained_shapes_model())):
        with torch.no_grad():
            out = m(b.objs, b.triples, b.obj_to_img, boxes_gt=b.boxes, masks_gt=b.masks, num_images=b.num_images)
        errs[name] = float((out.imgs - b.imgs).abs().mean())
    assert errs['trained'] < 0.6 * errs['untrained'], errs


def test_shapes64_card_gives_the_recipe():
    text = CARD.read_text()
    assert 'sg2im-train --preset shapes64' in text and 'iterations' in text
    import hashlib
    assert hashlib.sha256(SHAPES64.read_bytes()).hexdigest() in text
