"""TeX math in the notebooks' markdown cells, typeset as MathML when the site is built (why: see build.py's header).

- `equations(md)` finds the math of a markdown text: display `$$...$$` (may span lines) and inline `$...$`, never in
  fenced code blocks or code spans, never an escaped `\\$`; an inline `$` opens math only when a non-space follows it
  and closes it only when a non-space precedes it and no digit follows it, so "costs $5 or $10" stays text.
- `to_mathml(tex, display)` converts one equation with latex2mathml, after rewriting the few constructs it lacks
  (`aligned`, `\\operatorname`), and mends what Chromium's MathML Core does not draw (see `_mend`); an equation that
  does not convert cleanly raises `MathError`.
- `write_font(pages)` writes the math font the site's CSS asks for: STIX Two Math, cut down to what the pages use.
- `protect(md)` puts a placeholder where each equation stands, so that the build's own link rewriting and markdown
  never see the TeX (no `_` or `*` turned into emphasis); `restore` puts the MathML there afterwards. In the MathML's
  text every character but ASCII letters, digits and spaces is a character reference: markdown finds nothing in it.

This file is named texmath.py, not math.py: build.py's folder is on sys.path and would hide Python's math module."""
import html, re
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

_re_fence = re.compile(r'^[ \t]*(`{3,}|~{3,})', re.M)
_re_blank = re.compile(r'\n[ \t]*\n')
# TeX the converter lacks, rewritten to TeX it has (same look)
REWRITES = [(re.compile(r'\\begin\{aligned\}'), r'\\begin{align*}'), (re.compile(r'\\end\{aligned\}'), r'\\end{align*}'),
            (re.compile(r'\\operatorname\{'), r'\\mathrm{'),
            # latex2mathml keeps a command after \big... as text (`\big\lVert` shows "\lVert"): give it the character
            (re.compile(r'(\\[bB]igg?[lrm]?)\s*\\(lVert|rVert|Vert|\||lvert|rvert|vert|langle|rangle|\{|\})(?![a-zA-Z])'),
             lambda m: m.group(1) + {'lVert': '‖', 'rVert': '‖', 'Vert': '‖', '|': '‖', 'lvert': '|', 'rvert': '|', 'vert': '|',
                                     'langle': '⟨', 'rangle': '⟩', '{': '{', '}': '}'}[m.group(2)]),
            (re.compile(r'\\text\{([^{}]*)\}'), lambda m: r'\text{' + m.group(1).replace('\\_', '_') + '}')]
# `\mathbf` comes out as mathvariant="bold", which Chromium ignores: use the Unicode bold letters and digits instead
_BOLD = {**{chr(ord('A') + i): chr(0x1D400 + i) for i in range(26)}, **{chr(ord('a') + i): chr(0x1D41A + i) for i in range(26)},
         **{chr(ord('0') + i): chr(0x1D7CE + i) for i in range(10)}}
_PUNCT = set(',;:!')  # the converter gives these as identifiers; as operators they get TeX's punctuation spacing
_PRIMES = ('\u2032', '\u2033', '\u2034')
_ROWS = ('math', 'mrow', 'mtd', 'msqrt', 'mstyle', 'mpadded', 'mphantom')  # elements that lay out their children in a row


class MathError(ValueError): pass


@dataclass
class Equation:
    start: int     # where `$` or `$$` opens, in the markdown text
    end: int       # just after the closing `$` or `$$`
    tex: str
    display: bool


def _close_inline(md:str, i:int):
    "Index of the `$` that closes inline math opened at `i`, or None."
    if i + 1 >= len(md) or md[i + 1].isspace() or md[i + 1] == '$': return None
    j = i + 1
    while j < len(md):
        c = md[j]
        if c == '\\': j += 2; continue
        if c == '\n' and _re_blank.match(md, j): return None
        if c == '$':
            if md[j - 1].isspace() or (j + 1 < len(md) and md[j + 1].isdigit()): return None
            return j
        j += 1
    return None


def _close_display(md:str, i:int):
    "Index of the `$$` that closes display math opened at `i`, or None."
    j = i + 2
    while j < len(md) - 1:
        if md[j] == '\\': j += 2; continue
        if md[j:j + 2] == '$$': return j if md[i + 2:j].strip() else None
        if md[j] == '\n' and _re_blank.match(md, j): return None
        j += 1
    return None


