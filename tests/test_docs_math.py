"""The math of the notebooks' markdown converts to MathML (no browser needed; the site test checks how it shows).

Every `$...$` and `$$...$$` of every notebook must convert with .ci/docs/texmath.py, into MathML without an error
element nor TeX left over; the rules that find the math leave code and prices alone."""
import json, re, sys
from pathlib import Path
from xml.etree import ElementTree as ET
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / '.ci' / 'docs'))
import texmath  # needs latex2mathml: pip install -e ".[docs]" (or .[dev])


def notebook_equations():
    "[(notebook name, equation)] for every equation of every notebook's markdown cells."
    out = []
    for nb in sorted((REPO / 'nbs').glob('*.ipynb')):
        for cell in json.loads(nb.read_text())['cells']:
            if cell['cell_type'] == 'markdown':
                src = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
                out += [(nb.name, eq) for eq in texmath.equations(src)]
    return out


def test_every_equation_converts():
    eqs = notebook_equations()
    assert len(eqs) > 100  # the model's notebooks hold a good deal of math
    bad = []
    for name, eq in eqs:
        try: html = texmath.to_mathml(eq.tex, eq.display)
        except texmath.MathError as e: bad.append(f'{name}: {eq.tex!r}: {e}'); continue
        math = ET.fromstring(re.sub(r'&#x[0-9A-F]+;', 'x', html))[0]  # the <math> inside its span
        if math.tag != 'math' or math.get('display') != ('block' if eq.display else 'inline'): bad.append(f'{name}: {eq.tex!r}: {html[:80]}')
        if any(el.tag == 'merror' for el in math.iter()): bad.append(f'{name}: {eq.tex!r}: an error element')
    assert not bad, '\n'.join(bad)


@pytest.mark.parametrize('md, found', [
    ('a $x_1$ and $$\\frac{a}{b}$$', [('x_1', False), ('\\frac{a}{b}', True)]),
    ('$$\na_1\n  + b\n$$', [('a_1\n  + b', True)]),                          # display math over several lines
    ('it costs $5 or $10, and $x$', [('x', False)]),                          # prices are not math
    ('`$HOME` and ``a $b$ c`` then $y$', [('y', False)]),                     # nor is code
    ('```bash\n$ python -m x $y$\n```\n$z$', [('z', False)]),                  # fenced code
    ('an escaped \\$ and $1+1$', [('1+1', False)]),
    ('$a$5 is not closed', []), ('$ a$ opens on a space', []), ('two\n\nparagraphs $a\n\nb$', []),
])
def test_finding_the_math(md, found):
    assert [(e.tex, e.display) for e in texmath.equations(md)] == found


def test_markdown_cannot_touch_the_mathml():
    "Underscores, stars and bars inside math reach the page as character references, never as markdown."
    html = texmath.to_mathml(r'\text{of\_bound} = a_*|b|', False)
    assert not re.search(r'>[^<]*[_*|\\][^<]*<', html), html
    with pytest.raises(texmath.MathError): texmath.to_mathml(r'\notacommand x', False)
    with pytest.raises(texmath.MathError): texmath.to_mathml(r'a & b', True)
