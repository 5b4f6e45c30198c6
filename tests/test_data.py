"End-to-end tests of the data pipelines (sg2im_nb.data): COCO and VG on the shapes dataset, the VG preprocessing CLI, the cache, bad input."
import json, subprocess, sys
import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from sg2im_nb.cli import UserError
from sg2im_nb.data.shapes import make_shapes_dataset
from sg2im_nb.data.common import Batch, collate_scene_graphs, split_batch, normalize_images, denormalize_images
from sg2im_nb.data.coco import CocoSceneGraphDataset, coco_relationship, PREDICATES
from sg2im_nb.data.vg import VgSceneGraphDataset
from sg2im_nb.data.cache import build_image_cache, CachedSceneGraphDataset

pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning')  # pycocotools under numpy 2

SMALL = dict(min_image_size=32, min_object_instances=2, min_attribute_instances=2, min_object_size=4,
             min_relationship_instances=2, min_objects_per_image=1)


@pytest.fixture(scope='session')
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp('shapes') / 'ds', num_train=16, num_val=4, num_test=4, image_size=64,
                               seed=0, num_workers=0, progress=False)


def _coco(root, split='train', **kw):
    return CocoSceneGraphDataset(root / 'images' / split, root / 'annotations' / f'instances_{split}.json',
                                 root / 'annotations' / f'stuff_{split}.json', **kw)


def _vg_flags(root, out):
    vg = root / 'vg'
    files = dict(splits_json=vg / 'splits.json', images_json=vg / 'image_data.json', objects_json=vg / 'objects.json',
                 attributes_json=vg / 'attributes.json', object_aliases=vg / 'object_alias.txt',
                 relationship_aliases=vg / 'relationship_alias.txt', relationships_json=vg / 'relationships.json',
                 output_vocab_json=out / 'vocab.json', output_h5_dir=out)
    return {**files, **SMALL}


def _cli(flags):
    args = [x for k, v in flags.items() for x in (f'--{k}', str(v))]
    return subprocess.run([sys.executable, '-m', 'sg2im_nb.data.vg_preprocess', *args], capture_output=True, text=True, timeout=120)


def _one_line_error(res, contains):
    assert res.returncode == 2, res.stderr
    assert 'Traceback' not in res.stderr
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith('error:')]  # progress bars may come before it
    assert len(errors) == 1 and lines[-1] == errors[0] and contains in errors[0], res.stderr