def equations(md:str) -> list:
    "Every equation of a markdown text, in order (see the module's doc for the rules)."
    out, i, n = [], 0, len(md)
    while i < n:
        c = md[i]
        if (i == 0 or md[i - 1] == '\n') and (m := _re_fence.match(md, i)):
            fence = m.group(1)  # a fenced code block: skip to the line that closes it (or to the end)
            close = re.compile(r'^[ \t]*' + re.escape(fence[0]) + '{' + str(len(fence)) + r',}[ \t]*$', re.M).search(md, m.end())
            i = close.end() if close else n; continue
        if c == '`':
            run = re.match(r'`+', md[i:]).group(0)
            close = re.compile(r'(?<!`)' + run + r'(?!`)').search(md, i + len(run))
            i = close.end() if close else i + len(run); continue
        if c == '\\': i += 2; continue
        if md.startswith('$$', i):
            j = _close_display(md, i)
            if j is None: i += 2; continue
            out.append(Equation(i, j + 2, md[i + 2:j].strip(), True)); i = j + 2; continue
        if c == '$':
            j = _close_inline(md, i)
            if j is None: i += 1; continue
            out.append(Equation(i, j + 1, md[i + 1:j], False)); i = j + 1; continue
        i += 1
    return out


def _is_name(el) -> bool:
    "A function name (`\\log`, `\\max`, `\\exp`), alone or carrying scripts (`\\max_i`)."
    if el.tag in ('msub', 'msup', 'msubsup', 'munder', 'mover', 'munderover') and len(el): el = el[0]
    return el.tag in ('mi', 'mo') and bool(re.fullmatch(r'[A-Za-z]{2,}', el.text or ''))


def _align_columns(table):
    "MathML Core has no `columnalign` nor `columnspacing`: write them as the cells' CSS."
    gaps = (table.attrib.pop('columnspacing', '') or '').split()
    for row in table:
        for j, cell in enumerate(row):
            # Chromium aligns a cell's math by the -webkit- values only; Firefox reads columnalign, kept
            style = [f'text-align: -webkit-{cell.get("columnalign")}'] if cell.get('columnalign') in ('left', 'right') else []
            if gaps: style.append(f'padding-left: {gaps[min(j, len(gaps)) - 1] if j else "0"}; padding-right: 0')
            if style: cell.set('style', '; '.join(style))


def _mend(node):
    """Fix, in place, what latex2mathml writes that Chromium's MathML Core draws wrongly or not at all:
    bold by `mathvariant`, `\\sim` as an identifier `~`, punctuation as identifiers, `\\!` as a named space, accents
    without `accent`, `\\overline`'s bar that does not stretch, primes drawn at script size (a speck), `|` spaced as a
    binary operator, and function names spaced as operators (`max (`) or not at all (`logD`)."""
    for child in list(node): _mend(child)
    tag = node.tag
    if node.get('mathvariant') == 'bold':
        node.text = ''.join(_BOLD.get(ch, ch) for ch in node.text or ''); del node.attrib['mathvariant']
    if tag == 'mi' and node.text == '~': node.tag, node.text = 'mo', '\u223c'  # \sim
    elif tag == 'mi' and node.text in _PUNCT: node.tag = 'mo'
    elif tag == 'mo' and node.text == '/': node.set('lspace', '0'); node.set('rspace', '0')  # x/y: an ordinary symbol in TeX
    elif tag == 'mo' and node.text in ('|', '\u2016'):  # |x|, \lVert x \rVert: TeX neither stretches nor spaces them
        node.set('stretchy', 'false'); node.set('lspace', '0'); node.set('rspace', '0')
    elif tag == 'mi' and node.text and len(node.text) == 1 and '\u0391' <= node.text <= '\u03a9':
        node.set('mathvariant', 'normal')  # capital Greek is upright in TeX
    elif tag == 'mo' and _is_name(node): node.tag = 'mi'; node.attrib.clear()
    elif tag == 'mspace' and not re.match(r'^-?[\d.]+(em|ex|px|pt)$', node.get('width', '0em')):
        node.set('width', '0em')  # \! (a negative thin space): MathML Core has no negative space
    elif tag == 'mover' and len(node) == 2 and node[1].tag == 'mo' and node[1].text in ('\u2015', '\u00af'):
        base = node[0]  # \overline: its bar does not stretch far enough in Chromium; a border does
        node.clear(); node.tag = 'mrow'; node.set('style', 'border-top: 0.06em solid; padding-top: 0.12em')
        node.extend(list(base) if base.tag == 'mrow' else [base])
    elif tag == 'mover' and len(node) == 2 and node[1].tag == 'mo':
        accent = node[1]  # \hat, \tilde: the spacing modifier letters sit centred over the letter, `^` and `~` do not
        accent.text = {'^': '\u02c6', '~': '\u02dc'}.get(accent.text, accent.text)
        accent.set('stretchy', 'false'); node.set('accent', 'true')
    elif tag in ('msup', 'msubsup') and node[-1].tag in ('mi', 'mo') and node[-1].text in _PRIMES:
        node[-1].tag = 'mo'; node[-1].set('scriptlevel', '0')  # v': at script size the font's prime is a speck
    elif tag == 'mtable':
        _align_columns(node)
    if tag in _ROWS:
        for k, el in enumerate(node):  # a sign that starts a row or follows an operator is unary: no space around it
            prev = next((c for c in reversed(node[:k]) if c.tag != 'mspace'), None)
            if el.tag == 'mo' and el.text in ('\u2212', '+', '-', '\u00b1') and (
                    prev is None or (prev.tag == 'mo' and prev.text not in (')', ']', '}', '|', '\u2016'))):
                el.set('lspace', '0'); el.set('rspace', '0')
        for k in range(len(node) - 1, -1, -1):  # a thin space after a function name, unless a bracket follows (TeX)
            nxt = node[k + 1] if k + 1 < len(node) else None
            if _is_name(node[k]) and nxt is not None and not (nxt.tag == 'mo' and (nxt.text or '') in '([{\u27e8'):
                node.insert(k + 1, ET.Element('mspace', width='0.167em'))


