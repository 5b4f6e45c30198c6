"""sg2im-preprocess-vg against the published preprocess_vg.py rules (issue 15) and on damaged raw VG files (issue 17).

A hand-made Visual Genome in miniature exercises every published rule; a plain, independent reading of those rules
(`reference`) gives the scene graphs the published script writes, and the command's HDF5 output must match it scene
graph by scene graph, by default and with --normalize_all_predicates 1. A table of damaged inputs goes through the
real command: each must give one line `error: ...` naming the file, the entry and the fix, exit code 2, no traceback.
"""
import copy, json, os, shutil, subprocess, sys, tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import h5py
import pytest
from sg2im_nb.cli import run_cli
from sg2im_nb.data.vg_preprocess import main, preprocess_vg

SMALL = dict(min_image_size=50, min_object_instances=2, min_attribute_instances=2, min_object_size=10, min_objects_per_image=2,
             max_objects_per_image=4, max_attributes_per_image=2, min_relationship_instances=2, min_relationships_per_image=1,
             max_relationships_per_image=3)


# ---------------------------------------------------------------- the fixture
def tiny_vg() -> dict:
    "Raw VG JSON as dicts: aliases, multi-name objects, a name in capitals, aliased predicates in every split, filters."
    O = lambda oid, *names, w=20, h=20: {'object_id': oid, 'x': oid % 50, 'y': 5, 'w': w, 'h': h, 'names': list(names)}
    R = lambda rid, s, p, o: {'relationship_id': rid, 'predicate': p, 'subject': {'object_id': s}, 'object': {'object_id': o}}
    images = {  # image id: (width, height, objects, relationships)
        1: (100, 80, [O(101, 'man'), O(102, 'dog'), O(103, 'dog', 'sky'), O(104, 'tree')],
            [R(11, 101, 'next to', 104), R(12, 101, 'on', 102), R(13, 103, 'on top of', 104)]),
        2: (100, 100, [O(201, 'men'), O(202, 'cat', 'sky'), O(203, 'tree'), O(204, 'lamp', 'vase')],
            [R(21, 201, 'ON ', 203), R(22, 202, 'beside', 203), R(23, 204, 'on', 201)]),
        3: (120, 90, [O(301, 'guy'), O(302, 'dog', w=5), O(303, 'sky'), O(304, 'Dog')],
            [R(31, 302, 'under', 303), R(32, 301, 'under', 303), R(33, 301, 'holding', 303), R(34, 303, 'next to', 304)]),
        4: (100, 100, [O(401, 'man'), O(402, 'bird')], [R(41, 401, 'on', 402)]),
        5: (100, 100, [O(501, 'man'), O(502, 'dog'), O(503, 'tree')],
            [R(51, 501, 'on', 502), R(52, 502, 'on', 503), R(53, 501, 'next to', 503), R(54, 503, 'next to', 501)]),
        10: (40, 100, [O(1001, 'cat'), O(1002, 'cat'), O(1003, 'cat')], [R(1011, 1001, 'sitting on', 1002)]),
        6: (100, 100, [O(601, 'man'), O(602, 'clouds'), O(603, 'dog')],
            [R(61, 601, 'on top of', 602), R(62, 603, 'on', 602), R(63, 601, 'beside', 603), R(64, 601, 'holding', 603)]),
        7: (100, 100, [O(701, 'man'), O(702, 'tree')], [R(71, 701, 'ON', 702)]),
        11: (100, 100, [O(1101, 'man'), O(1102, 'dog'), O(1103, 'tree'), O(1104, 'sky'), O(1105, 'man')], [R(1111, 1101, 'on', 1102)]),
        8: (100, 100, [O(801, 'sky'), O(802, 'man'), O(803, 'dog', 'man')], [R(81, 802, 'sitting on', 801), R(82, 803, 'next to', 802)]),
        9: (100, 45, [O(901, 'man'), O(902, 'dog')], [R(91, 901, 'on', 902)]),
        12: (100, 100, [O(1201, 'man'), O(1202, 'cat', 'lamp'), O(1203, 'dog')], [R(121, 1201, 'near', 1203), R(122, 1202, 'on', 1201)]),
    }
    attrs = {1: [{'object_id': 101, 'attributes': ['tall', 'tall', 'Happy']}, {'object_id': 102, 'attributes': ['brown']}, {'object_id': 103}],
             2: [{'object_id': 201, 'attributes': ['tall', 'brown', 'old']}], 4: [{'object_id': 401, 'attributes': ['tall']}],
             6: [{'object_id': 601, 'attributes': ['tall', 'brown', 'tall']}, {'object_id': 603, 'attributes': None}]}
    return {'splits': {'train': [1, 2, 3, 4, 5, 10], 'val': [6, 7, 11], 'test': [8, 9, 12]},
            'images': [{'image_id': i, 'width': w, 'height': h, 'url': f'https://vg.invalid/VG_100K/{i}.jpg'} for i, (w, h, _, _) in images.items()],
            'objects': [{'image_id': i, 'objects': objs} for i, (_, _, objs, _) in images.items()],
            'attributes': [{'image_id': i, 'attributes': attrs.get(i, [])} for i in images],
            'relationships': [{'image_id': i, 'relationships': rels} for i, (_, _, _, rels) in images.items()],
            'object_aliases': 'man,men,guy\nsky, clouds\n', 'relationship_aliases': 'on,on top of,sitting on\nnext to,beside\n'}