@pytest.fixture(scope='session')
def vg_out(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp('vg_out')
    res = _cli(_vg_flags(shapes, out))
    assert res.returncode == 0, res.stderr
    return out


# ---------------------------------------------------------------- common
def test_normalize_roundtrip():
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(denormalize_images(normalize_images(x)), x, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- relationship rule
@pytest.mark.parametrize('s_c,o_c,expected', [
    ((0.2, 0.5), (0.8, 0.5), 'left of'),    # theta = 180 deg
    ((0.8, 0.5), (0.2, 0.5), 'right of'),   # 0 deg
    ((0.5, 0.2), (0.5, 0.8), 'above'),      # -90 deg (image y grows downwards)
    ((0.5, 0.8), (0.5, 0.2), 'below'),      # 90 deg
    ((0.6, 0.4), (0.5, 0.5), 'right of'),   # -45 deg: lower edge of 'right of'
    ((0.6, 0.6), (0.5, 0.5), 'below'),      # 45 deg: lower edge of 'below'
    ((0.4, 0.6), (0.5, 0.5), 'left of'),    # 135 deg: lower edge of 'left of'
    ((0.4, 0.4), (0.5, 0.5), 'left of'),    # -135 deg: 'left of' too, as published (theta <= -3pi/4)
    ((0.3, 0.45), (0.5, 0.5), 'left of'),   # atan2(-0.05, -0.2) = -166 deg
    ((0.45, 0.3), (0.5, 0.5), 'above'),     # -104 deg
])
def test_relationship_angles(s_c, o_c, expected):
    box = [0.4, 0.4, 0.6, 0.6]
    assert coco_relationship(box, box, s_c, o_c) == expected


def test_relationship_containment():
    big, small = [0.1, 0.1, 0.9, 0.9], [0.3, 0.3, 0.5, 0.5]
    assert coco_relationship(big, small, (0.5, 0.5), (0.4, 0.4)) == 'surrounding'
    assert coco_relationship(small, big, (0.4, 0.4), (0.5, 0.5)) == 'inside'
    # touching edge: not strict containment, so the angle decides (centroid 0.2 to the right: 'right of')
    assert coco_relationship([0.3, 0.1, 0.9, 0.9], small, (0.6, 0.4), (0.4, 0.4)) == 'right of'


# ---------------------------------------------------------------- COCO
def test_coco_end_to_end(shapes):
    ds = _coco(shapes, image_size=(64, 64), mask_size=16, seed=0)
    assert len(ds) > 0
    assert ds.vocab['pred_idx_to_name'] == PREDICATES and ds.vocab['object_name_to_idx']['__image__'] == 0
    dl = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_scene_graphs)
    b = next(iter(dl))
    assert isinstance(b, Batch) and b.imgs.shape == (4, 3, 64, 64) and b.masks.shape == (len(b.objs), 16, 16)
    assert b.boxes.min() >= 0 and b.boxes.max() <= 1
    # every image: its last object is __image__, each real object has exactly one __in_image__ triple to it
    for i, s in enumerate(split_batch(b)):
        O = len(s.objs)
        assert s.objs[-1] == 0 and 3 <= O - 1 <= 8
        inimg = s.triples[s.triples[:, 1] == 0]
        assert sorted(inimg[:, 0].tolist()) == list(range(O - 1)) and (inimg[:, 2] == O - 1).all()
        rel = s.triples[s.triples[:, 1] != 0]
        assert len(rel) == O - 1 and (rel[:, 0] != rel[:, 2]).all() and (rel[:, 0] < O - 1).all() and (rel[:, 2] < O - 1).all()
        for u, v in zip(s, ds[i]): torch.testing.assert_close(u, v)  # seeded: reproducible; split_batch inverts collate


def test_coco_filters(shapes):
    ann = json.loads((shapes / 'annotations' / 'instances_train.json').read_text())
    ds = _coco(shapes, min_objects_per_image=0, max_objects_per_image=100, min_object_size=0.1)
    W = H = 64
    for i in range(len(ds)):
        iid = ds.image_ids[i]
        big = [a for a in ann['annotations'] if a['image_id'] == iid and a['bbox'][2] * a['bbox'][3] / (W * H) > 0.1]
        objs = ds.load_record(i)['objs'][:-1].tolist()
        assert [a['category_id'] for a in big] == [o for o in objs if o < 92]
    only = _coco(shapes, instance_whitelist=['circle'], stuff_whitelist=['sky'], min_objects_per_image=1)
    names = {only.vocab['object_idx_to_name'][o] for i in range(len(only)) for o in only.load_record(i)['objs'].tolist()}
    assert names <= {'circle', 'sky', '__image__'}


def test_coco_polygon_and_rle(tmp_path):
    "A hand-made COCO file: one polygon object and one RLE object, checked against hand-computed boxes and masks."
    (tmp_path / 'img').mkdir()
    Image.fromarray(np.zeros((40, 80, 3), np.uint8)).save(tmp_path / 'img' / 'a.png')
    m = np.zeros((40, 80), np.uint8); m[20:40, 40:80] = 1
    rle = mask_utils.encode(np.asfortranarray(m)); rle['counts'] = rle['counts'].decode()
    cats = [{'id': 1, 'name': 'thing'}, {'id': 3, 'name': 'other'}]
    anns = [{'id': 1, 'image_id': 7, 'category_id': 1, 'bbox': [0, 0, 40, 20], 'segmentation': [[0, 0, 40, 0, 40, 20, 0, 20]]},
            {'id': 2, 'image_id': 7, 'category_id': 1, 'bbox': [40, 20, 40, 20], 'segmentation': rle},
            {'id': 3, 'image_id': 7, 'category_id': 3, 'bbox': [0, 0, 80, 40], 'segmentation': [[0, 0, 80, 0, 80, 40, 0, 40]]}]
    (tmp_path / 'inst.json').write_text(json.dumps({'images': [{'id': 7, 'file_name': 'a.png', 'width': 80, 'height': 40}],
                                                    'annotations': anns, 'categories': cats}))
    ds = CocoSceneGraphDataset(tmp_path / 'img', tmp_path / 'inst.json', image_size=(20, 40), mask_size=4,
                               min_objects_per_image=2, seed=0)
    s = ds[0]
    assert s.objs.tolist() == [1, 1, 0]  # 'other' dropped, __image__ appended
    torch.testing.assert_close(s.boxes, torch.tensor([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 1]]))
    assert s.masks.sum() == 3 * 16  # every mask full over its box
    assert ds.vocab['object_idx_to_name'] == ['__image__', 'thing', 'NONE', 'other']
    # centroids (0.25, 0.25) and (0.75, 0.75): theta is exactly 45 deg (1 below 0) or -135 deg (0 left of 1,
    # the published rule closes 'left of' at both ends)
    p = PREDICATES[s.triples[0, 1]]
    assert p == ('below' if s.triples[0, 0] == 1 else 'left of')
    with_other = CocoSceneGraphDataset(tmp_path / 'img', tmp_path / 'inst.json', include_other=True, min_objects_per_image=3)
    assert with_other.load_record(0)['objs'].tolist() == [1, 1, 3, 0]


