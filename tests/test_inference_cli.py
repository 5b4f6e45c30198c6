"The sg2im-run-model command (sg2im_nb.inference): outputs, pinned boxes, seeds, and one-line errors for bad input."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from sg2im_nb.inference import main, run_model, generate, untrained_shapes_model
from sg2im_nb.cli import run_cli

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / 'scene_graphs' / 'shapes_demo.json'
GOOD = {'objects': ['sky', 'grass', 'circle'], 'relationships': [[0, 'above', 1], [2, 'above', 1]], 'seed': 0}


def _cli(*args, cwd=REPO):
    env = {k: v for k, v in os.environ.items() if k != 'SG2IM_CHECKPOINT'}
    return subprocess.run([sys.executable, '-m', 'sg2im_nb.inference', *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


def _pngs(d): return sorted(p.name for p in Path(d).glob('*.png')) if Path(d).exists() else []


def test_default_command_works(tmp_path):
    "`sg2im-run-model --scene_graphs_json scene_graphs/shapes_demo.json` needs nothing else (published flag spelling)."
    res = _cli('--scene_graphs_json', 'scene_graphs/shapes_demo.json', '--output_dir', tmp_path / 'out', '--draw_scene_graphs', 1)
    assert res.returncode == 0, res.stderr
    n = len(json.loads(DEMO.read_text()))
    assert _pngs(tmp_path / 'out') == sorted([f'img{i:06d}.png' for i in range(n)] + [f'sg{i:06d}.png' for i in range(n)])
    im = Image.open(tmp_path / 'out' / 'img000000.png')
    assert im.mode == 'RGB' and im.size == (64, 64)
    assert Image.open(tmp_path / 'out' / 'sg000000.png').size[0] > 64  # a real Graphviz drawing
    assert f'{n}/{n}' in res.stderr and 'scene graphs' in res.stderr  # the progress bar
    assert not list((tmp_path / 'out').glob('.*'))  # no temporary files left behind
    from sg2im_nb.cli import file_mode
    assert (tmp_path / 'out' / 'img000000.png').stat().st_mode & 0o777 == file_mode()  # not mkstemp's 0600


def test_cli_error_process_level(tmp_path):
    "As a process: exit code 2, one stderr line, no traceback, nothing written."
    bad = tmp_path / 'bad.json'; bad.write_text(json.dumps([GOOD, {'objects': ['circle', 'sqaure']}]))
    res = _cli('--scene_graphs_json', bad, '--output_dir', tmp_path / 'out')
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and 'Traceback' not in res.stderr + res.stdout
    assert "unknown object 'sqaure'" in res.stderr and "'square'" in res.stderr
    assert not (tmp_path / 'out').exists()


def _not_a_checkpoint(tmp_path):
    p = tmp_path / 'notes.pt'; p.write_text('this is not a checkpoint'); return p

def _other_torch_file(tmp_path):
    p = tmp_path / 'weights.pt'; torch.save({'weights': torch.zeros(2)}, p); return p

BAD = {  # name: (file contents or None, extra args, text the error must contain)
    'unknown object': ([GOOD, {'objects': ['circle', 'sqaure'], 'relationships': []}], [], "did you mean 'square'"),
    'unknown predicate': ([{'objects': ['circle', 'square'], 'relationships': [[0, 'lft of', 1]]}], [], "unknown predicate 'lft of'"),
    'index out of range': ([{'objects': ['circle', 'square'], 'relationships': [[0, 'above', 2]]}], [], 'out of range'),
    'negative index': ([{'objects': ['circle', 'square'], 'relationships': [[-1, 'above', 1]]}], [], 'out of range'),
    'malformed relationship': ([{'objects': ['circle'], 'relationships': [[0, 'above']]}], [], 'is not [subject_index'),
    'empty objects': ([GOOD, {'objects': [], 'relationships': []}], [], 'non-empty "objects"'),
    'non-list top level': ({'objects': ['circle']}, [], 'not a list'),
    'empty list': ([], [], 'empty list'),
    'graph not an object': ([GOOD, 'circle'], [], 'scene graph 1 is a str'),
    'malformed JSON': ('[{"objects": ["circle"],\n  "relationships": [[0, "above" 0]]}]', [], 'line 2 column'),
    'boxes wrong length': ([dict(GOOD, boxes=[[0, 0, 1, 1]])], [], 'one entry per object (3)'),
    'box out of range': ([dict(GOOD, boxes=[[0, 0, 1, 1.2], None, None])], [], 'box 0'),
    'box inverted': ([dict(GOOD, boxes=[None, [0.5, 0, 0.2, 1], None])], [], 'box 1'),
    'bad seed': ([dict(GOOD, seed='one')], [], '"seed"'),
    'missing json': (None, [], 'scene graph file not found'),
    'checkpoint is text': ([GOOD], ['--checkpoint', _not_a_checkpoint], 'not a PyTorch checkpoint'),
    'checkpoint not sg2im': ([GOOD], ['--checkpoint', _other_torch_file], 'not an sg2im checkpoint'),
    'checkpoint missing': ([GOOD], ['--checkpoint', 'nowhere.pt'], 'checkpoint not found'),
    'bad flag value': ([GOOD], ['--draw_scene_graphs', '3'], 'must be 0 or 1'),
    'unknown device': ([GOOD], ['--device', 'tpu'], "unknown device 'tpu'"),
}


@pytest.mark.parametrize('case', list(BAD))
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    "Every bad input: SystemExit(2), exactly one `error: ...` line on stderr, no output folder."
    monkeypatch.delenv('SG2IM_CHECKPOINT', raising=False)
    content, extra, expect = BAD[case]
    path = tmp_path / 'graphs.json'
    if content is not None: path.write_text(content if isinstance(content, str) else json.dumps(content))
    extra = [x(tmp_path) if callable(x) else x for x in extra]
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as e: run_cli(main, ['--scene_graphs_json', str(path), '--output_dir', str(out), *map(str, extra)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith('error: '), err
    assert expect in err, err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message for a missing GPU')
def test_gpu_missing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: run_cli(main, ['--scene_graphs_json', str(DEMO), '--output_dir', str(tmp_path / 'o'), '--device', 'gpu'])
    assert e.value.code == 2 and 'CUDA is not available' in capsys.readouterr().err


def test_pinned_boxes_seeds_and_layouts(tmp_path, monkeypatch):
    monkeypatch.delenv('SG2IM_CHECKPOINT', raising=False)
    src = REPO / 'scene_graphs' / 'shapes_pinned_boxes.json'
    a = run_model(None, src, tmp_path / 'a', draw_scene_graphs=0, save_layouts=1, device='cpu')
    b = run_model(None, src, tmp_path / 'b', draw_scene_graphs=0, save_layouts=1, device='cpu')
    assert [p.name for p in a] == ['img000000.png', 'layout000000.png']
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]  # the graph's seed makes runs repeatable
    assert Image.open(a[1]).size == (256, 256)
    model = untrained_shapes_model()
    sg = json.loads(src.read_text())[0]
    r = generate(model, sg)[0]
    np.testing.assert_allclose(r.boxes[:3], np.array(sg['boxes'][:3]), atol=1e-6)  # pinned boxes are used as given
    r2 = generate(model, dict(sg, seed=sg['seed'] + 1))[0]
    assert (r.image != r2.image).any()  # another seed, another image
    free = generate(model, {k: v for k, v in sg.items() if k != 'boxes'})[0]
    np.testing.assert_allclose(free.boxes[3], r.boxes[3], atol=1e-6)  # the unpinned box is the prediction


def test_every_shapes_scene_graph_runs(tmp_path, monkeypatch):
    monkeypatch.delenv('SG2IM_CHECKPOINT', raising=False)
    model = untrained_shapes_model()
    for f in sorted((REPO / 'scene_graphs').glob('shapes_*.json')):
        rs = generate(model, json.loads(f.read_text()))
        assert all(r.image.shape == (64, 64, 3) and r.image.dtype == np.uint8 for r in rs), f



class _BarWatcher:
    "Stands for stderr: at every progress-bar line, notes (graphs done, files in `folder`)."
    def __init__(self, folder): self.folder, self.seen = Path(folder), []
    def write(self, text):
        import re
        for done in re.findall(r'scene graphs:.*?(\d+)/\d+', text):
            files = sorted(q.name for q in self.folder.glob('*.png')) if self.folder.exists() else []
            self.seen.append((int(done), files))
        return len(text)
    def flush(self): pass


def test_files_written_graph_by_graph(tmp_path, monkeypatch):
    "Issue 23, 14: when the progress bar says k graphs are done, their files are already on disk (not all at the end)."
    monkeypatch.delenv('SG2IM_CHECKPOINT', raising=False)
    n = 12
    src = tmp_path / 'many.json'; src.write_text(json.dumps([dict(GOOD, seed=i) for i in range(n)]))
    watcher = _BarWatcher(tmp_path / 'out')
    monkeypatch.setattr(sys, 'stderr', watcher)
    run_model(None, src, tmp_path / 'out', draw_scene_graphs=1, device='cpu')
    monkeypatch.undo()
    mid = [(k, files) for k, files in watcher.seen if 0 < k < n]
    assert mid, watcher.seen  # the bar moved while the run went on
    for k, files in mid:
        assert {f'img{i:06d}.png' for i in range(k)} | {f'sg{i:06d}.png' for i in range(k)} <= set(files), (k, files)
    assert watcher.seen[-1][0] == n and len(watcher.seen[-1][1]) == 2 * n


def test_ctrl_c_one_line_whole_files(tmp_path):
    "Ctrl-C during a long sg2im-run-model: one line, exit 130, the finished graphs' files kept, no temporary file left."
    src = tmp_path / 'many.json'; src.write_text(json.dumps([dict(GOOD, seed=i) for i in range(400)]))
    out = tmp_path / 'out'
    env = {k: v for k, v in os.environ.items() if k != 'SG2IM_CHECKPOINT'}
    p = subprocess.Popen([sys.executable, '-m', 'sg2im_nb.inference', '--scene_graphs_json', str(src), '--output_dir', str(out),
                          '--draw_scene_graphs', '1', '--device', 'cpu'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=REPO, env=env)
    try:
        while p.poll() is None and not (out / 'sg000001.png').exists(): time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130, err[-2000:]
    lines = [l for l in err.splitlines() if l.strip() and 'graph/s]' not in l and 's/graph]' not in l]
    assert lines == ['error: interrupted (Ctrl-C)'], err[-2000:]
    names = sorted(q.name for q in out.iterdir())
    assert not [q for q in names if q.startswith('.')], names  # no temporary file left
    assert 2 <= len(names) < 800 and all(Image.open(out / q).size[0] > 0 for q in names)  # whole PNGs, not all of them
