"""The scene-graph editor without a browser: feed SceneGraphEditor the messages its browser side sends (batches of
actions, as queued by fast clicks), check what it answers, and execute nbs/31_widgets.ipynb in a real kernel."""
import json
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from sg2im_nb.scene_graph import make_vocab
from sg2im_nb.model.generator import Sg2ImModel
from sg2im_nb.inference import untrained_shapes_model, run_model
from sg2im_nb.editor.render import hex_color
from sg2im_nb.editor.widget import SceneGraphEditor, editor_latency, UNTRAINED

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def model(): return untrained_shapes_model()


def send(ed, seq, *actions, view='v'):
    "What the browser sends: one batch of actions, numbered per view."
    ed._on_msg(ed.widget, {'type': 'actions', 'view': view, 'seq': seq, 'actions': list(actions)})
    return ed.widget.view


def levels(view, level): return [t for lv, t in view['messages'] if lv == level]


def test_queued_clicks_are_applied_exactly(model):
    "20 quick add-object clicks cycling through three names, then relationships and removals in the same batches."
    ed = SceneGraphEditor(model, {'objects': [], 'relationships': []}, device='cpu')
    names = (['star', 'heart', 'ring'] * 7)[:20]
    v = send(ed, 1, *[{'op': 'add_object', 'name': n} for n in names])
    assert ed.scene_graph['objects'] == names and v['acks'] == {'v': 1} and v['focus'] == 19
    v = send(ed, 2, {'op': 'add_relationship', 's': 0, 'p': 'above', 'o': 1}, {'op': 'add_relationship', 's': 1, 'p': 'left of', 'o': 2},
             {'op': 'add_relationship', 's': 2, 'p': 'below', 'o': 3}, {'op': 'remove_object', 'id': 1})
    assert ed.scene_graph['objects'] == [names[0]] + names[2:]
    assert ed.scene_graph['relationships'] == [[1, 'below', 2]]        # the two through object 1 went with it
    assert [o['id'] for o in v['objects']] == [0] + list(range(2, 20))
    v = send(ed, 3, *[{'op': 'undo'}] * 4)
    assert ed.scene_graph['objects'] == names and ed.scene_graph['relationships'] == [] and v['acks'] == {'v': 3}
    other = send(ed, 1, {'op': 'set_seed', 'seed': 9}, view='w')     # a second view of the same widget
    assert other['acks'] == {'v': 3, 'w': 1} and ed.seed == 9


def test_ids_labels_and_colours_are_stable(model):
    ed = SceneGraphEditor(model, device='cpu')
    before = {o['id']: (o['label'], o['color']) for o in ed.widget.view['objects']}
    v = send(ed, 1, {'op': 'remove_object', 'id': 0}, {'op': 'remove_object', 'id': 2})
    after = {o['id']: (o['label'], o['color']) for o in v['objects']}
    assert after == {k: before[k] for k in (1, 3)} and after[3] == ('square #3', hex_color(3))
    assert f'fill="{hex_color(3)}"' in v['svg'] and 'square #3' in v['svg'] and '<title>obj' not in v['svg']
    assert [r['s'] for r in v['relationships']] == []                  # circle #2 left of square #3 went with #2


