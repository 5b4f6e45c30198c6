"""Every user mistake of the hostile-tester report (issue 17) as one row: command, arguments, exit code, words of the
one-line message. A row runs the console script in this process, as its entry point would (sys.argv set, the
function of `[project.scripts]` called), and checks: the exit code, exactly one `error: ...` line on stderr when the
code is 2, the expected words in it, and no traceback. Adding a command means adding rows (a test checks that every
console script of pyproject.toml has some).

`python tests/test_reliability.py` prints the table (id, exit code, first line of stderr) for the closing note."""
import json, os, subprocess, sys, tomllib, zipfile
from pathlib import Path
import h5py
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['scripts']
GOOD = {'objects': ['sky', 'grass', 'circle'], 'relationships': [[0, 'above', 1], [2, 'above', 1]], 'seed': 0}
TINY = dict(image_size=(32, 32), embedding_dim=16, gconv_dim=16, gconv_hidden_dim=32, gconv_num_layers=2,
            refinement_dims=(32, 16, 8), mask_size=8, layout_noise_dim=4)

# ---------------------------------------------------------------------------------------------------------------
# Files the rows refer to by name ({name} in an argument). Each is made the first time a row asks for it.

def _write(p, text): p.parent.mkdir(parents=True, exist_ok=True); p.write_text(text); return p

def _graphs(name, content):
    return lambda w: _write(w.tmp / f'{name}.json', content if isinstance(content, str) else json.dumps(content))

def _shapes(w):
    from sg2im_nb.data.shapes import make_shapes_dataset
    return make_shapes_dataset(w.tmp / 'shapes', num_train=4, num_val=2, num_test=4, image_size=32, seed=0, num_workers=0,
                               progress=False)

def _model():
    from sg2im_nb.inference import shapes_vocab
    from sg2im_nb.model.generator import Sg2ImModel
    torch.manual_seed(0)
    return Sg2ImModel(shapes_vocab(), **TINY)

def _ck_dict():
    m = _model()
    return {'vocab': m.vocab, 'model_kwargs': m.model_kwargs, 'model_state': m.state_dict()}

def _ck(name, change=None):
    "A tiny checkpoint on the shapes vocab, with `change(ckpt)` applied (a malformed variant)."
    def make(w):
        ck = _ck_dict()
        if change is not None: change(ck)
        p = w.tmp / f'{name}.pt'; torch.save(ck, p); return p
    return make

def _kw(**kw):
    def change(ck): ck['model_kwargs'] = {**ck['model_kwargs'], **kw}
    return change

def _vocab(**kw):
    def change(ck):
        v = {**ck['model_kwargs']['vocab'], **kw}
        ck['model_kwargs'] = {**ck['model_kwargs'], 'vocab': v}; ck['vocab'] = v
    return change

