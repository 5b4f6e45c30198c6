"The interactive editor without a browser: drive SceneGraphEditor in-process, and execute nbs/31_widgets.ipynb in a kernel."
import time
from pathlib import Path
import numpy as np
import pytest
from sg2im_nb.inference import untrained_shapes_model
from sg2im_nb.widgets import SceneGraphEditor

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def model(): return untrained_shapes_model()


def test_widget_values_drive_the_editor(model):
    ed = SceneGraphEditor(model, {'objects': ['sky', 'grass', 'circle'], 'relationships': [[0, 'above', 1]], 'seed': 3})
    assert ed.seed == 3 and ed.image_png[:4] == b'\x89PNG' and ed.graph_png[:4] == b'\x89PNG'
    img, graph = ed.image_png, ed.graph_png
    ed.w_seed.value = 4                                   # the seed slider
    assert ed.image_png != img and ed.graph_png == graph  # new noise, same graph
    img = ed.image_png
    ed.w_resample.click()                                 # the resample button
    assert ed.seed == 5 and ed.image_png != img
    ed.w_name.value = 'star'; ed.w_add_obj.click()        # add an object with the dropdown + button
    assert ed.objects == ['sky', 'grass', 'circle', 'star'] and ed.graph_png != graph
    graph, img = ed.graph_png, ed.image_png
    ed.w_subj.value, ed.w_pred.value, ed.w_obj.value = 3, 'above', 2
    ed.w_add_rel.click()                                  # add a relationship with the three dropdowns
    assert ed.relationships[-1] == [3, 'above', 2] and ed.graph_png != graph and ed.image_png != img
    img, lay = ed.image_png, ed.layout_png
    ed.w_objects.value = 2; ed.w_box[1].value = 0.6       # move the y slider of the circle
    assert ed.w_pin.value and ed.boxes[2][1] == pytest.approx(0.6)
    assert ed.image_png != img and ed.layout_png != lay
    np.testing.assert_allclose(ed.result.boxes[2], ed.boxes[2], atol=1e-6)
    assert ed.scene_graph['boxes'][2] == ed.boxes[2] and '(pinned)' in ed.w_objects.options[2][0]
    ed.w_pin.value = False                                # unpin: the model predicts it again
    assert ed.boxes[2] is None
    ed.w_rels.value = 0; ed.w_del_rel.click()             # remove a relationship
    assert ed.relationships == [[3, 'above', 2]]
    ed.w_objects.value = 0; ed.w_del_obj.click()          # remove an object: indices shift
    assert ed.objects == ['grass', 'circle', 'star'] and ed.relationships == [[2, 'above', 1]]
    assert isinstance(ed.last_update_ms, float) and ed.last_update_ms > 0


def test_update_latency(model):
    "Median update (generate + PNGs; graph unchanged) of the small model; the target is < 200 ms on 2 CPU cores."
    ed = SceneGraphEditor(model)
    for _ in range(7): ed.resample()
    ms = float(np.median(ed.history_ms[-7:]))
    print(f'median update latency: {ms:.1f} ms')
    assert ms < 1000  # generous bound against slow CI machines; typical is far lower


def test_notebook_runs_headless():
    "Execute the whole interactive notebook in a real kernel (nbclient), as a user would with 'Run All'."
    nbformat = pytest.importorskip('nbformat'); nbclient = pytest.importorskip('nbclient')
    nb = nbformat.read(REPO / 'nbs' / '31_widgets.ipynb', as_version=4)
    t0 = time.time()
    nbclient.NotebookClient(nb, timeout=120, kernel_name='python3', resources={'metadata': {'path': str(REPO / 'nbs')}}).execute()
    outs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
    assert not [o for o in outs if o.get('output_type') == 'error']
    assert any('application/vnd.jupyter.widget-view+json' in o.get('data', {}) for o in outs)  # the editor was displayed
    assert time.time() - t0 < 120
