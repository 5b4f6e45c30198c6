r"""Turn the notebooks into the markdown pages of the documentation site, without executing them.

Run by `bash .ci/build_docs`, which then builds the site with MkDocs (Material theme) into `_docs/`.

- Every notebook of `nbs/` becomes one page (`09_vis.ipynb` -> `vis.html`, the URL nbdev would use; `index.ipynb`,
  the README, is the home page). Cells are rendered with their *stored* outputs: pictures are written next to the page
  as PNG or JPEG files, markdown outputs (tables) stay markdown, text is shown as text.
- The navigation has three parts, Course (the lessons in reading order), Reference and Engineering, and the home page
  gets the course table at its `<!-- course -->` marker: both from .ci/docs/course.json, by .ci/docs/course.py.
- nbdev directives are honoured: `#| hide` cells are left out, directive lines are not shown.
- After every `#| export` cell come the docs of what it defines, as nbdev shows them: `nbdev.showdoc.show_doc` of
  the object imported from the installed package (signature with docments, docstring), a class as `class Name(...)`
  with the parameters it is called with. Nothing in the notebooks runs.
- Backticked names of exported functions and classes in the prose link to their docs (as nbdev does), and so do
  notebooks named in prose, backticked or not (`21_train_step`, nbs/03_layout.ipynb).
- Local files a notebook links to (pictures, `data/models/shapes64.md`) are copied in; a linked markdown file
  becomes a page of its own.
- Math (`$...$`, `$$...$$` in markdown cells) is typeset at build time as MathML (.ci/docs/texmath.py).

Why MathML from latex2mathml, drawn by the browser, and not KaTeX or MathJax (measured on the 235 equations of the
notebooks, 2 shared CPU cores, headless Chromium):
- nothing runs in the page: the losses page (36 equations) is ready in 0.8 s, as without math; with MathJax 2.7 (the
  only MathJax a Python package ships, jupyter-server-mathjax) the same page takes 2.5 s and 17 more requests to
  typeset, and MathJax is 12 MB to vendor. markdown-katex is a 40 MB wheel of node binaries whose CSS and fonts come
  from a CDN. Converting all 235 equations takes 0.4 s of the build; the site grows by 42 kB in all (the font;
  the pages themselves come out 73 kB smaller than with the garbled TeX).
- the math is real text: it is searchable, selectable, and scales with the page.
- Chromium needs an OpenType math font to draw sums, big brackets and stretched bars well, and most machines have
  none: the build serves STIX Two Math (SIL OFL), from the ziamath package, cut down to the characters the site uses
  (113 kB, 0.7 s). latex2mathml lacks `aligned` and `\operatorname` (rewritten to `align*` and `\mathrm`), and
  writes a few things MathML Core does not draw (bold, `\overline`, column alignment, accents, primes, spacing of
  function names and signs): texmath.py mends them.

Usage: python .ci/docs/build.py [--out DIR] (default: _proc/site)"""
import argparse, ast, base64, importlib, inspect, json, re, shutil, sys
from pathlib import Path
import course, texmath

ROOT = Path(__file__).resolve().parents[2]
NBS = ROOT / 'nbs'
PKG = 'sg2im_nb'
COURSE_MARKER = '<!-- course -->'  # where the home page gets the course table (else: before its "## The notebooks")
NO_LINK = {'main', 'train', 'val', 'test'}  # names that prose also uses as plain words
_re_directive = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')
_re_ansi = re.compile(r'\x1b\[[0-9;?]*[ -/]*[@-~]')
_re_prefix = re.compile(r'^\d+[a-z]?_')
_NB = r'(?:nbs/)?(?P<stem>\d{2}[a-z]?_[a-z][a-z0-9_]*)(?:\.ipynb)?'  # 21_train_step, nbs/03_layout.ipynb
_re_nb_code = re.compile(rf'^`{_NB}`$')
_re_nb_text = re.compile(rf'(?<![\w/.\-]){_NB}(?![\w/\-])')
# markdown's inline pieces that are not prose: code spans (linked only when they hold just a notebook's name), links,
# HTML tags, URLs, math placeholders; what is between them is prose
_re_inline = re.compile(r'(?P<code>(?<!`)(`+)(?!`).+?(?<!`)\2(?!`))|(?P<skip>!?\[[^\]]*\]\([^)]*\)|<[^>\n]+>|https?://\S+|\ue000\d+\ue001)'
                        r'|(?P<text>(?:(?!https?://)[^`\[<\ue000])+|.)', re.S)