def test_problems_become_messages_never_exceptions(model):
    "Mistakes in the middle of a batch are red lines; the rest of the batch happens; the batch is acknowledged."
    ed = SceneGraphEditor(model, device='cpu')
    bad = [{'op': 'remove_object', 'id': k} for k in range(4)] + [
        {'op': 'add_relationship', 's': 0, 'p': 'above', 'o': 1},      # every object removed first
        'not a dict', {'op': 'fly'}, {'op': 'set_seed', 'seed': -3}, {'op': 'set_box', 'id': 0},
        {'op': 'load_json', 'text': '[{"objects": [', 'name': 'broken.json'},
        {'op': 'load_json', 'text': '[{"objects": ["unicorn"]}]', 'name': 'u.json'},
        {'op': 'checkpoint', 'key': 'nope.pt'}, {'op': 'example', 'key': 'nope'}]
    v = send(ed, 7, *bad)
    errs = levels(v, 'error')
    assert len(errs) == 9 and v['acks'] == {'v': 7}, errs
    assert errs[0] == 'object #0 no longer exists (removed or undone); pick one from the list'
    assert 'broken.json: invalid JSON at line 1' in errs[5] and "'unicorn'" in errs[6]
    assert ed.scene_graph['objects'] == [] and levels(v, 'info')[0].startswith('The graph is empty')
    v = send(ed, 8, {'op': 'add_object', 'name': 'circle'}, {'op': 'add_relationship', 's': 5, 'p': 'above', 'o': 5})
    assert levels(v, 'error') == [] and 'relates an object to itself' in levels(v, 'warning')[0]
    send(ed, 9, 'garbage')                                             # even a malformed batch is acknowledged
    ed._on_msg(ed.widget, {'type': 'actions', 'view': 'v', 'seq': 10, 'actions': None})
    assert ed.widget.view['acks'] == {'v': 10}
    ed._on_msg(ed.widget, {'something': 'else'})                     # not ours: ignored
    assert ed.widget.view['acks'] == {'v': 10}


def test_every_browser_value_is_checked_at_the_boundary(model):
    "Whatever the browser sends (wrong types, huge values, unknown keys), the answer is one short red line per action."
    ed = SceneGraphEditor(model, device='cpu')
    before = ed.scene_graph
    bad = [{'op': 'add_object', 'name': ['star']}, {'op': 'add_object', 'name': 'x' * 5000}, {'op': 'rename_object', 'id': 0, 'name': 7},
           {'op': 'set_relationship', 'id': 'r', 's': 2, 'p': 'above', 'o': 3}, {'op': 'set_box', 'id': 1, 'box': [0, 0, 'a', 1]},
           {'op': 'set_box', 'id': 1, 'box': [-0.05, 0, 1.05, 0.6]}, {'op': 'set_seed', 'seed': 2**63}, {'op': 'set_seed', 'seed': 3.7},
           {'op': 'show_seeds', 'on': 'yes'}, {'op': 'history', 'id': 10**9}, {'op': 'load_json', 'text': 5},
           {'op': 'load_json', 'text': '[' * 50 + ']' * 50, 'name': 'deep.json'}, {'op': 'restore', 'state': {'objects': []}},
           {'op': 'example', 'key': {'a': 1}}, {'op': 'checkpoint', 'key': None}]
    v = send(ed, 1, *bad)
    errs = levels(v, 'error')
    assert len(errs) == len(bad) and all(len(e) < 300 for e in errs), errs
    assert 'the box of grass #1: [-0.05, 0, 1.05, 0.6] is not' in errs[5] and 'deep.json is nested more than 32 levels' in errs[11]
    assert ed.scene_graph == before and v['acks'] == {'v': 1}


def test_seeds_beyond_2_53_travel_exactly(model):
    ed = SceneGraphEditor(model, device='cpu')
    v = send(ed, 1, {'op': 'set_seed', 'seed': '9007199254740993'})
    assert ed.seed == 9007199254740993 and v['seed'] == '9007199254740993'
    assert json.loads(v['scene_graph_json'])[0]['seed'] == 9007199254740993