VG = tiny_vg()

def write_vg(vg:dict, folder:Path) -> dict:
    "Write the fixture as VG files; return the command's flags for them (outputs in folder/out)."
    folder.mkdir(parents=True, exist_ok=True)
    files = {'splits_json': 'splits', 'images_json': 'images', 'objects_json': 'objects', 'attributes_json': 'attributes',
             'relationships_json': 'relationships'}
    for key in files.values(): (folder / f'{key}.json').write_text(json.dumps(vg[key]))
    for key in ('object_aliases', 'relationship_aliases'): (folder / f'{key}.txt').write_text(vg[key])
    return {**{flag: folder / f'{key}.json' for flag, key in files.items()}, 'object_aliases': folder / 'object_aliases.txt',
            'relationship_aliases': folder / 'relationship_aliases.txt', 'output_vocab_json': folder / 'out' / 'vocab.json',
            'output_h5_dir': folder / 'out'}


# ---------------------------------------------------------------- a plain reading of the published rules
def aliases(text):
    table = {}
    for line in text.splitlines(keepends=True):
        words = [w.strip() for w in line.split(',')]
        for w in words: table[w] = words[0]
    return table

def frequent(lists_of_names, min_count):
    "Each list counts each distinct name once; enough counts, most frequent first, ties in first-seen order."
    counts = {}
    for names in lists_of_names:
        for n in dict.fromkeys(names): counts[n] = counts.get(n, 0) + 1
    return [n for n, c in sorted(counts.items(), key=lambda nc: -nc[1]) if c >= min_count]