def page_name(nb:Path) -> str:
    "`09_vis.ipynb` -> `vis` (nbdev's page name); `index.ipynb` -> `index`."
    return _re_prefix.sub('', nb.stem)


def split_directives(src:str) -> tuple:
    "({directive: value}, source without the leading directive lines)."
    lines, dirs = src.splitlines(), {}
    while lines and (m := _re_directive.match(lines[0])):
        dirs[m.group(1)] = m.group(2); lines.pop(0)
    return dirs, '\n'.join(lines).strip('\n')


def fence(text:str, lang:str='') -> str:
    "A fenced code block that no backtick run inside `text` can close."
    n = max([3] + [len(m) + 1 for m in re.findall(r'`{3,}', text)])
    return f"{'`' * n}{lang}\n{text.rstrip()}\n{'`' * n}"


def cell_source(cell) -> str:
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s


def defined_names(src:str) -> list:
    "Public functions and classes defined at the top level of a code cell, `Class.method` for `@patch` (nbdev's rule)."
    from nbdev.showdoc import showdoc_nm
    try: tree = ast.parse(src)
    except SyntaxError: return []
    return [showdoc_nm(n) for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and not n.name.startswith('_')]


def lookup(module, name:str):
    "`module.name`, following dots (`Class.method`), or None."
    obj = module
    for part in name.split('.'):
        obj = getattr(obj, part, None)
        if obj is None: return None
    return obj


def _anno(a) -> str:
    "An annotation as it is written: `torch.Tensor`, not `ForwardRef('torch.Tensor')`."
    if isinstance(a, str): return a
    return getattr(a, '__forward_arg__', None) or inspect.formatannotation(a)


def class_header(obj, md:str) -> str:
    """show_doc writes a class as `def Name(...)`: make it `class Name(...)`, and where its signature says nothing
    (`*args, **kwargs`, a NamedTuple's say) give the parameters the class is called with."""
    md = re.sub(r'^(```python\n)def ', r'\1class ', md, count=1, flags=re.M)
    if not re.search(r'^class \w+\(\s*\*args, \*\*kwargs\s*\):', md, flags=re.M): return md
    try: params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError): return md
    star = {p.VAR_POSITIONAL: '*', p.VAR_KEYWORD: '**'} if (p := next(iter(params), None)) else {}
    text = ', '.join(star.get(p.kind, '') + p.name + (f':{_anno(p.annotation)}' if p.annotation is not p.empty else '')
                     + (f'={p.default!r}' if p.default is not p.empty else '') for p in params)
    return re.sub(r'^class (\w+)\(\s*\*args, \*\*kwargs\s*\):', lambda m: f'class {m.group(1)}({text}):', md, count=1, flags=re.M)


def show_doc_md(obj, name:str) -> str:
    "nbdev's show_doc markdown for `obj`, with nbdev's anchor (the lower-case name) and without its GitHub source link."
    from nbdev.showdoc import show_doc
    md = show_doc(obj)._repr_markdown_()
    if inspect.isclass(obj): md = class_header(obj, md)
    md = re.sub(r'^\[source\]\(.*$', '', md, flags=re.M)
    md = re.sub(r'^---\s*$', '', md, count=1, flags=re.M).strip()
    md = re.sub(r'^(#{2,4}) ' + re.escape(name) + r'\s*$', lambda m: f'{m.group(1)} {name} {{ #{name.lower()} }}', md, count=1, flags=re.M)
    return f'<div class="nb-doc" markdown="1">\n\n{md}\n\n</div>'