def test_coco_bad_input(shapes, tmp_path):
    with pytest.raises(UserError, match="'circel'"): _coco(shapes, instance_whitelist=['circel'])
    with pytest.raises(UserError, match='no usable images'): _coco(shapes, min_objects_per_image=40, max_objects_per_image=50)
    with pytest.raises(UserError, match='nope'): CocoSceneGraphDataset(shapes / 'nope', shapes / 'annotations' / 'instances_train.json')
    bad = tmp_path / 'bad.json'; bad.write_text('{"images": [')
    with pytest.raises(UserError, match='bad.json'): CocoSceneGraphDataset(shapes / 'images' / 'train', bad)
    bad.write_text('[1, 2]')
    with pytest.raises(UserError, match='not a COCO annotation file'): CocoSceneGraphDataset(shapes / 'images' / 'train', bad)
    # an image listed but absent on disk
    (tmp_path / 'empty').mkdir()
    ds = CocoSceneGraphDataset(tmp_path / 'empty', shapes / 'annotations' / 'instances_train.json', min_objects_per_image=1)
    with pytest.raises(UserError, match='missing on disk'): ds[0]


# ---------------------------------------------------------------- VG
def test_vg_preprocess_outputs(shapes, vg_out):
    vocab = json.loads((vg_out / 'vocab.json').read_text())
    assert vocab['object_idx_to_name'][0] == '__image__' and vocab['pred_idx_to_name'][0] == '__in_image__'
    assert 'box' not in vocab['object_name_to_idx'] and 'to the left of' not in vocab['pred_name_to_idx']  # aliases
    splits = json.loads((shapes / 'vg' / 'splits.json').read_text())
    for split in ('train', 'val', 'test'):
        with h5py.File(vg_out / f'{split}.h5') as f:
            N = len(f['image_ids'])
            assert 0 < N <= len(splits[split]) and set(f['image_ids'][:].tolist()) <= set(splits[split])
            n, r = f['objects_per_image'][:], f['relationships_per_image'][:]
            assert f['object_names'].shape == (N, 30) and f['object_boxes'].shape == (N, 30, 4)
            assert f['relationship_subjects'].shape == (N, 30) and f['object_attributes'].shape == (N, 30, 30)
            for i in range(N):
                assert (f['object_names'][i, :n[i]] >= 1).all() and (f['object_names'][i, n[i]:] == -1).all()
                assert (f['relationship_subjects'][i, :r[i]] < n[i]).all() and (f['relationship_predicates'][i, :r[i]] >= 1).all()
                assert (f['object_boxes'][i, :n[i], 2:] >= 4).all()  # min_object_size
            p = f['image_paths'][0].decode()
            assert p.startswith(f'{split}/') and (shapes / 'images' / p).is_file()
            assert (f['image_widths'][:] == 64).all() and (f['image_heights'][:] == 64).all()


