"""Build README.md from nbs/index.ipynb (quarto is not available here): markdown cells as they are, code cells
that are not hidden as python blocks, with their text outputs. Run from anywhere: python .ci/build_readme.py"""
import json, pathlib, re

root = pathlib.Path(__file__).resolve().parent.parent
nb = json.loads((root / 'nbs' / 'index.ipynb').read_text())
hidden = re.compile(r'^\s*#\|\s*(hide|export|exporti|exports|default_exp|eval:\s*false)\b', re.M)
parts = ['<!-- Generated from nbs/index.ipynb by .ci/build_readme.py: edit the notebook, not this file. -->']
for cell in nb['cells']:
    src = ''.join(cell['source']).rstrip()
    if not src: continue
    if cell['cell_type'] == 'markdown':
        parts.append(src)
    elif cell['cell_type'] == 'code' and not hidden.search(src):
        code = '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith('#|'))
        parts.append(f'```python\n{code}\n```')
        for out in cell.get('outputs', []):
            text = ''.join(out.get('text', '') or out.get('data', {}).get('text/plain', ''))
            if text.strip(): parts.append(f'```\n{text.rstrip()}\n```')
(root / 'README.md').write_text('\n\n'.join(parts) + '\n')