def test_edit_in_place_history_strip_and_examples(model):
    ed = SceneGraphEditor(model, device='cpu')
    v = send(ed, 1, {'op': 'set_box', 'id': 2, 'box': [0.1, 0.1, 0.4, 0.4]}, {'op': 'rename_object', 'id': 2, 'name': 'star'},
             {'op': 'set_relationship', 'id': 4, 's': 3, 'p': 'right of', 'o': 2})
    assert ed.state.obj(2).box == (0.1, 0.1, 0.4, 0.4) and ed.scene_graph['relationships'] == [[3, 'right of', 2]]
    assert v['focus_rel'] == 4 and [e['label'] for e in v['strip']][-1] == 'change to "right of"'
    assert [e['label'] for e in v['strip']] == ['start', 'change to "right of"']   # one batch: one image
    v = send(ed, 2, {'op': 'history', 'id': v['strip'][0]['id']})
    assert ed.scene_graph['objects'] == ['sky', 'grass', 'circle', 'square'] and v['before_after']['label'] == 'back to start'
    v = send(ed, 3, {'op': 'example', 'key': 'shapes_demo 1'})
    assert (v['example'], v['example_edited']) == ('shapes_demo 1', False) and set(ed.widget.thumbs) == {k for k, _ in v['examples']}
    assert 'thumbs' not in v and all(set(e) == {'id', 'label', 'current'} for e in v['strip'])   # the view stays small
    sent = []
    ed.widget.send = lambda content, buffers=None: sent.append(content)                             # a view opened later asks
    ed._on_msg(ed.widget, {'type': 'strip_images', 'ids': [e['id'] for e in v['strip']]})
    assert sent[0]['type'] == 'strip_images' and len(sent[0]['images']) == len(v['strip'])
    assert all(u.startswith('data:image/png;base64,') for u in sent[0]['images'].values())
    assert len(json.dumps(v)) < 40_000, len(json.dumps(v))
    v = send(ed, 4, {'op': 'add_object', 'name': 'star'})
    assert (v['example'], v['example_edited']) == ('shapes_demo 1', True)
    v = send(ed, 5, {'op': 'clear'})
    assert v['example'] == ''


def test_undo_redo_give_back_the_same_pictures(model):
    ed = SceneGraphEditor(model, device='cpu')
    img0, svg0 = ed.image.copy(), ed.widget.view['svg']
    ed.add_object('star'); ed.add_relationship(5, 'above', 1); ed.set_box(5, [0.6, 0.05, 0.9, 0.3]); ed.set_seed(4)
    img1 = ed.image.copy()
    for _ in range(4): ed.undo()
    assert np.array_equal(ed.image, img0) and ed.widget.view['svg'] == svg0 and not ed.widget.view['can_undo']
    for _ in range(4): ed.redo()
    assert np.array_equal(ed.image, img1) and ed.widget.view['can_undo'] and not ed.widget.view['can_redo']
    ed.add_object('ring')
    assert not ed.widget.view['can_redo']


def test_saved_file_draws_the_same_image_with_sg2im_run_model(tmp_path):
    "What the editor shows is what sg2im-run-model writes from the saved JSON (shipped model, boxes and seed)."
    ckpt = REPO / 'data' / 'models' / 'shapes64.pt'
    if not ckpt.is_file(): pytest.skip('data/models/shapes64.pt missing')
    ed = SceneGraphEditor(checkpoint=ckpt, device='cpu')
    ed.add_object('star'); ed.set_box(5, [0.1, 0.1, 0.35, 0.4]); ed.set_seed(12)
    path = ed.save(tmp_path / 'graph.json')
    assert json.loads(path.read_text()) == [ed.scene_graph]
    run_model(checkpoint=str(ckpt), scene_graphs_json=str(path), output_dir=str(tmp_path / 'out'), device='cpu')
    assert np.array_equal(np.asarray(Image.open(tmp_path / 'out' / 'img000000.png').convert('RGB')), ed.image)