def _flip_weight_byte(w):
    "Bytes changed inside the largest weight record of a zip checkpoint: torch.load does not notice."
    p = w['ck'].with_name('crc.pt'); data = bytearray(w['ck'].read_bytes())
    with zipfile.ZipFile(w['ck']) as zf: info = max([i for i in zf.infolist() if '/data/' in i.filename], key=lambda i: i.file_size)
    name_len, extra_len = (int.from_bytes(data[info.header_offset + o:info.header_offset + o + 2], 'little') for o in (26, 28))
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(16): data[start + info.file_size // 2 + k] ^= 0x5A
    p.write_bytes(bytes(data)); return p

def _bomb(w):
    "A checkpoint whose 128 MiB weight record is deflated to a few hundred KB (torch.save never compresses)."
    src, p = w.tmp / 'bomb_src.pt', w.tmp / 'bomb.pt'
    ck = _ck_dict(); ck['model_state'] = {**ck['model_state'], 'extra': torch.zeros(2**25)}
    torch.save(ck, src)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(p, 'w', zipfile.ZIP_DEFLATED) as zout:
        for i in zin.infolist(): zout.writestr(i.filename, zin.read(i.filename))
    src.unlink(); return p

def _restore_dir(name, change):
    "A training folder holding a checkpoint of a tiny run (one iteration), with `change(ckpt)` applied."
    def make(w):
        from sg2im_nb.checkpoint import load_checkpoint, save_checkpoint
        from sg2im_nb.train.loop import main as train_main
        base = w.tmp / 'trained'
        if not (base / 'checkpoint_with_model.pt').exists():
            train_main(['--preset', 'tiny', '--device', 'cpu', '--shapes_dir', str(w['shapes']), '--output_dir', str(base),
                        '--num_iterations', '1', '--num_val_samples', '2'])
        ck = load_checkpoint(base / 'checkpoint_with_model.pt'); change(ck)
        save_checkpoint(ck, w.tmp / name / 'checkpoint_with_model.pt')
        return w.tmp / name
    return make

def _counters(ck): ck['counters'] = {'t': -3, 'epoch': 'one'}
def _optim(ck):
    st = ck['optim_state']; ck['optim_state'] = {**st, 'param_groups': st['param_groups'] + st['param_groups']}

def _locked(w):
    d = w.tmp / 'locked'; d.mkdir(exist_ok=True)
    (d / '.sg2im-train.lock').write_text(json.dumps({'pid': 1, 'host': os.uname().nodename}))  # PID 1 is always alive
    return d

def _coco_variant(name, change):
    "The shapes test split as a COCO dataset, with `change(instances)` applied to its instances file."
    def make(w):
        ann = w['shapes'] / 'annotations'
        inst = json.loads((ann / 'instances_test.json').read_text()); change(inst)
        return _write(w.tmp / f'{name}.json', json.dumps(inst))
    return make

def _no_bbox(d): del d['annotations'][0]['bbox']
def _text_bbox(d): d['annotations'][0]['bbox'] = ['a', 'b', 'c', 'd']
def _zero_width(d): d['images'][0]['width'] = 0

def _h5(name, change=None):
    def make(w):
        from sg2im_nb.data.vg import H5_KEYS
        p = w.tmp / f'{name}.h5'
        two = lambda x: np.array([x, x])  # two images (evaluate needs at least two), both a.png
        d = {'object_names': two([1, 2, -1]), 'object_boxes': two([[1, 1, 8, 8], [4, 4, 8, 8], [0, 0, 0, 0]]),
             'objects_per_image': two(2), 'relationship_subjects': two([0]), 'relationship_predicates': two([1]),
             'relationship_objects': two([1]), 'relationships_per_image': two(1), 'image_paths': two(b'a.png')}
        if change is not None: change(d)
        with h5py.File(p, 'w') as f:
            for k in H5_KEYS: f[k] = d[k]
        if name == 'h5_damaged': p.write_bytes(p.read_bytes()[:900])
        return p
    return make

def _vg_images(w):
    from PIL import Image
    d = w.tmp / 'vg_images'; d.mkdir(exist_ok=True)
    Image.new('RGB', (16, 16), 'white').save(d / 'a.png'); return d

def _vg_vocab(w):
    from sg2im_nb.scene_graph import make_vocab
    return _write(w.tmp / 'vg_vocab.json', json.dumps(make_vocab(['__image__', 'cat', 'dog'], ['__in_image__', 'on'])))

def _file(w): return _write(w.tmp / 'a_file', 'I am a file')

def _readonly(w):
    "A folder nobody can write in: /sys for root (permissions do not stop root), a 0555 folder otherwise."
    if os.geteuid() == 0: return Path('/sys')
    d = w.tmp / 'readonly'; d.mkdir(exist_ok=True); d.chmod(0o555); return d


# issue 23: classifier checkpoints, non-finite weights, files that are not checkpoints, newer torch, COCO file names,
# FIFOs among images, vocab names that Graphviz cannot draw

def _clf_dict():
    from sg2im_nb.eval.classifier import CropClassifier, classifier_checkpoint, classifier_names
    torch.manual_seed(0)
    return classifier_checkpoint(CropClassifier(20, 4), classifier_names(), 0.5)

def _clf(name, change=None):
    "A small (untrained) crop classifier checkpoint, with `change(ckpt)` applied."
    def make(w):
        ck = _clf_dict()
        if change is not None: change(ck)
        p = w.tmp / f'{name}.pt'; torch.save(ck, p); return p
    return make

def _clf_kw(**kw):
    def change(ck): ck['kwargs'] = {**ck['kwargs'], **kw}
    return change

def _deflate(src, dst, extra=None):
    "A copy of zip checkpoint `src` with every record deflated (and `extra` records added)."
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w', zipfile.ZIP_DEFLATED) as zout:
        for i in zin.infolist(): zout.writestr(i.filename, zin.read(i.filename))
    return dst

def _clf_bomb(w):
    "A classifier checkpoint with a 512 MiB zero weight, deflated to well under 1 MB."
    src = w.tmp / 'clf_bomb_src.pt'; ck = _clf_dict(); ck['state'] = {**ck['state'], 'pad': torch.zeros(2**27)}
    torch.save(ck, src); p = _deflate(src, w.tmp / 'clf_bomb.pt'); src.unlink(); return p

def _clf_crc(w):
    src = _clf('clf_crc_src')(w); data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf: info = max([i for i in zf.infolist() if '/data/' in i.filename], key=lambda i: i.file_size)
    name_len, extra_len = (int.from_bytes(data[info.header_offset + o:info.header_offset + o + 2], 'little') for o in (26, 28))
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(8): data[start + info.file_size // 2 + k] ^= 0x5A
    p = w.tmp / 'clf_crc.pt'; p.write_bytes(bytes(data)); return p

def _nan_state(key='model_state', which=None):
    "Every float weight NaN (which=None), or one infinite value in the first float tensor."
    def change(ck):
        st = dict(ck[key])
        floats = [k for k, v in st.items() if v.is_floating_point()]
        for k in (floats if which is None else floats[:1]):
            v = st[k].clone()
            if which is None: v.fill_(float('nan'))
            else: v.view(-1)[0] = float('inf')
            st[k] = v
        ck[key] = st
    return change

def _rewrite_record(name, suffix, data):
    "The good checkpoint with the zip record ending in `suffix` replaced by `data` (another torch's file layout)."
    def make(w):
        p = w.tmp / f'{name}.pt'
        with zipfile.ZipFile(w['ck']) as zin, zipfile.ZipFile(p, 'w', zipfile.ZIP_STORED) as zout:
            for i in zin.infolist(): zout.writestr(i, data if i.filename.endswith(suffix) else zin.read(i.filename))
        return p
    return make

def _truncated(w):
    p = w.tmp / 'truncated.pt'; data = w['ck'].read_bytes(); p.write_bytes(data[:len(data) // 2]); return p

def _fifo(w):
    p = w.tmp / 'pipe.pt'
    if not p.exists(): os.mkfifo(p)
    return p

def _coco_outside(name, how):
    "The shapes test split as COCO with image 0's file_name leaving the image folder (an image that exists there)."
    def make(w):
        img_dir = w['shapes'] / 'images' / 'test'
        def change(d):
            first = d['images'][0]['file_name']
            d['images'][0]['file_name'] = str((img_dir / first).resolve()) if how == 'absolute' else f'../test/{first}'
        return _coco_variant(name, change)(w)
    return make

def _fifo_images(w):
    "A copy of the shapes test images in which the first image of the instances file is a FIFO (nobody writes to it)."
    import shutil
    src, d = w['shapes'] / 'images' / 'test', w.tmp / 'fifo_images'
    if not d.exists():
        shutil.copytree(src, d)
        first = json.loads((w['shapes'] / 'annotations' / 'instances_test.json').read_text())['images'][0]['file_name']
        (d / first).unlink(); os.mkfifo(d / first)
    return d

def _odd_name(name, label):
    "A checkpoint whose vocab has one more object named `label`, and a scene graph using it."
    def make(w):
        from sg2im_nb.model.generator import Sg2ImModel
        from sg2im_nb.inference import shapes_vocab
        v = shapes_vocab(); v['object_idx_to_name'] = v['object_idx_to_name'] + [label]
        v['object_name_to_idx'] = {**v['object_name_to_idx'], label: len(v['object_idx_to_name']) - 1}
        torch.manual_seed(0); m = Sg2ImModel(v, **TINY)
        torch.save({'vocab': v, 'model_kwargs': m.model_kwargs, 'model_state': m.state_dict()}, w.tmp / f'{name}.pt')
        _write(w.tmp / f'{name}.json', json.dumps([{'objects': ['sky', label, 'circle'], 'relationships': [[1, 'above', 2]], 'seed': 0}]))
        return w.tmp / name
    return make

BUILD = {
    'shapes': _shapes, 'ck': _ck('good'), 'file': _file, 'ro': _readonly,
    'good_json': _graphs('good', [GOOD]),
    'deep_json': _graphs('deep', '[' * 100_000 + ']' * 100_000),
    'seed64_json': _graphs('seed64', [dict(GOOD, seed=2**64)]),
    'digits_json': _graphs('digits', '[{"objects": ["sky"], "seed": ' + '9' * 5000 + '}]'),
    'many_objects_json': _graphs('many', [{'objects': ['circle'] * 100_000}]),
    'many_rels_json': _graphs('many_rels', [{'objects': ['circle', 'square'], 'relationships': [[0, 'above', 1]] * 100_000}]),
    'ck_crc': _flip_weight_byte, 'ck_bomb': _bomb,
    'ck_kwargs_list': _ck('kwargs_list', lambda ck: ck.__setitem__('model_kwargs', [1, 2])),
    'ck_no_vocab': _ck('no_vocab', lambda ck: (ck['model_kwargs'].pop('vocab'), ck.pop('vocab'))),
    'ck_vocab_types': _ck('vocab_types', _vocab(object_idx_to_name='sky grass')),
    'ck_vocab_range': _ck('vocab_range', _vocab(object_name_to_idx={'__image__': 0, 'sky': 10**6})),
    'ck_negative_dim': _ck('negative_dim', _kw(embedding_dim=-4)),
    'ck_absurd_dim': _ck('absurd_dim', _kw(gconv_dim=10**9, gconv_hidden_dim=10**9)),
    'ck_image_size': _ck('image_size', _kw(image_size=(0, 32))),
    'ck_state_list': _ck('state_list', lambda ck: ck.__setitem__('model_state', [1, 2, 3])),
    'ck_state_values': _ck('state_values', lambda ck: ck.__setitem__('model_state', {k: 1.0 for k in ck['model_state']})),
    'restore_counters': _restore_dir('restore_counters', _counters),
    'restore_optim': _restore_dir('restore_optim', _optim),
    'locked': _locked,
    'coco_no_bbox': _coco_variant('coco_no_bbox', _no_bbox), 'coco_text_bbox': _coco_variant('coco_text_bbox', _text_bbox),
    'coco_zero_width': _coco_variant('coco_zero_width', _zero_width),
    'h5_range': _h5('h5_range', lambda d: d['object_boxes'].__setitem__((1, 0, 2), 10**6) or d['relationship_objects'].__setitem__((1, 0), 7)),
    'h5_count': _h5('h5_count', lambda d: d['objects_per_image'].__setitem__(1, 50)),
    'h5_negative': _h5('h5_negative', lambda d: d['object_names'].__setitem__((1, 0), -5)),
    'h5_damaged': _h5('h5_damaged'), 'vg_images': _vg_images, 'vg_vocab': _vg_vocab,
    'clf_width': _clf('clf_width', _clf_kw(width=100_000)), 'clf_negative_width': _clf('clf_negative_width', _clf_kw(width=-4)),
    'clf_kwargs_list': _clf('clf_kwargs_list', lambda ck: ck.__setitem__('kwargs', [1, 2])),
    'clf_state_list': _clf('clf_state_list', lambda ck: ck.__setitem__('state', [1, 2, 3])),
    'clf_state_missing': _clf('clf_state_missing', lambda ck: ck['state'].pop('head.weight')),
    'clf_vocab_str': _clf('clf_vocab_str', lambda ck: ck.__setitem__('vocab', 'circle square')),
    'clf_vocab_short': _clf('clf_vocab_short', lambda ck: ck.__setitem__('vocab', ['circle', 'square'])),
    'clf_nan': _clf('clf_nan', _nan_state('state')), 'clf_bomb': _clf_bomb, 'clf_crc': _clf_crc,
    'ck_nan': _ck('nan', _nan_state()), 'ck_inf': _ck('inf', _nan_state(which='one')),
    'ck_newer': _rewrite_record('newer', '/version', b'20\n'), 'ck_format': _rewrite_record('format', '/.format_version', b'99'),
    'ck_truncated': _truncated, 'fifo': _fifo,
    'coco_absolute': _coco_outside('coco_absolute', 'absolute'), 'coco_dotdot': _coco_outside('coco_dotdot', 'dotdot'),
    'fifo_images': _fifo_images,
    'nul_name': _odd_name('nul_name', 'blob\x00x'), 'long_name': _odd_name('long_name', 'x' * 300_000),
}


class World(dict):
    "Paths by name, made on first use in `tmp`."
    def __init__(self, tmp): super().__init__(); self.tmp = Path(tmp); self.tmp.mkdir(parents=True, exist_ok=True)
    def __missing__(self, k):
        if k == 'tmp': return self.tmp
        self[k] = BUILD[k](self); return self[k]

# ---------------------------------------------------------------------------------------------------------------
# The table: (id, command, arguments, exit code, words that the one line must hold)

RM = ['--device', 'cpu', '--output_dir', '{tmp}/rm_out']
RMC = ['--scene_graphs_json', '{good_json}', *RM, '--checkpoint']
EV = ['--checkpoint', '{ck}', '--shapes_dir', '{shapes}', '--device', 'cpu', '--num_samples', '2']
EVC = [*EV, '--dataset', 'coco', '--coco_image_dir', '{shapes}/images/test', '--coco_stuff_json', '{shapes}/annotations/stuff_test.json',
       '--output_dir', '{tmp}/ev_coco', '--coco_instances_json']
EVV = ['--real', '1', '--dataset', 'vg', '--device', 'cpu', '--vg_image_dir', '{vg_images}', '--output_dir', '{tmp}/ev_vg']
TR = ['--preset', 'tiny', '--device', 'cpu', '--shapes_dir', '{shapes}', '--num_iterations', '1', '--output_dir']
SI = ['--checkpoint', '{ck}', '--shapes_dir', '{shapes}', '--device', 'cpu']
EVK = [*EV, '--output_dir', '{tmp}/ev_clf', '--classifier']
CASES = [
    # 9. a bad flag: one line with the fix, in every command
    ('rm-unknown-flag', 'sg2im-run-model', ['--nope'], 2, ['unrecognized arguments: --nope', 'sg2im-run-model --help']),
    ('rm-bad-int', 'sg2im-run-model', ['--seed', 'abc'], 2, ["invalid int value: 'abc'", '--help']),
    ('train-unknown-flag', 'sg2im-train', ['--nope'], 2, ['unrecognized arguments: --nope', 'sg2im-train --help']),
    ('eval-unknown-flag', 'sg2im-evaluate', ['--nope'], 2, ['unrecognized arguments: --nope', 'sg2im-evaluate --help']),
    ('sample-unknown-flag', 'sg2im-sample-images', ['--nope'], 2, ['unrecognized arguments: --nope', 'sg2im-sample-images --help']),
    ('strip-unknown-flag', 'sg2im-strip-checkpoint', ['--nope'], 2, ['unrecognized arguments: --nope', 'sg2im-strip-checkpoint --help']),
    ('shapes-unknown-flag', 'sg2im-make-shapes', ['--nope'], 2, ['unrecognized arguments: --nope', 'sg2im-make-shapes --help']),
    ('vg-unknown-flag', 'sg2im-preprocess-vg', ['--nope'], 2, ['unrecognized arguments: --nope', 'sg2im-preprocess-vg --help']),
    ('download-unknown-flag', 'sg2im-download', ['models', '--nope'], 2, ['unrecognized arguments: --nope', 'sg2im-download --help']),
    ('download-missing-arg', 'sg2im-download', [], 2, ['required', 'sg2im-download --help']),
    ('bench-unknown-flag', 'sg2im-bench', ['--nope'], 2, ['unrecognized arguments: --nope', 'sg2im-bench --help']),
    ('app-unknown-flag', 'sg2im-app', ['--nope'], 2, ['unrecognized arguments: --nope', 'sg2im-app --help']),
    ('app-port-70000', 'sg2im-app', ['--port', '70000'], 2, ['--port must be at most 65535']),
    ('app-open-browser-3', 'sg2im-app', ['--open_browser', '3'], 2, ['--open_browser must be 0 or 1']),
    # 7. scene graphs and seeds
    ('rm-deep-json', 'sg2im-run-model', ['--scene_graphs_json', '{deep_json}', *RM], 2, ['nested more than']),
    ('rm-seed-2**64', 'sg2im-run-model', ['--scene_graphs_json', '{seed64_json}', *RM], 2, ['"seed"', '2**63-1']),
    ('rm-seed-flag-huge', 'sg2im-run-model', ['--scene_graphs_json', '{good_json}', *RM, '--seed', '99999999999999999999999'], 2, ['--seed', '2**63-1']),
    ('rm-5000-digits', 'sg2im-run-model', ['--scene_graphs_json', '{digits_json}', *RM], 2, ['digits']),
    ('rm-100k-objects', 'sg2im-run-model', ['--scene_graphs_json', '{many_objects_json}', *RM], 2, ['100000 objects', 'at most']),
    ('rm-100k-relationships', 'sg2im-run-model', ['--scene_graphs_json', '{many_rels_json}', *RM], 2, ['100000 relationships', 'at most']),
    ('eval-vocab-deep', 'sg2im-evaluate', [*EVV, '--vg_h5', '{h5_range}', '--vocab_json', '{deep_json}'], 2, ['nested more than']),
    ('train-vocab-deep', 'sg2im-train', ['--dataset', 'vg', '--device', 'cpu', '--vocab_json', '{deep_json}', '--train_h5', '{h5_range}',
                                         '--val_h5', '{h5_range}', '--vg_image_dir', '{vg_images}', '--output_dir', '{tmp}/tr_vg'], 2, ['nested more than']),
    ('eval-seed-huge', 'sg2im-evaluate', [*EV, '--seed', str(2**64), '--output_dir', '{tmp}/ev'], 2, ['--seed', '2**63-1']),
    ('shapes-seed-negative', 'sg2im-make-shapes', ['--output_dir', '{tmp}/ms', '--seed', '-1'], 2, ['--seed', '2**63-1']),
    # 8. numeric flags
    ('eval-batch-0', 'sg2im-evaluate', [*EV, '--batch_size', '0', '--output_dir', '{tmp}/ev'], 2, ['--batch_size', 'at least 1']),
    ('eval-batch--1', 'sg2im-evaluate', [*EV, '--batch_size', '-1', '--output_dir', '{tmp}/ev'], 2, ['--batch_size', 'at least 1']),
    ('sample-num--5', 'sg2im-sample-images', [*SI, '--num_samples', '-5', '--output_dir', '{tmp}/si'], 2, ['--num_samples', 'at least 1']),
    ('sample-batch-0', 'sg2im-sample-images', [*SI, '--batch_size', '0', '--output_dir', '{tmp}/si'], 2, ['--batch_size', 'at least 1']),
    ('shapes-image-size-100000', 'sg2im-make-shapes', ['--output_dir', '{tmp}/ms', '--image_size', '100000'], 2, ['--image_size', 'at most']),
    ('download-timeout--1', 'sg2im-download', ['models', '--dir', '{tmp}/dl', '--timeout', '-1'], 2, ['--timeout', 'positive']),
    ('download-timeout-nan', 'sg2im-download', ['models', '--dir', '{tmp}/dl', '--timeout', 'nan'], 2, ['--timeout', 'positive']),
    ('rm-device-xpu', 'sg2im-run-model', ['--scene_graphs_json', '{good_json}', '--output_dir', '{tmp}/rm_out', '--device', 'xpu'], 2, ["'xpu'", 'cpu']),
    ('rm-device-meta', 'sg2im-run-model', ['--scene_graphs_json', '{good_json}', '--output_dir', '{tmp}/rm_out', '--device', 'meta'], 2, ["'meta'", 'cpu']),
    ('eval-device-xpu', 'sg2im-evaluate', [*EV[:-4], '--device', 'xpu', '--output_dir', '{tmp}/ev'], 2, ["'xpu'"]),
    ('train-device-meta', 'sg2im-train', [*TR, '{tmp}/tr_meta', '--device', 'meta'], 2, ["'meta'"]),
    # the speed engineer validates these in TrainConfig and the bench config
    ('train-crop-size-8', 'sg2im-train', [*TR, '{tmp}/tr', '--crop_size', '8'], 2, ['--crop_size']),
    ('train-image-size-8', 'sg2im-train', [*TR, '{tmp}/tr', '--image_size', '8,8'], 2, ['--image_size']),
    ('train-crop-size-100000', 'sg2im-train', [*TR, '{tmp}/tr', '--crop_size', '100000'], 2, ['--crop_size']),
    ('bench-batch-0', 'sg2im-bench', ['--config', 'tiny', '--batch_size', '0'], 2, ['--batch_size']),
    ('bench-channels-last-7', 'sg2im-bench', ['--config', 'tiny', '--channels_last', '7'], 2, ['--channels_last']),
    # 3, 4, 11. checkpoints: damaged, malformed, memory bombs
    ('ck-crc', 'sg2im-run-model', [*RMC, '{ck_crc}'], 2, ['crc.pt', 'CRC']),
    ('ck-bomb', 'sg2im-run-model', [*RMC, '{ck_bomb}'], 2, ['bomb.pt', 'compressed']),
    ('ck-kwargs-not-dict', 'sg2im-run-model', [*RMC, '{ck_kwargs_list}'], 2, ['kwargs_list.pt', 'model_kwargs']),
    ('ck-no-vocab', 'sg2im-run-model', [*RMC, '{ck_no_vocab}'], 2, ['no_vocab.pt', 'vocab']),
    ('ck-vocab-types', 'sg2im-run-model', [*RMC, '{ck_vocab_types}'], 2, ['vocab_types.pt', 'object_idx_to_name']),
    ('ck-vocab-range', 'sg2im-run-model', [*RMC, '{ck_vocab_range}'], 2, ['vocab_range.pt', 'object_name_to_idx']),
    ('ck-negative-dim', 'sg2im-run-model', [*RMC, '{ck_negative_dim}'], 2, ['negative_dim.pt', 'embedding_dim']),
    ('ck-absurd-dim', 'sg2im-run-model', [*RMC, '{ck_absurd_dim}'], 2, ['absurd_dim.pt', 'gconv_dim']),
    ('ck-image-size', 'sg2im-run-model', [*RMC, '{ck_image_size}'], 2, ['image_size.pt', 'image_size']),
    ('ck-state-not-dict', 'sg2im-run-model', [*RMC, '{ck_state_list}'], 2, ['state_list.pt', 'model_state']),
    ('ck-state-values', 'sg2im-run-model', [*RMC, '{ck_state_values}'], 2, ['state_values.pt', 'model_state']),
    ('strip-crc', 'sg2im-strip-checkpoint', ['--input_checkpoint', '{ck_crc}', '--output_checkpoint', '{tmp}/s.pt'], 2, ['CRC']),
    ('eval-crc', 'sg2im-evaluate', [*EV[2:], '--checkpoint', '{ck_crc}', '--output_dir', '{tmp}/ev'], 2, ['CRC']),
    ('train-restore-counters', 'sg2im-train', [*TR, '{restore_counters}', '--restore_from_checkpoint', '1'], 2, ['counters']),
    ('train-restore-optim', 'sg2im-train', [*TR, '{restore_optim}', '--restore_from_checkpoint', '1'], 2, ['optim_state']),
    # 11. one trainer per folder
    ('train-locked', 'sg2im-train', [*TR, '{locked}'], 2, ['PID 1', '.sg2im-train.lock']),
    # 6. output paths
    ('rm-out-under-file', 'sg2im-run-model', ['--scene_graphs_json', '{good_json}', '--device', 'cpu', '--output_dir', '{file}/out'], 2, ['a_file', 'not a folder']),
    ('rm-out-is-file', 'sg2im-run-model', ['--scene_graphs_json', '{good_json}', '--device', 'cpu', '--output_dir', '{file}'], 2, ['a_file', 'not a folder']),
    ('rm-out-readonly', 'sg2im-run-model', ['--scene_graphs_json', '{good_json}', '--device', 'cpu', '--output_dir', '{ro}'], 2, ['cannot write']),
    ('train-out-under-file', 'sg2im-train', [*TR, '{file}/run'], 2, ['a_file', 'not a folder']),
    ('train-out-readonly', 'sg2im-train', [*TR, '{ro}/run'], 2, ['cannot write']),
    ('eval-out-under-file', 'sg2im-evaluate', [*EV, '--output_dir', '{file}/ev'], 2, ['a_file', 'not a folder']),
    ('eval-out-readonly', 'sg2im-evaluate', [*EV, '--output_dir', '{ro}/ev'], 2, ['cannot write']),
    ('sample-out-under-file', 'sg2im-sample-images', [*SI, '--output_dir', '{file}/si'], 2, ['a_file', 'not a folder']),
    ('sample-out-readonly', 'sg2im-sample-images', [*SI, '--output_dir', '{ro}/si'], 2, ['cannot write']),
    ('strip-out-is-dir', 'sg2im-strip-checkpoint', ['--input_checkpoint', '{ck}', '--output_checkpoint', '{tmp}'], 2, ['is a folder']),
    ('strip-out-under-file', 'sg2im-strip-checkpoint', ['--input_checkpoint', '{ck}', '--output_checkpoint', '{file}/s.pt'], 2, ['a_file', 'not a folder']),
    ('strip-out-readonly', 'sg2im-strip-checkpoint', ['--input_checkpoint', '{ck}', '--output_checkpoint', '{ro}/s.pt'], 2, ['cannot write']),
    ('shapes-out-under-file', 'sg2im-make-shapes', ['--output_dir', '{file}/ms', '--num_train', '1'], 2, ['a_file', 'not a folder']),
    ('shapes-out-readonly', 'sg2im-make-shapes', ['--output_dir', '{ro}/ms', '--num_train', '1'], 2, ['cannot write']),
    ('download-dir-under-file', 'sg2im-download', ['models', '--dir', '{file}/dl'], 2, ['a_file', 'not a folder']),
    ('download-dir-readonly', 'sg2im-download', ['models', '--dir', '{ro}/dl'], 2, ['cannot write']),
    # 10. corrupt data
    ('coco-no-bbox', 'sg2im-evaluate', [*EVC, '{coco_no_bbox}'], 2, ['coco_no_bbox.json', 'bbox']),
    ('coco-text-bbox', 'sg2im-evaluate', [*EVC, '{coco_text_bbox}'], 2, ['coco_text_bbox.json', 'bbox']),
    ('coco-zero-width', 'sg2im-evaluate', [*EVC, '{coco_zero_width}'], 2, ['coco_zero_width.json', 'width']),
    ('h5-out-of-range', 'sg2im-evaluate', [*EVV, '--vg_h5', '{h5_range}', '--vocab_json', '{vg_vocab}'], 2, ['h5_range.h5', 'relationship_objects']),
    ('h5-bad-count', 'sg2im-evaluate', [*EVV, '--vg_h5', '{h5_count}', '--vocab_json', '{vg_vocab}'], 2, ['h5_count.h5', 'objects_per_image']),
    ('h5-negative-index', 'sg2im-evaluate', [*EVV, '--vg_h5', '{h5_negative}', '--vocab_json', '{vg_vocab}'], 2, ['h5_negative.h5', 'object_names']),
    ('h5-damaged', 'sg2im-evaluate', [*EVV, '--vg_h5', '{h5_damaged}', '--vocab_json', '{vg_vocab}'], 2, ['h5_damaged.h5']),
    # issue 23, 6: classifier checkpoints get the generator's checks
    ('clf-absurd-width', 'sg2im-evaluate', [*EVK, '{clf_width}'], 2, ['clf_width.pt', 'width']),
    ('clf-negative-width', 'sg2im-evaluate', [*EVK, '{clf_negative_width}'], 2, ['clf_negative_width.pt', 'width']),
    ('clf-kwargs-list', 'sg2im-evaluate', [*EVK, '{clf_kwargs_list}'], 2, ['clf_kwargs_list.pt', 'kwargs']),
    ('clf-state-list', 'sg2im-evaluate', [*EVK, '{clf_state_list}'], 2, ['clf_state_list.pt', 'state']),
    ('clf-state-missing', 'sg2im-evaluate', [*EVK, '{clf_state_missing}'], 2, ['clf_state_missing.pt', 'head.weight']),
    ('clf-vocab-str', 'sg2im-evaluate', [*EVK, '{clf_vocab_str}'], 2, ['clf_vocab_str.pt', 'vocab']),
    ('clf-vocab-short', 'sg2im-evaluate', [*EVK, '{clf_vocab_short}'], 2, ['clf_vocab_short.pt', 'vocab', '20']),
    ('clf-bomb', 'sg2im-evaluate', [*EVK, '{clf_bomb}'], 2, ['clf_bomb.pt', 'compressed']),
    ('clf-crc', 'sg2im-evaluate', [*EVK, '{clf_crc}'], 2, ['clf_crc.pt', 'CRC']),
    ('clf-nan', 'sg2im-evaluate', [*EVK, '{clf_nan}'], 2, ['clf_nan.pt', 'not finite']),
    ('clf-folder', 'sg2im-evaluate', [*EVK, '{tmp}'], 2, ['is a folder']),
    # issue 23, 11: diverged weights are refused at load
    ('ck-nan', 'sg2im-run-model', [*RMC, '{ck_nan}'], 2, ['nan.pt', 'not finite']),
    ('ck-inf', 'sg2im-run-model', [*RMC, '{ck_inf}'], 2, ['inf.pt', 'not finite', 'earlier checkpoint']),
    ('eval-ck-nan', 'sg2im-evaluate', [*EV[2:], '--checkpoint', '{ck_nan}', '--output_dir', '{tmp}/ev'], 2, ['nan.pt', 'not finite']),
    # issue 23, 12: what a path is, and whole sentences
    ('ck-folder', 'sg2im-run-model', [*RMC, '{tmp}'], 2, ['is a folder, not a file']),
    ('ck-fifo', 'sg2im-run-model', [*RMC, '{fifo}'], 2, ['pipe.pt', 'FIFO']),
    ('ck-device', 'sg2im-run-model', [*RMC, '/dev/null'], 2, ['/dev/null', 'device']),
    ('ck-newer-torch', 'sg2im-run-model', [*RMC, '{ck_newer}'], 2, ['newer.pt', 'newer PyTorch', 'version 20', 'upgrade']),
    ('ck-format-version', 'sg2im-run-model', [*RMC, '{ck_format}'], 2, ['format.pt', '.format_version 99']),
    ('ck-truncated', 'sg2im-run-model', [*RMC, '{ck_truncated}'], 2, ['truncated.pt', 'central directory); download']),
    # issue 23, 9: a COCO file_name stays in the image folder
    ('coco-absolute-file-name', 'sg2im-evaluate', [*EVC, '{coco_absolute}'], 2, ['coco_absolute.json', 'file_name', 'outside']),
    ('coco-dotdot-file-name', 'sg2im-evaluate', [*EVC, '{coco_dotdot}'], 2, ['coco_dotdot.json', 'file_name', 'outside']),
    # issue 23, 14: a FIFO among the images; vocab names Graphviz cannot take as they are
    ('coco-fifo-image', 'sg2im-evaluate', [*EV, '--dataset', 'coco', '--coco_image_dir', '{fifo_images}', '--coco_stuff_json', '{shapes}/annotations/stuff_test.json',
                                        '--output_dir', '{tmp}/ev_fifo', '--coco_instances_json', '{shapes}/annotations/instances_test.json'],
     2, ['FIFO', 'not a regular file']),
    ('rm-vocab-nul', 'sg2im-run-model', ['--checkpoint', '{nul_name}.pt', '--scene_graphs_json', '{nul_name}.json', *RM,
                                         '--draw_scene_graphs', '1', '--save_layouts', '1'], 0, []),
    ('rm-vocab-300k', 'sg2im-run-model', ['--checkpoint', '{long_name}.pt', '--scene_graphs_json', '{long_name}.json', *RM,
                                          '--draw_scene_graphs', '1', '--save_layouts', '1'], 0, []),
]


def run_case(case, w, capsys=None):
    "(exit code, stdout, stderr) of one row, run in this process as its console script."
    import importlib
    cid, cmd, argv, _, _ = case
    mod, fn = SCRIPTS[cmd].split(':')
    entry = getattr(importlib.import_module(mod), fn)
    args = [a.format_map(w) for a in argv]
    old, sys.argv = sys.argv, [cmd, *args]
    try:
        try: res = entry(); code = res if isinstance(res, int) else 0
        except SystemExit as e: code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        except BaseException:  # a traceback would reach the user
            import traceback; traceback.print_exc(); code = 1
    finally: sys.argv = old
    if capsys is None: return code, '', ''
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp('reliability'))


@pytest.mark.filterwarnings('ignore::DeprecationWarning', 'ignore::UserWarning')
@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_case(case, world, capsys, monkeypatch):
    monkeypatch.delenv('SG2IM_CHECKPOINT', raising=False); monkeypatch.delenv('SG2IM_BASE_URL', raising=False)
    monkeypatch.chdir(world.tmp)
    for a in case[2]:  # make the files first, so that their making prints nothing into the row's output
        a.format_map(world)
    capsys.readouterr()
    code, out, err = run_case(case, world, capsys)
    _, _, _, want_code, words = case
    assert 'Traceback' not in err + out, err[-3000:]
    assert code == want_code, (code, err[-2000:])
    if want_code == 2:
        lines = [l for l in err.splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith('error:')]
        assert len(errors) == 1 and lines[-1] == errors[0], err[-2000:]  # a progress bar may come before it
        for word in words: assert word in errors[0], (word, errors[0])


def test_every_command_has_rows():
    assert set(SCRIPTS) - {c[1] for c in CASES} == set()


@pytest.mark.parametrize('cmd', ['sg2im-run-model', 'sg2im-evaluate', 'sg2im-bench'])
def test_bad_flag_as_a_process(cmd):
    "The real entry point as a process (python -m): one stderr line, exit 2."
    mod = SCRIPTS[cmd].split(':')[0]
    res = subprocess.run([sys.executable, '-m', mod, '--nope'], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 2 and res.stderr.count('\n') == 1 and res.stderr.startswith('error: '), res.stderr
    assert 'unrecognized arguments: --nope' in res.stderr



# issue 23, 10: a full disk while writing images or a checkpoint. The commands run as processes under a file-size
# limit (RLIMIT_FSIZE): a write past it fails with EFBIG and no file name, as one to a full disk fails with ENOSPC
# (the notebook 00a_cli writes to /dev/full for that one). The limit needs no privilege, so CI can run it.
FULL = [  # (id, module, arguments, bytes one file may have, words of the one line)
    ('rm-images', 'sg2im_nb.inference', ['--scene_graphs_json', '{good_json}', '--output_dir', '{tmp}/full_rm', '--device', 'cpu'],
     2048, ['full_rm/img000000.png', 'largest file allowed']),
    ('strip-checkpoint', 'sg2im_nb.train.strip', ['--input_checkpoint', '{ck}', '--output_checkpoint', '{tmp}/full_strip/s.pt'],
     16384, ['full_strip/s.pt', 'largest file allowed']),
    ('train-checkpoint', 'sg2im_nb.train.loop', [*TR, '{tmp}/full_train', '--num_val_samples', '2'], 65536, ['full_train', 'largest file allowed']),
]


@pytest.mark.parametrize('case', FULL, ids=[c[0] for c in FULL])
def test_full_disk(case, world):
    import resource, signal
    cid, module, argv, limit, words = case
    args = [a.format_map(world) for a in argv]
    def cap():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails (EFBIG) instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    env = {k: v for k, v in os.environ.items() if k not in ('SG2IM_CHECKPOINT', 'SG2IM_BASE_URL')}
    r = subprocess.run([sys.executable, '-m', module, *args], capture_output=True, text=True, timeout=300, cwd=world.tmp,
                       env=env, preexec_fn=cap)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip() and 'it/s]' not in l and 's/it]' not in l and '/s]' not in l]
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith('error: cannot write '), r.stderr[-3000:]
    for word in words: assert word in lines[0], (word, lines[0])
    left = [q for q in Path(world.tmp).rglob('.*.tmp')]
    assert not left, left  # atomic writes leave no temporary file behind

if __name__ == '__main__':  # the before/after table: every row in its own process, memory capped at 6 GB
    # python tests/test_reliability.py [ID_PREFIX ...]: the rows whose id starts with one of the prefixes (default: all)
    import resource, tempfile
    if sys.argv[1:2] == ['--row']:
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        case = next(c for c in CASES if c[0] == sys.argv[2])
        w = World(sys.argv[3]); os.chdir(w.tmp)
        for a in case[2]: a.format_map(w)
        sys.exit(run_case(case, w)[0])
    tmp = tempfile.mkdtemp(prefix='reliability-')
    print('| case | exit | error line (or the last line of a traceback) | stderr lines |\n|---|---:|---|---:|')
    for c in CASES:
        if len(sys.argv) > 1 and not c[0].startswith(tuple(sys.argv[1:])): continue
        try:
            r = subprocess.run([sys.executable, __file__, '--row', c[0], tmp], capture_output=True, text=True, timeout=120)
            lines = [l for l in r.stderr.strip().splitlines() if l.strip() and 'it/s]' not in l and 'B/s]' not in l]
            errors = [l for l in lines if l.startswith('error:')]
            code, n = r.returncode, len(lines)
            first = errors[0] if errors else (lines[-1] if lines and lines[0].startswith('Traceback') else (lines or [''])[0])
        except subprocess.TimeoutExpired: code, first, n = 'timeout (120 s)', '', 0
        print(f'| {c[0]} | {code} | {first[:400]} | {n} |', flush=True)