class Site:
    def __init__(self, out:Path):
        self.out, self.links, self.pages, self.copied = out, {}, [], {}

    # -- pass 1: what every page defines, for the links --------------------------------------------------------------
    def index_notebook(self, nb_path:Path, nb:dict):
        page = page_name(nb_path)
        self.links.setdefault(nb_path.stem, f'{page}.md')
        for cell in nb['cells']:
            if cell['cell_type'] != 'code': continue
            dirs, src = split_directives(cell_source(cell))
            if 'export' in dirs and 'hide' not in dirs:
                for full in defined_names(src):
                    target = f'{page}.md#{full.lower()}'  # nbdev's anchors (see _modidx.py)
                    for n in {full, full.split('.')[-1]}:
                        if n in self.links or n in NO_LINK: self.links[n] = None  # defined twice: ambiguous
                        else: self.links[n] = target

    # -- pass 2: the pages ---------------------------------------------------------------------------------------------
    def link_names(self, md:str, here:str) -> str:
        "Link backticked known names outside code blocks and links: `image_grid` -> [`image_grid`](vis.md#image_grid)."
        def sub(m):
            name = m.group(2).rstrip('()').split('.')[-1] if m.group(2).startswith(PKG + '.') else m.group(2).rstrip('()')
            target = self.links.get(name) or self.links.get(m.group(2).rstrip('()'))
            if m.group(1) or target is None: return m.group(0)
            if target.split('#')[0] == here and '#' not in target: return m.group(0)
            return f'[`{m.group(2)}`]({target})'
        parts = re.split(r'(^`{3,}.*?^`{3,}\s*$)', md, flags=re.M | re.S)
        for i in range(0, len(parts), 2):
            parts[i] = re.sub(r'(\[)?`([A-Za-z_][\w.]*(?:\(\))?)`(?!\]|\()', sub, parts[i])
            parts[i] = self.link_notebooks(parts[i], here)
        return ''.join(parts)

    def link_notebooks(self, md:str, here:str) -> str:
        """Link the notebooks named in prose, backticked or not: `21_train_step`, 21_train_step.ipynb,
        nbs/03_layout.ipynb -> a link to the page. Code spans that hold more than a name, links, HTML tags and URLs are
        left alone, and so is a page's mention of itself."""
        def name(m):
            target = self.links.get(m.group('stem'))
            return m.group(0) if target is None or target == here else f'[{m.group(0)}]({target})'
        def piece(m):
            if m.group('code') is not None: return _re_nb_code.sub(name, m.group(0))
            if m.group('skip') is not None: return m.group(0)
            return _re_nb_text.sub(name, m.group(0))
        return _re_inline.sub(piece, md)

    def local_file(self, target:str, base:Path):
        "A file of the repository that a notebook links to, or None."
        if re.match(r'^[a-z]+:', target) or target.startswith('#'): return None
        for b in (base, ROOT):
            p = (b / target.split('#')[0]).resolve()
            if p.is_file() and ROOT in p.parents: return p
        return None

    def copy_in(self, p:Path) -> str:
        "Copy a repository file into the site (a markdown file becomes a page); its path inside the site."
        if p in self.copied: return self.copied[p]
        rel = 'files/' + p.relative_to(ROOT).as_posix()
        self.copied[p] = rel
        dest = self.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == '.md':
            text = self.fix_links(p.read_text(), p.parent, rel)
            dest.write_text(text)
            title = next((l[2:].strip() for l in text.splitlines() if l.startswith('# ')), p.stem)
            self.pages.append(('Files', title, rel))
        else: shutil.copy2(p, dest)
        return rel

    def fix_links(self, md:str, base:Path, here:str) -> str:
        "Links and pictures pointing at notebooks or repository files, rewritten to pages and copied files."
        up = '../' * here.count('/')
        def sub(m):
            target = m.group(2)
            stem = Path(target.split('#')[0]).stem
            if target.split('#')[0].endswith('.ipynb') and stem in self.links:
                frag = '#' + target.split('#', 1)[1] if '#' in target else ''
                return f'{m.group(1)}({up}{self.links[stem]}{frag})'
            p = self.local_file(target, base)
            return m.group(0) if p is None else f'{m.group(1)}({up}{self.copy_in(p)})'
        return re.sub(r'(!?\[[^\]]*\])\(([^)\s]+)\)', sub, md)

    def widget_text(self, nb:dict, model_id:str):
        "The text of a stored tqdm progress bar widget (description, percentage, counts), or None."
        state = ((nb.get('metadata', {}).get('widgets') or {}).get('application/vnd.jupyter.widget-state+json') or {}).get('state', {})
        box = state.get(model_id, {}).get('state', {})
        parts = []
        for ref in box.get('children', []):
            child = state.get(str(ref).replace('IPY_MODEL_', ''), {})
            s, kind = child.get('state', {}), child.get('model_name', '')
            if kind == 'HTMLModel' and s.get('value'): parts.append(re.sub(r'<[^>]+>|&nbsp;', ' ', s['value']).strip())
            elif kind in ('FloatProgressModel', 'IntProgressModel') and s.get('max'):
                done = int(20 * s.get('value', 0) / s['max'])
                parts.append('|' + '█' * done + ' ' * (20 - done) + '|')
        return ' '.join(p for p in parts if p) or None

    def render_outputs(self, nb:dict, cell:dict, page:str, k:int) -> list:
        blocks = []
        for j, out in enumerate(cell.get('outputs', [])):
            kind = out.get('output_type')
            if kind == 'stream':
                text = ''.join(out.get('text', ''))
                text = '\n'.join(l.split('\r')[-1] for l in _re_ansi.sub('', text).split('\n'))
                if text.strip(): blocks.append(f'<div class="nb-output nb-{out.get("name", "stdout")}" markdown="1">\n\n{fence(text, "text")}\n\n</div>')
            elif kind == 'error':
                tb = _re_ansi.sub('', '\n'.join(out.get('traceback', [])) or f"{out.get('ename')}: {out.get('evalue')}")
                blocks.append(f'<div class="nb-output nb-error" markdown="1">\n\n{fence(tb, "text")}\n\n</div>')
            elif kind in ('display_data', 'execute_result'):
                data = out.get('data', {})
                pic = next((m for m in ('image/png', 'image/jpeg') if m in data), None)
                if pic:
                    rel = f'{page}_files/cell{k:03d}_{j}.{"png" if pic == "image/png" else "jpg"}'
                    (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
                    (self.out / rel).write_bytes(base64.b64decode(''.join(data[pic])))
                    blocks.append(f'<div class="nb-output nb-figure" markdown="1">\n\n![]({rel})\n\n</div>')
                elif 'text/markdown' in data:
                    blocks.append(f'<div class="nb-output nb-markdown" markdown="1">\n\n{"".join(data["text/markdown"])}\n\n</div>')
                elif 'application/vnd.jupyter.widget-view+json' in data:
                    text = self.widget_text(nb, data['application/vnd.jupyter.widget-view+json'].get('model_id', ''))
                    if text: blocks.append(f'<div class="nb-output nb-widget" markdown="1">\n\n{fence(text, "text")}\n\n</div>')
                elif 'text/html' in data:
                    blocks.append(f'<div class="nb-output nb-html">\n{"".join(data["text/html"])}\n</div>')
                elif 'text/plain' in data:
                    blocks.append(f'<div class="nb-output" markdown="1">\n\n{fence(_re_ansi.sub("", "".join(data["text/plain"])), "text")}\n\n</div>')
        return blocks

    def render_notebook(self, nb_path:Path, nb:dict) -> str:
        page = page_name(nb_path)
        here = f'{page}.md'
        module, blocks = None, []
        for k, cell in enumerate(nb['cells']):
            src = cell_source(cell)
            if cell['cell_type'] == 'markdown':
                if src.strip():
                    text, eqs = texmath.protect(src)  # the TeX never meets the link rewriting nor markdown
                    blocks.append(texmath.restore(self.link_names(self.fix_links(text, NBS, here), here), eqs, nb_path.name))
                continue
            if cell['cell_type'] != 'code': continue
            dirs, code = split_directives(src)
            if 'default_exp' in dirs: module = importlib.import_module(f'{PKG}.{dirs["default_exp"]}')
            if 'hide' in dirs or dirs.get('include') == 'false': continue
            if code.strip() and dirs.get('echo') != 'false':
                label = f'<div class="nb-exported">exported to <code>{module.__name__}</code></div>\n\n' if 'export' in dirs and module else ''
                blocks.append(label + fence(code, 'python'))
            if dirs.get('output') != 'false': blocks += self.render_outputs(nb, cell, page, k)
            if 'export' in dirs and module is not None:
                for n in defined_names(code):
                    obj = lookup(module, n)
                    if obj is None: raise SystemExit(f'error: {nb_path.name} exports {n}, but {module.__name__} has no {n}; run nbdev-export')
                    blocks.append(show_doc_md(obj, n))
        if nb_path.stem == 'index': blocks = insert_course(blocks)
        return '\n\n'.join(blocks) + '\n'

    def build(self) -> list:
        if self.out.exists(): shutil.rmtree(self.out)
        self.out.mkdir(parents=True)
        nbs = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))
        loaded = {p: json.loads(p.read_text()) for p in nbs}
        names = [page_name(p) for p in nbs]
        if len(set(names)) != len(names): raise SystemExit(f'error: two notebooks give the same page name: {sorted(names)}')
        for p, nb in loaded.items(): self.index_notebook(p, nb)
        try: groups = course.parts(nbs)
        except course.CourseError as e: raise SystemExit(f'error: {e}') from None
        for p, nb in loaded.items(): (self.out / f'{page_name(p)}.md').write_text(self.render_notebook(p, nb))
        self.pages += [('Home', course.title(p), 'index.md') for p in nbs if p.stem == 'index']
        self.pages += [(part, f'{p.stem.split("_")[0]} · {course.title(p)}', f'{page_name(p)}.md') for part, ps in groups.items() for p in ps]
        return self.pages