def to_mathml(tex:str, display:bool) -> str:
    "MathML for one equation; MathError when the converter fails or leaves TeX it did not understand."
    from latex2mathml.converter import convert
    src = tex
    for pat, rep in REWRITES: src = pat.sub(rep, src)
    try: xml = convert(src, display='block' if display else 'inline')
    except Exception as e: raise MathError(f'{type(e).__name__}: {e}') from None
    xml = xml.replace(' xmlns="http://www.w3.org/1998/Math/MathML"', '', 1)
    try: root = ET.fromstring(xml)
    except ET.ParseError as e: raise MathError(f'the converter wrote bad XML ({e})') from None
    for el in root.iter():
        text = (el.text or '') + ''.join(c.tail or '' for c in el)
        if el.tag == 'merror': raise MathError('the converter wrote an error element')
        if '\\' in text: raise MathError(f'unknown command {text.strip()!r}')
        if '&' in text and el.tag != 'mtext': raise MathError('`&` outside an alignment (use aligned, cases)')
        if el.get('linebreak') == 'newline': raise MathError('`\\\\` outside an alignment (use aligned)')
        if el.tag == 'mo' and not (el.text or '').strip() and not len(el): raise MathError('an empty operator')
    _mend(root)
    # in a span: a line that starts with <math> would otherwise open a raw HTML block and cut the paragraph in two
    return f'<span class="nb-math-{"display" if display else "inline"}">{_escape_text(ET.tostring(root, encoding="unicode"))}</span>'


def _escape_text(xml:str) -> str:
    """Every character between the tags but ASCII letters, digits and spaces as a character reference: markdown then finds
    no `_`, `*`, `|` or `\\` to act on."""
    return re.sub(r'>([^<]+)<', lambda m: '>' + ''.join(c if c.isascii() and (c.isalnum() or c == ' ') else f'&#x{ord(c):X};' for c in html.unescape(m.group(1))) + '<', xml)


_re_token = re.compile('\ue000(\\d+)\ue001')


def protect(md:str) -> tuple:
    "(markdown with a placeholder for every equation, the equations)."
    eqs = equations(md)
    for k, eq in reversed(list(enumerate(eqs))): md = md[:eq.start] + f'\ue000{k}\ue001' + md[eq.end:]
    return md, eqs


def restore(md:str, eqs:list, where:str) -> str:
    "Put the MathML of each equation at its placeholder; a failing equation stops the build with one line."
    def sub(m):
        eq = eqs[int(m.group(1))]
        try: return to_mathml(eq.tex, eq.display)
        except MathError as e: raise SystemExit(f'error: {where}: the equation {eq.tex!r} does not convert: {e}') from None
    return _re_token.sub(sub, md)


# What Chromium draws a single-letter <mi> with (its Mathematical Italic), besides the characters written in the MathML
_ITALIC = [*range(0x1D434, 0x1D4A0), *range(0x1D6E2, 0x1D71C), 0x210E, *range(0x20, 0x7F)]
FONT = 'fonts/stix-two-math.woff'


def write_font(pages:Path) -> int:
    """Subset ziamath's STIX Two Math to the characters of the site's math (its MATH table, which has the big brackets,
    sums and stretched bars, comes along) and write it as `FONT` under `pages`; its size in bytes (0: no math)."""
    import importlib.util
    from fontTools import subset
    from fontTools.ttLib import TTFont
    chars = set()
    for md in pages.rglob('*.md'):
        for m in re.finditer(r'<math\b.*?</math>', md.read_text(), re.S): chars |= set(html.unescape(re.sub(r'<[^>]*>', '', m.group(0))))
    if not chars: return 0
    spec = importlib.util.find_spec('ziamath')
    src = spec and Path(spec.origin).parent / 'fonts' / 'STIXTwoMath-Regular.ttf'
    if not src or not src.is_file(): raise SystemExit('error: the math font comes from the ziamath package: pip install -e ".[docs]"')
    font = TTFont(src)
    opts = subset.Options(); opts.flavor = 'woff'; opts.layout_features = ['*']; opts.name_IDs = ['*']
    sub = subset.Subsetter(opts)
    sub.populate(unicodes={ord(c) for c in chars} | set(_ITALIC)); sub.subset(font)
    dest = pages / FONT
    dest.parent.mkdir(parents=True, exist_ok=True)
    font.flavor = 'woff'; font.save(dest)
    return dest.stat().st_size
