"""Build README.md from nbs/index.ipynb (quarto is not available here): markdown cells as they are, code cells
that are not hidden as python blocks, with their text outputs. The marker `<!-- course -->` in a markdown cell becomes
the course table and the Reference and Engineering lists (.ci/docs/course.py, from .ci/docs/course.json), linked to
the notebooks. Run from anywhere: python .ci/build_readme.py"""
import json, pathlib, re, sys

root = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root / '.ci' / 'docs'))
from course import course_markdown
COURSE = '<!-- course -->'
nb = json.loads((root / 'nbs' / 'index.ipynb').read_text())
hidden = re.compile(r'^\s*#\|\s*(hide|export|exporti|exports|default_exp|eval:\s*false)\b', re.M)
parts = ['<!-- Generated from nbs/index.ipynb by .ci/build_readme.py: edit the notebook, not this file. -->']
for cell in nb['cells']:
    src = ''.join(cell['source']).rstrip()
    if not src: continue
    if cell['cell_type'] == 'markdown':
        if COURSE in src: src = src.replace(COURSE, course_markdown(root / 'nbs', lambda nb: f'nbs/{nb.name}').rstrip())
        parts.append(src)
    elif cell['cell_type'] == 'code' and not hidden.search(src):
        code = '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith('#|'))
        parts.append(f'```python\n{code}\n```')
        for out in cell.get('outputs', []):
            text = ''.join(out.get('text', '') or out.get('data', {}).get('text/plain', ''))
            if text.strip(): parts.append(f'```\n{text.rstrip()}\n```')
(root / 'README.md').write_text('\n\n'.join(parts) + '\n')