def insert_course(blocks:list) -> list:
    "The home page's blocks with the course table (course.course_markdown) at COURSE_MARKER, or before its notebook list."
    md = course.course_markdown(NBS, lambda nb: f'{page_name(nb)}.md')
    for i, b in enumerate(blocks):
        if COURSE_MARKER in b: return blocks[:i] + [b.replace(COURSE_MARKER, md)] + blocks[i + 1:]
    at = next((i for i, b in enumerate(blocks) if b.startswith('## The notebooks')), min(2, len(blocks)))
    return blocks[:at] + [md] + blocks[at:]


def nav(pages:list) -> list:
    "The MkDocs navigation: the home page, then the Course, Reference and Engineering parts (course.json), then files."
    sections = {'Home': None, **{part: [] for part in course.PARTS}}
    for section, title, path in pages:
        if section == 'Home': sections['Home'] = path
        else: sections.setdefault(section, []).append({title: path})
    return [{name: items} for name, items in sections.items() if items]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT / '_proc' / 'site'), help='folder for the pages and the generated mkdocs.yml')
    args = ap.parse_args()
    out = Path(args.out).resolve()
    sys.path.insert(0, str(ROOT))
    site = Site(out / 'pages')
    pages = site.build()
    cfg = {'INHERIT': str(ROOT / '.ci' / 'docs' / 'mkdocs.yml'), 'docs_dir': str(out / 'pages'),
           'site_dir': str(ROOT / '_docs'), 'nav': nav(pages)}
    (out / 'mkdocs.yml').write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    shutil.copy2(ROOT / '.ci' / 'docs' / 'extra.css', out / 'pages' / 'extra.css')
    texmath.write_font(out / 'pages')
    print(f'{len(pages)} pages written to {out / "pages"}')


if __name__ == '__main__': main()
