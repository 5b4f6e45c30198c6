"End-to-end tests of the synthetic shapes dataset (sg2im_nb.data.shapes): CLI, determinism, COCO and VG files."
import contextlib, io, json, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools import mask as mask_utils
from sg2im_nb.data.shapes import make_shapes_dataset, THINGS, THING_COLORS, STUFF_IDS, OTHER_ID, PREDICATES

pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning')  # pycocotools under numpy 2

ARGS = dict(num_train=6, num_val=2, num_test=2, image_size=64, seed=3)


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'sg2im_nb.data.shapes', *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope='module')
def flag():
    "Flag spelling of the installed fastcore (`--output_dir`, or `--output-dir` where fastcore turns _ into -)."
    underscores = '--output_dir' in _cli('--help').stdout
    return lambda name: '--' + (name if underscores else name.replace('_', '-'))


@pytest.fixture(scope='module')
def data(tmp_path_factory, flag):
    out = tmp_path_factory.mktemp('shapes') / 'ds'
    res = _cli(flag('output_dir'), out, *[x for k, v in ARGS.items() for x in (flag(k), v)])
    assert res.returncode == 0, res.stderr
    return out


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob('*')) if p.is_file()}


def _coco(path):
    with contextlib.redirect_stdout(io.StringIO()): return COCO(str(path))


def test_layout(data):
    for s in ('train', 'val', 'test'):
        assert (data / 'annotations' / f'instances_{s}.json').is_file() and (data / 'annotations' / f'stuff_{s}.json').is_file()
    for f in ('image_data.json', 'objects.json', 'attributes.json', 'relationships.json', 'object_alias.txt',
              'relationship_alias.txt', 'splits.json'):
        assert (data / 'vg' / f).is_file(), f
    assert len(list((data / 'images' / 'train').glob('*.png'))) == 6 and (data / 'README.txt').is_file()
    im = Image.open(data / 'images' / 'val' / '7.png')
    assert im.size == (64, 64) and im.mode == 'RGB'


def test_deterministic_and_independent_of_workers(data, tmp_path):
    # the CLI run above (default workers) and an in-process run give the same bytes
    same = make_shapes_dataset(tmp_path / 'a', **ARGS, num_workers=0, progress=False)
    assert _files(same) == _files(data)
    # more than one chunk of work, in one process vs. in two worker processes
    big = dict(num_train=110, num_val=5, num_test=5, image_size=32, seed=1)
    a = _files(make_shapes_dataset(tmp_path / 'b', **big, num_workers=0, progress=False))
    b = _files(make_shapes_dataset(tmp_path / 'c', **big, num_workers=2, progress=False))
    assert a == b and len(a) == 120 + 14
    c = _files(make_shapes_dataset(tmp_path / 'd', **{**big, 'seed': 2}, num_workers=0, progress=False))
    assert c['images/train/1.png'] != a['images/train/1.png']


def test_coco_masks_match_pixels(data):
    family = np.array([THING_COLORS[n][1] for n in THINGS], np.float32)
    hits = total = 0
    for s in ('train', 'val', 'test'):
        things, stuff = _coco(data / 'annotations' / f'instances_{s}.json'), _coco(data / 'annotations' / f'stuff_{s}.json')
        assert [c['name'] for c in things.loadCats(things.getCatIds())] == THINGS
        assert set(stuff.getCatIds()) == set(STUFF_IDS.values()) | {OTHER_ID}
        for img_id, info in things.imgs.items():
            img = np.asarray(Image.open(data / 'images' / s / info['file_name'])).astype(np.float32)
            cover, thing_px = np.zeros(img.shape[:2], int), np.zeros(img.shape[:2], bool)
            for a in things.loadAnns(things.getAnnIds(imgIds=img_id)):
                m = mask_utils.decode(a['segmentation']).astype(bool)
                assert m.sum() == a['area'] > 0 and a['iscrowd'] == 0
                x, y, w, h = map(int, a['bbox'])
                inside = np.zeros_like(m); inside[y:y + h, x:x + w] = True
                assert not (m & ~inside).any()  # the (full) box contains the visible mask
                mean = img[m].mean(0)
                dist = np.linalg.norm(family - mean, axis=1)
                assert dist[a['category_id'] - 1] < 90, (a, mean)  # the pixels have the colour of the category
                hits += int(dist.argmin() == a['category_id'] - 1); total += 1
                cover += m; thing_px |= m
            for a in stuff.loadAnns(stuff.getAnnIds(imgIds=img_id)):
                m = stuff.annToMask(a).astype(bool)
                if a['category_id'] == OTHER_ID: assert (m == thing_px).all()
                else: cover += m
            assert cover.min() == 1 and cover.max() == 1  # things and stuff tile the image
    assert hits >= 0.8 * total


def test_vg_consistency(data):
    vg = data / 'vg'
    images = json.loads((vg / 'image_data.json').read_text())
    objects = {r['image_id']: r['objects'] for r in json.loads((vg / 'objects.json').read_text())}
    attrs = {r['image_id']: r['attributes'] for r in json.loads((vg / 'attributes.json').read_text())}
    rels = {r['image_id']: r['relationships'] for r in json.loads((vg / 'relationships.json').read_text())}
    splits = json.loads((vg / 'splits.json').read_text())
    assert {k: len(v) for k, v in splits.items()} == {'train': 6, 'val': 2, 'test': 2}
    assert sorted(i for v in splits.values() for i in v) == [im['image_id'] for im in images] == list(range(1, 11))
    aliases = {}
    for line in (vg / 'relationship_alias.txt').read_text().splitlines():
        names = [x.strip() for x in line.split(',')]
        aliases.update({n: names[0] for n in names})
    for im in images:
        assert im['coco_id'] is None and im['flickr_id'] is None and im['width'] == im['height'] == 64
        assert (data / 'images' / Path(*im['url'].split('/')[-2:])).is_file()
        ids = {o['object_id'] for o in objects[im['image_id']]}
        assert len(ids) == len(objects[im['image_id']])
        for a in attrs[im['image_id']]:
            assert a['object_id'] in ids and len(a['attributes']) == 2
        assert rels[im['image_id']]
        for r in rels[im['image_id']]:
            assert r['subject']['object_id'] in ids and r['object']['object_id'] in ids
            assert aliases.get(r['predicate'], r['predicate']) in PREDICATES


@pytest.mark.parametrize('args,msg', [(('num_train', -1), 'num_train'), (('image_size', 16), 'image_size'),
                                      (None, 'is a file')])
def test_bad_input(tmp_path, flag, args, msg):
    f = tmp_path / 'a_file'; f.write_text('x')
    out = f if args is None else tmp_path / 'out'
    res = _cli(flag('output_dir'), out, *((flag(args[0]), args[1]) if args else ()))
    assert res.returncode == 2
    err = res.stderr.strip()
    assert err.startswith('error:') and msg in err and '\n' not in err and 'Traceback' not in err