def test_vg_end_to_end(shapes, vg_out):
    ds = VgSceneGraphDataset(vg_out / 'vocab.json', vg_out / 'train.h5', shapes / 'images', image_size=(64, 64),
                             max_objects=4, seed=0)
    dl = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_scene_graphs)
    b = next(iter(dl))
    assert b.imgs.shape == (4, 3, 64, 64) and b.masks is None
    assert torch.bincount(b.obj_to_img).max() <= 4
    npred = len(ds.vocab['pred_idx_to_name'])
    assert (b.triples[:, 1] < npred).all() and (b.objs[b.triples[:, 0]] != 0).all()
    with h5py.File(vg_out / 'train.h5') as f:  # boxes: x, y, w, h pixels -> normalised x0, y0, x1, y1 (64 px image)
        x, y, w, h = f['object_boxes'][0, 0]
    full = VgSceneGraphDataset(vg_out / 'vocab.json', vg_out / 'train.h5', shapes / 'images', image_size=(32, 32), max_objects=31)
    torch.testing.assert_close(full.load_record(0)['boxes'][0], torch.tensor([x, y, x + w, y + h]) / 64.)


def test_vg_cli_bad_input(shapes, tmp_path):
    flags = _vg_flags(shapes, tmp_path / 'o')
    _one_line_error(_cli({**flags, 'objects_json': tmp_path / 'missing.json'}), 'missing.json')
    (tmp_path / 'bad.json').write_text('[{"image_id": 1,')
    _one_line_error(_cli({**flags, 'relationships_json': tmp_path / 'bad.json'}), 'bad.json')
    _one_line_error(_cli({**flags, 'min_objects_per_image': 29}), 'no usable images')
    train = json.loads((shapes / 'vg' / 'splits.json').read_text())['train']
    (tmp_path / 'splits.json').write_text(json.dumps({'train': train, 'val': [999999]}))
    _one_line_error(_cli({**flags, 'splits_json': tmp_path / 'splits.json'}), "split 'val'")


def test_vg_dataset_bad_input(shapes, vg_out, tmp_path):
    with pytest.raises(UserError, match='nope.h5'): VgSceneGraphDataset(vg_out / 'vocab.json', vg_out / 'nope.h5', shapes / 'images')
    with pytest.raises(UserError, match='HDF5'): VgSceneGraphDataset(vg_out / 'vocab.json', vg_out / 'vocab.json', shapes / 'images')
    ds = VgSceneGraphDataset(vg_out / 'vocab.json', vg_out / 'train.h5', tmp_path)
    with pytest.raises(UserError, match='missing on disk'): ds[0]


# ---------------------------------------------------------------- cache
def test_cache_matches_and_loads_in_workers(shapes, vg_out, tmp_path):
    coco = _coco(shapes, image_size=(32, 32), mask_size=8, seed=1)
    cc = CachedSceneGraphDataset(build_image_cache(coco, tmp_path / 'c.h5', num_workers=2, progress=False), seed=1)
    for i in range(len(coco)):
        for u, v in zip(cc[i], coco[i]): torch.testing.assert_close(u, v)
    vg = VgSceneGraphDataset(vg_out / 'vocab.json', vg_out / 'train.h5', shapes / 'images', image_size=(32, 32), seed=1)
    vc = CachedSceneGraphDataset(build_image_cache(vg, tmp_path / 'v.h5', progress=False), seed=1)
    for i in range(len(vg)):
        a, b = vc[i], vg[i]
        torch.testing.assert_close(a.image, b.image); assert a.objs.equal(b.objs) and a.triples.equal(b.triples)
    dl = torch.utils.data.DataLoader(cc, batch_size=4, num_workers=2, collate_fn=collate_scene_graphs)
    assert sum(b.num_images for b in dl) == len(cc)