def reference(vg, f, normalize=False):
    "({vocabulary lists}, {split: [scene graph]}) by the published rules, in the published order."
    size = {im['image_id']: (im['width'], im['height']) for im in vg['images']}
    splits = {s: [i for i in ids if min(size[i]) >= f['min_image_size']] for s, ids in vg['splits'].items()}   # 1
    oal, ral = aliases(vg['object_aliases']), aliases(vg['relationship_aliases'])                              # 2
    train = splits['train']
    onames = ['__image__'] + frequent([[oal.get(n, n) for n in o['names']] for e in vg['objects'] if e['image_id'] in train
                                       for o in e['objects']], f['min_object_instances'])                      # 3
    anames = frequent([a.get('attributes') or [] for e in vg['attributes'] if e['image_id'] in train for a in e['attributes']],
                      f['min_attribute_instances'])                                                            # 4
    kept = {}                                                                                                  # 5
    for e in vg['objects']:
        if any(e['image_id'] in ids for ids in splits.values()):
            for o in e['objects']:
                name = next((oal.get(n, n) for n in o['names'] if oal.get(n, n) in onames), None)
                if name and o['w'] >= f['min_object_size'] and o['h'] >= f['min_object_size']:
                    kept[o['object_id']] = (name, [o['x'], o['y'], o['w'], o['h']])
    rels, counts = copy.deepcopy(vg['relationships']), {}                                                      # 6
    for e in rels:
        for r in e['relationships'] if e['image_id'] in train else []:
            if r['subject']['object_id'] in kept and r['object']['object_id'] in kept:
                r['predicate'] = ral.get(r['predicate'].lower().strip(), r['predicate'].lower().strip())
                counts[r['predicate']] = counts.get(r['predicate'], 0) + 1
    pnames = ['__in_image__'] + [p for p, c in counts.items() if c >= f['min_relationship_instances']]
    if normalize: rels = [{**e, 'relationships': [{**r, 'predicate': ral.get(r['predicate'].lower().strip(), r['predicate'].lower().strip())}
                                                  for r in e['relationships']]} for e in vg['relationships']]
    objects_of, rels_of = {e['image_id']: e['objects'] for e in vg['objects']}, {e['image_id']: e['relationships'] for e in rels}
    attrs_of = {e['image_id']: {a['object_id']: a.get('attributes') or [] for a in e['attributes']} for e in vg['attributes']}
    graphs = {s: [] for s in splits}                                                                           # 7
    for s, ids in splits.items():
        for i in ids:
            objs = [o['object_id'] for o in objects_of[i] if o['object_id'] in kept]
            if not f['min_objects_per_image'] <= len(objs) <= f['max_objects_per_image']: continue
            rs = [r for r in rels_of[i] if r['predicate'] in pnames and r['subject']['object_id'] in objs and r['object']['object_id'] in objs]
            if not f['min_relationships_per_image'] <= len(rs) <= f['max_relationships_per_image']: continue
            graphs[s].append({'image_id': i, 'objects': [kept[o][0] for o in objs], 'boxes': [kept[o][1] for o in objs],
                              'attributes': [[t for t in attrs_of[i].get(o, []) if t in anames][:f['max_attributes_per_image']] for o in objs],
                              'relationships': [(objs.index(r['subject']['object_id']), r['predicate'], objs.index(r['object']['object_id'])) for r in rs],
                              'relationship_ids': [r['relationship_id'] for r in rs]})
    return {'objects': onames, 'attributes': anames, 'predicates': pnames}, graphs


def read_output(out:Path):
    "({vocabulary lists}, {split: [scene graph]}) decoded from vocab.json and <split>.h5."
    v = json.loads((out / 'vocab.json').read_text())
    on, pn, an = v['object_idx_to_name'], v['pred_idx_to_name'], v['attribute_idx_to_name']
    graphs = {}
    for split in ('train', 'val', 'test'):
        with h5py.File(out / f'{split}.h5') as f: d = {k: f[k][()] for k in f}
        graphs[split] = []
        for i, iid in enumerate(d['image_ids']):
            n, r = d['objects_per_image'][i], d['relationships_per_image'][i]
            graphs[split].append({'image_id': int(iid), 'objects': [on[k] for k in d['object_names'][i, :n]], 'boxes': d['object_boxes'][i, :n].tolist(),
                                  'attributes': [[an[k] for k in d['object_attributes'][i, j, :d['attributes_per_object'][i, j]]] for j in range(n)],
                                  'relationships': [(int(s), pn[p], int(o)) for s, p, o in zip(d['relationship_subjects'][i, :r],
                                                    d['relationship_predicates'][i, :r], d['relationship_objects'][i, :r])],
                                  'relationship_ids': d['relationship_ids'][i, :r].tolist()})
    return {'objects': on, 'attributes': an, 'predicates': pn}, graphs


