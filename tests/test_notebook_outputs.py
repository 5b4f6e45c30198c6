"""The notebooks' stored outputs are what the documentation site shows: they must not show the machine they ran on.

Every text a notebook stores (streams, text/plain, markdown and HTML results, error outputs, the text of stored
widgets) is scanned for machine paths (/tmp/, /work/, /root/, /home/, /Users/, C:\\, /private/var/, site-packages)
and for torch.profiler tables (`Self CPU time total`, its dashed column rules). Each notebook is one test case, so a
failure names the notebook and quotes the offending lines."""
import json, re
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parent.parent
NBS = sorted((REPO / 'nbs').glob('*.ipynb'))

MACHINE = re.compile(r'/tmp/|/work/|/root/|/home/|/Users/|/private/var/|\b[A-Za-z]:\\(?=[\w.$ -])|(?:site|dist)-packages')
PROFILER = re.compile(r'Self (?:CPU|CUDA|XPU|MPS|Device) time total|^\s*-{6,}(?: {2}-{6,}){2,}\s*$', re.M)


def _text(v) -> str: return ''.join(v) if isinstance(v, list) else v if isinstance(v, str) else ''


def _strings(o):
    "Every string inside a JSON value."
    if isinstance(o, str): yield o
    elif isinstance(o, dict):
        for v in o.values(): yield from _strings(v)
    elif isinstance(o, list):
        for v in o: yield from _strings(v)


def stored_texts(nb:dict):
    "(where, text) for every text a notebook stores as output: cell outputs by kind and MIME type, then widget state."
    for k, cell in enumerate(nb.get('cells', [])):
        for j, out in enumerate(cell.get('outputs', [])):
            kind, where = out.get('output_type'), f'cell {k} output {j}'
            if kind == 'stream': yield f'{where} ({out.get("name", "stream")})', _text(out.get('text'))
            elif kind == 'error':
                yield f'{where} (error)', '\n'.join([f'{out.get("ename")}: {out.get("evalue")}', *out.get('traceback', [])])
            for mime, data in (out.get('data') or {}).items():
                if mime.startswith('image/') and not mime.startswith('image/svg'): continue  # base64 pictures
                yield f'{where} ({mime})', _text(data) if not isinstance(data, dict) else '\n'.join(_strings(data))
    widgets = (nb.get('metadata', {}).get('widgets') or {}).get('application/vnd.jupyter.widget-state+json') or {}
    for model_id, model in (widgets.get('state') or {}).items():
        texts = [s for s in _strings(model.get('state', {})) if not s.startswith('IPY_MODEL_')]
        if texts: yield f'widget {model_id[:8]} ({model.get("model_name", "?")})', '\n'.join(texts)


def offending_lines(nb:dict) -> list:
    "'where: line' for every stored output line that shows a machine path or a profiler table."
    bad = []
    for where, text in stored_texts(nb):
        for line in text.splitlines():
            if MACHINE.search(line) or PROFILER.search(line): bad.append(f'{where}: {line.strip()[:200]}')
    return bad


@pytest.mark.parametrize('nb_path', NBS, ids=[p.stem for p in NBS])
def test_outputs_show_no_machine(nb_path):
    bad = offending_lines(json.loads(nb_path.read_text()))
    assert not bad, f'{nb_path.name}: {len(bad)} stored output line(s) show the machine (re-run after hiding paths, or clear):\n' + '\n'.join(bad[:40])


def test_the_scanner_finds_what_it_should():
    out = lambda **o: {'cells': [{'cell_type': 'code', 'source': '', 'outputs': [o]}]}
    assert offending_lines(out(output_type='stream', name='stdout', text=['saved to /tmp/abc/x.pt\n']))
    assert offending_lines(out(output_type='stream', name='stderr', text='  File "/work/main/.venv/lib/python3.11/site-packages/torch/x.py"'))
    assert offending_lines(out(output_type='execute_result', data={'text/plain': ["PosixPath('/home/me/data')"]}))
    assert offending_lines(out(output_type='display_data', data={'text/html': ['<a href="file:///Users/me/x">x</a>']}))
    assert offending_lines(out(output_type='error', ename='OSError', evalue=r'C:\Users\me\file', traceback=[]))
    assert offending_lines(out(output_type='stream', name='stdout', text='Self CPU time total: 1.2s'))
    assert offending_lines(out(output_type='stream', name='stdout', text='-------------  ------------  ------------\n'))
    assert offending_lines({'cells': [], 'metadata': {'widgets': {'application/vnd.jupyter.widget-state+json': {
        'state': {'abc': {'model_name': 'HTMLModel', 'state': {'value': 'wrote /root/out.png'}}}}}}})
    clean = out(output_type='stream', name='stdout', text='wrote data/models/shapes64.pt; | --- | --- |\nratio 1/2, 3/4 done\n')
    assert not offending_lines(clean)
    assert not offending_lines(out(output_type='display_data', data={'image/png': 'L3RtcC8=', 'text/plain': ['<Figure>']}))