def test_switching_to_a_model_with_another_vocab(model):
    vocab = make_vocab(['__image__', 'cat', 'dog'], ['__in_image__', 'near'])
    tiny = Sg2ImModel(vocab, image_size=(16, 16), embedding_dim=8, gconv_dim=8, gconv_hidden_dim=16,
                      refinement_dims=(16, 8), mask_size=4).eval()
    ed = SceneGraphEditor(model, device='cpu', checkpoints={'tiny': tiny, UNTRAINED: None})
    assert [k for k, _ in ed.widget.view['checkpoints']] == ['model passed in', 'tiny', UNTRAINED]
    ed.add_object('star')
    v = send(ed, 1, {'op': 'checkpoint', 'key': 'tiny'})
    assert ed.checkpoint == 'tiny' and ed.scene_graph['objects'] == ['cat', 'dog'] and ed.image.shape == (16, 16, 3)
    assert 'cannot draw this graph' in levels(v, 'warning')[0] and not v['can_undo']
    assert v['object_names'] == ['cat', 'dog'] and v['predicates'] == ['near'] and v['examples'] == []
    assert min(o['id'] for o in v['objects']) > 5                    # ids are never given twice
    v = send(ed, 2, {'op': 'add_object', 'name': 'star'})
    assert "unknown object 'star'" in levels(v, 'error')[0]


def test_seed_grid_and_latency_benchmark(model):
    ed = SceneGraphEditor(model, device='cpu', n_seeds=3)
    v = send(ed, 1, {'op': 'show_seeds', 'on': True})
    assert [s for s, _ in v['seeds']['images']] == ['0', '1', '2'] and 'per pixel on average' in v['seeds']['note']
    v = send(ed, 2, {'op': 'show_seeds', 'on': False})
    assert v['seeds'] is None
    lat = editor_latency(ed, rounds=1)
    assert len(lat['graph edit']) == 4 and len(lat['box/seed']) == 2 and lat['graph edit max'] >= lat['graph edit median']
    print(f"\nkernel ms per action (untrained model): graph edit median {lat['graph edit median']:.0f}, "
          f"box/seed median {lat['box/seed median']:.0f}")


def test_notebook_runs_headless_and_leaves_the_readers_editor_fresh():
    "Run All of 31_widgets in a real kernel: no error, and the editor shown to the reader is untouched by the checks."
    nbformat = pytest.importorskip('nbformat'); nbclient = pytest.importorskip('nbclient')
    nb = nbformat.read(REPO / 'nbs' / '31_widgets.ipynb', as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(REPO / 'nbs')}},
                            store_widget_state=True).execute()
    outs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
    assert not [o for o in outs if o.get('output_type') == 'error']
    shown = [o['data']['application/vnd.jupyter.widget-view+json']['model_id'] for o in outs
             if 'application/vnd.jupyter.widget-view+json' in o.get('data', {})]
    assert len(shown) == 1                                             # the reader's editor, and only it
    state = nb.metadata['widgets']['application/vnd.jupyter.widget-state+json']['state'][shown[0]]['state']
    sg = json.loads(state['view']['scene_graph_json'])
    assert sg == [{'objects': ['sky', 'grass', 'circle', 'square'], 'relationships': [[2, 'left of', 3]],
                   'boxes': [None] * 4, 'seed': 0}]
    assert not state['view']['can_undo']


def test_without_graphviz_the_image_is_still_made(model, tmp_path, monkeypatch):
    "No `dot` on the PATH (a GPU box without Graphviz): the editor says so in red, and still generates the image."
    ed = SceneGraphEditor(model, {'objects': ['sky'], 'relationships': []}, device='cpu')
    monkeypatch.setenv('PATH', str(tmp_path))
    v = send(ed, 1, {'op': 'add_object', 'name': 'circle'})
    assert ed.scene_graph['objects'] == ['sky', 'circle']
    assert levels(v, 'error') == ["Graphviz 'dot' not found; install it (apt-get install graphviz / brew install graphviz)"]
    assert v['svg'] == '' and v['image'].startswith('data:image/png') and len(v['objects']) == 2
    monkeypatch.undo()
    v = send(ed, 2, {'op': 'add_object', 'name': 'star'})                 # Graphviz back: the drawing and no error
    assert not levels(v, 'error') and v['svg'].startswith('<svg')