def command(flags:dict, prefix:list=()):
    "Run the real console script (or `python -m` where it is not installed beside this Python)."
    exe = Path(sys.executable).parent / 'sg2im-preprocess-vg'
    cmd = [*prefix, *([str(exe)] if exe.is_file() else [sys.executable, '-m', 'sg2im_nb.data.vg_preprocess'])]
    return subprocess.run(cmd + [x for k, v in flags.items() for x in (f'--{k}', str(v))], capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- the published rules
@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "The command on the fixture, with no flag (the published data) and with --normalize_all_predicates 1, side by side."
    folder = tmp_path_factory.mktemp('vg')
    files = write_vg(VG, folder / 'in')
    flags = {n: {**files, **SMALL, 'output_vocab_json': folder / f'out{n}' / 'vocab.json', 'output_h5_dir': folder / f'out{n}',
                 **({'normalize_all_predicates': 1} if n else {})} for n in (0, 1)}
    with ThreadPoolExecutor(2) as pool: results = dict(zip(flags, pool.map(command, flags.values())))
    return {n: (res, folder / f'out{n}') for n, res in results.items()}

def output(runs, normalize:int):
    res, out = runs[normalize]
    assert res.returncode == 0, res.stderr
    return read_output(out)


@pytest.mark.parametrize('normalize', [0, 1])
def test_matches_the_published_rules_graph_by_graph(runs, normalize):
    vocab, graphs = output(runs, normalize)
    want_vocab, want = reference(VG, SMALL, normalize=bool(normalize))
    assert vocab == want_vocab
    for split in ('train', 'val', 'test'):
        assert [g['image_id'] for g in graphs[split]] == [g['image_id'] for g in want[split]], split
        for got, exp in zip(graphs[split], want[split]): assert got == exp, (split, got['image_id'])


def test_published_default_by_hand(runs):
    "What the published rules give on the fixture, written out by hand."
    vocab, g = output(runs, 0)
    assert vocab == {'objects': ['__image__', 'man', 'dog', 'sky', 'tree'], 'attributes': ['tall', 'brown'],
                     'predicates': ['__in_image__', 'next to', 'on']}  # 'next to' seen first; 'Dog' and 'cat' stay out
    assert {s: [x['image_id'] for x in gs] for s, gs in g.items()} == {'train': [1, 2], 'val': [6], 'test': [8]}
    one, two = g['train']
    assert one['objects'] == ['man', 'dog', 'dog', 'tree'] and one['attributes'] == [['tall', 'tall'], ['brown'], [], []]
    assert one['relationships'] == [(0, 'next to', 3), (0, 'on', 1), (2, 'on', 3)]   # 'on top of' cleaned in train
    assert two['objects'] == ['man', 'sky', 'tree']                                  # ['cat', 'sky'] is named 'sky'
    assert two['relationships'] == [(0, 'on', 2), (1, 'next to', 2)]                 # 'ON ', 'beside' cleaned in train
    assert g['val'] == [{'image_id': 6, 'objects': ['man', 'sky', 'dog'], 'boxes': [[1, 5, 20, 20], [2, 5, 20, 20], [3, 5, 20, 20]],
                         'attributes': [['tall', 'brown'], [], []], 'relationships': [(2, 'on', 1)], 'relationship_ids': [62]}]
    assert g['test'][0]['relationships'] == [(2, 'next to', 1)]                      # raw 'sitting on' dropped


def test_normalize_all_predicates_by_hand(runs):
    (v0, g0), (v1, g1) = output(runs, 0), output(runs, 1)
    assert v1 == v0 and g1['train'] == g0['train']      # same vocabulary, same training data
    assert [x['image_id'] for x in g1['val']] == [6, 7]
    assert g1['val'][0]['relationships'] == [(0, 'on', 1), (2, 'on', 1), (0, 'next to', 2)]
    assert g1['val'][1]['relationships'] == [(0, 'on', 1)]                           # 'ON' only, kept once cleaned
    assert g1['test'][0]['relationships'] == [(1, 'on', 0), (2, 'next to', 1)]


def test_arrays_as_published(tmp_path):
    "int64 values are stored as int32; rows padded with -1; image paths are '<folder>/<file>' of the url."
    files = write_vg(VG, tmp_path)
    summary = preprocess_vg(**files, **SMALL, progress=False)
    assert summary['splits'] == {'train': 2, 'val': 1, 'test': 1}
    with h5py.File(tmp_path / 'out' / 'train.h5') as f:
        assert f['image_ids'].dtype == f['object_boxes'].dtype == f['object_names'].dtype == 'int32'
        assert f['object_names'].shape == (2, 4) and f['relationship_ids'].shape == (2, 3) and f['object_attributes'].shape == (2, 4, 2)
        assert f['object_names'][1].tolist() == [1, 3, 4, -1] and f['attributes_per_object'][1].tolist() == [2, 0, 0, -1]
        assert [p.decode() for p in f['image_paths']] == ['VG_100K/1.jpg', 'VG_100K/2.jpg']


# ---------------------------------------------------------------- damaged input: one line, exit 2
def obj(vg): return vg['objects'][0]['objects'][0]                 # image 1, object 101
def rel(vg): return vg['relationships'][0]['relationships'][0]     # image 1, relationship 11

def edit(change):
    "Change the raw JSON dicts, then write the files."
    return lambda vg, folder: (change(vg), write_vg(vg, folder))[1]

def text(flag, make):
    "Write the files, then replace the text of one of them."
    def run(vg, folder):
        files = write_vg(vg, folder)
        files[flag].write_text(make(files[flag].read_text()))
        return files
    return run

def flag(**kw):
    "Write the files, then point flags elsewhere (values are functions of the folder)."
    return lambda vg, folder: {**write_vg(vg, folder), **{k: v(folder) for k, v in kw.items()}}

CASES = [  # (name, damage, exit code, words the error line must hold)
    ('healthy fixture', edit(lambda vg: None), 0, []),
    ('object without x', edit(lambda vg: obj(vg).pop('x')), 2, ['objects.json', 'image 1, object 101 has no "x"', 'download the file again']),
    ('object without h', edit(lambda vg: obj(vg).pop('h')), 2, ['objects.json', 'image 1, object 101 has no "h"']),
    ('size not a number', edit(lambda vg: obj(vg).update(w='big')), 2, ['objects.json', 'object 101', '"w": \'big\', which is not a number']),
    ('size a boolean', edit(lambda vg: obj(vg).update(y=True)), 2, ['object 101', '"y": True, which is not a number']),
    ('object without names', edit(lambda vg: obj(vg).pop('names')), 2, ['objects.json', 'object 101 has no "names"']),
    ('names not strings', edit(lambda vg: obj(vg).update(names=['man', 3])), 2, ['objects.json', 'object 101', 'not all strings']),
    ('names a string', edit(lambda vg: obj(vg).update(names='man')), 2, ['object 101', "\"names\": 'man', which is not a list"]),
    ('object without id', edit(lambda vg: obj(vg).pop('object_id')), 2, ['objects.json', 'image 1, object ? has no "object_id"']),
    ('relationship without subject', edit(lambda vg: rel(vg).pop('subject')), 2, ['relationships.json', 'image 1, relationship 11 has no "subject"', 'repair']),
    ('relationship without object', edit(lambda vg: rel(vg).pop('object')), 2, ['relationships.json', 'relationship 11 has no "object"']),
    ('relationship without predicate', edit(lambda vg: rel(vg).pop('predicate')), 2, ['relationships.json', 'relationship 11 has no "predicate"']),
    ('predicate not a string', edit(lambda vg: rel(vg).update(predicate=5)), 2, ['relationship 11', '"predicate": 5, which is not a string']),
    ('subject without object id', edit(lambda vg: rel(vg).update(subject={'name': 'man'})), 2, ['relationship 11, subject has no "object_id"']),
    ('attribute not a string', edit(lambda vg: vg['attributes'][0]['attributes'][0].update(attributes=['tall', 7])), 2,
     ['attributes.json', 'image 1, object 101', 'not a list of strings']),
    ('image without width', edit(lambda vg: vg['images'][0].pop('width')), 2, ['images_json', 'images.json', 'image 1 has no "width"']),
    ('image entry without id', edit(lambda vg: vg['objects'][2].pop('image_id')), 2, ['objects.json', 'entry 2 has no "image_id"']),
    ('top level not a list', edit(lambda vg: vg.update(objects={'image_id': 1})), 2, ['objects.json', 'is a dict, not a list of images']),
    ('not JSON', text('objects_json', lambda t: 'objects, as a spreadsheet'), 2, ['objects_json', 'objects.json', 'JSON']),
    ('truncated JSON', text('relationships_json', lambda t: t[:len(t) // 2]), 2, ['relationships_json', 'relationships.json', 'JSON']),
    ('no object alias file', flag(object_aliases=lambda d: d / 'object_alias.txt'), 2, ['object_aliases', 'object_alias.txt', 'not found']),
    ('no relationship alias file', flag(relationship_aliases=lambda d: d / 'rel_alias.txt'), 2, ['relationship_aliases', 'rel_alias.txt', 'not found']),
    ('output folder under a file', flag(output_h5_dir=lambda d: d / 'objects.json' / 'out'), 2, ['output_h5_dir', 'objects.json/out', 'pass a writable folder']),
    ('vocab path is a folder', flag(output_vocab_json=lambda d: d), 2, ['output_vocab_json', 'is a folder']),
]


def check_one_line(res, code, words):
    assert res.returncode == code, res.stderr
    assert 'Traceback' not in res.stderr, res.stderr
    if code == 0: return
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), res.stderr
    for w in words: assert w in lines[0], (w, lines[0])


COMMAND_CASES = ('object without x', 'size not a number', 'relationship without subject', 'relationship without predicate',
                 'names not strings', 'not JSON', 'truncated JSON', 'no object alias file', 'output folder under a file')


def test_damaged_input_table_in_process(tmp_path, capsys):
    "Every case, through the console script's own parser and error handling (`run_cli(main, argv)`), in this process."
    failed = []
    for k, (name, damage, code, words) in enumerate(CASES):
        flags = {**damage(copy.deepcopy(VG), tmp_path / f'case{k}'), **SMALL}
        try: run_cli(main, [x for k_, v in flags.items() for x in (f'--{k_}', str(v))]); got = 0
        except SystemExit as e: got = e.code
        res = subprocess.CompletedProcess([], got, *capsys.readouterr())
        try: check_one_line(res, code, words)
        except AssertionError as e: failed.append(f'{name}: {e}')
    assert not failed, '\n'.join(failed)


def test_damaged_input_table_command(tmp_path):
    "One case of each kind through the real `sg2im-preprocess-vg` command (the `outputs` fixture runs it on healthy input)."
    runs = [(name, code, words, {**damage(copy.deepcopy(VG), tmp_path / f'case{k}'), **SMALL})
            for k, (name, damage, code, words) in enumerate(CASES) if name in COMMAND_CASES]
    assert len(runs) == len(COMMAND_CASES)
    with ThreadPoolExecutor(4) as pool: results = list(pool.map(lambda r: command(r[3]), runs))
    failed = []
    for (name, code, words, _), res in zip(runs, results):
        try: check_one_line(res, code, words)
        except AssertionError as e: failed.append(f'{name}: {e}')
    assert not failed, '\n'.join(failed)


def test_read_only_output_folder():
    "A folder that refuses new files gives one line before any reading. Root writes anywhere, so root runs it as 'nobody'."
    folder = Path(tempfile.mkdtemp())  # not pytest's tmp_path: an unprivileged user must be able to read the inputs
    try:
        os.chmod(folder, 0o755)
        files = write_vg(VG, folder)
        ro = folder / 'ro'
        ro.mkdir(); os.chmod(ro, 0o555)
        prefix = []
        if os.geteuid() == 0:
            prefix = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']
            probe = subprocess.run(prefix + [sys.executable, '-c', 'import sg2im_nb, h5py'], capture_output=True) if shutil.which('setpriv') else None
            if probe is None or probe.returncode: pytest.skip('running as root, and no unprivileged user can run this Python here')
        res = command({**files, **SMALL, 'output_h5_dir': ro, 'output_vocab_json': ro / 'vocab.json'}, prefix=prefix)
        check_one_line(res, 2, ['output_h5_dir', str(ro), 'cannot take new files', 'pass a writable folder'])
        assert not any(ro.iterdir())
    finally:
        if (folder / 'ro').exists(): os.chmod(folder / 'ro', 0o755)
        shutil.rmtree(folder)
