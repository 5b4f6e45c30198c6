"""The documentation website in a real browser: `bash .ci/build_docs` builds `_docs/` from the notebooks, a local
HTTP server serves it on 127.0.0.1, and headless Chromium (Playwright, Debian's /usr/bin/chromium, a fresh profile)
opens every page. Every internal link must resolve (to a served file, and to an element of the page when it names
one), every picture must load, no page may show an error output or raise a script error, the search box must find
an exported function, and no request may leave 127.0.0.1 (no fonts, scripts or styles from a CDN).

Needs the `playwright` package and Debian's chromium (`bash .ci/setup_browser`); we never run `playwright install`."""
import functools, http.server, importlib, json, re, subprocess, sys, threading, urllib.parse, urllib.request
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parent.parent
SITE = REPO / '_docs'
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
sync_api = None
try: from playwright import sync_api
except ImportError: pass

pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f'{CHROMIUM} missing (bash .ci/setup_browser)'),
              pytest.mark.skipif(sync_api is None, reason='playwright missing (bash .ci/setup_browser)')]


def page_name(nb:Path) -> str: return re.sub(r'^\d+[a-z]?_', '', nb.stem)


def notebook_equations(nb:Path) -> list:
    "The equations of a notebook's markdown cells, found by the build's own rules (.ci/docs/texmath.py)."
    sys.path.insert(0, str(REPO / '.ci' / 'docs'))
    import texmath
    cells = [c for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'markdown']
    return [e for c in cells for e in texmath.equations(''.join(c['source']) if isinstance(c['source'], list) else c['source'])]


@pytest.fixture(scope='module')
def site():
    "A fresh build of the site, served on 127.0.0.1 (a free port) for the length of the module."
    res = subprocess.run(['bash', '.ci/build_docs'], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f'build_docs failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}'
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address): pass  # the browser leaving a page mid-download
    server = Server(('127.0.0.1', 0), functools.partial(Quiet, directory=str(SITE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try: yield f'http://127.0.0.1:{server.server_address[1]}'
    finally: server.shutdown(); server.server_close()


@pytest.fixture(scope='module')
def browser(site, tmp_path_factory):
    "A Chromium context with a fresh profile; every request that is not for the local server is refused and recorded."
    outside = []
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path_factory.mktemp('chromium-profile')), executable_path=CHROMIUM,
                                                   args=CHROMIUM_ARGS, headless=True, timeout=60_000,
                                                   viewport={'width': 1280, 'height': 900})
        def route(r):
            if r.request.url.startswith(site + '/'): r.continue_()
            else: outside.append(r.request.url); r.abort()
        ctx.route('**/*', route)
        try: yield ctx, outside
        finally: ctx.close()


@pytest.fixture(scope='module')
def visited(site, browser):
    "Open every page of the site: {page path: what the page holds (links, pictures, ids, outputs, script errors)}."
    ctx, _ = browser
    page = ctx.new_page()
    errors = []
    page.on('pageerror', lambda e: errors.append(str(e)))
    out = {}
    for f in sorted(SITE.rglob('*.html')):
        rel = f.relative_to(SITE).as_posix()
        errors.clear()
        resp = page.goto(f'{site}/{rel}', wait_until='load')
        assert resp.status == 200, rel
        page.wait_for_function('Array.from(document.images).every(i => i.complete)', timeout=20_000)
        info = page.evaluate(r'''() => ({
            links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
            images: Array.from(document.images).map(i => [i.currentSrc || i.src, i.naturalWidth]),
            ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
            errorCells: document.querySelectorAll('.nb-error').length,
            outputs: Array.from(document.querySelectorAll('.nb-output')).map(e => e.innerText),
            text: document.body.innerText,
            prose: (() => { const a = document.querySelector('article'); if (!a) return '';
                            const c = a.cloneNode(true); c.querySelectorAll('pre, code').forEach(e => e.remove());
                            return c.innerText; })(),
            docs: Array.from(document.querySelectorAll('.nb-doc')).map(e => e.innerText),
            notebookMentions: (() => {  // mentions of a notebook (21_train_step, nbs/03_layout.ipynb) in prose, and whether linked
                const re = /(?<![\w\/.\-])(?:nbs\/)?(\d{2}[a-z]?_[a-z][a-z0-9_]*)(?:\.ipynb)?(?![\w\/\-])/g, out = [];
                const a = document.querySelector('article');
                if (!a) return out;
                const walk = document.createTreeWalker(a, NodeFilter.SHOW_TEXT);
                for (let n = walk.nextNode(); n; n = walk.nextNode()) {
                    const el = n.parentElement;
                    if (el.closest('pre, .nb-output, .nb-doc, math')) continue;
                    const code = el.closest('code');
                    if (code && !/^(?:nbs\/)?\d{2}[a-z]?_[a-z][a-z0-9_]*(?:\.ipynb)?$/.test(code.textContent)) continue;
                    for (const m of n.textContent.matchAll(re))
                        out.push({name: m[1], href: el.closest('a') ? el.closest('a').href : null});
                }
                return out; })(),
            equations: Array.from(document.querySelectorAll('article math')).filter(m => !m.closest('.nb-output, .nb-doc')).map(m => {
                const r = m.getBoundingClientRect();
                return {display: m.getAttribute('display'), w: r.width, h: r.height, errors: m.querySelectorAll('merror').length}; })})''')
        out[rel] = {**info, 'script_errors': list(errors)}
    page.close()
    return out


def test_every_notebook_is_a_page(visited):
    pages = {page_name(nb) + '.html' for nb in (REPO / 'nbs').glob('*.ipynb')}
    assert pages <= set(visited), sorted(pages - set(visited))
    home = visited['index.html']['text']
    assert 'sg2im_nb' in home and 'Quick start' in home  # the README is the home page


def test_internal_links_resolve(site, visited):
    served, bad = {}, []
    for rel, info in visited.items():
        for href in info['links']:
            if not href.startswith(site + '/'): continue
            url, _, frag = href.partition('#')
            path = urllib.parse.unquote(url[len(site) + 1:].split('?')[0]) or 'index.html'
            if path.endswith('/'): path += 'index.html'
            if path not in served:
                try:
                    with urllib.request.urlopen(f'{site}/{path}', timeout=10) as r: served[path] = r.status
                except urllib.error.HTTPError as e: served[path] = e.code
            if served[path] != 200: bad.append(f'{rel}: {href} -> HTTP {served[path]}')
            elif frag and path in visited and urllib.parse.unquote(frag) not in visited[path]['ids']:
                bad.append(f'{rel}: {href} -> no element #{frag}')
    assert not bad, '\n'.join(bad[:30])
    assert len(served) > 30  # the pages do link to each other


def test_every_picture_loads(visited):
    broken = [f'{rel}: {src}' for rel, info in visited.items() for src, w in info['images'] if w == 0]
    assert not broken, '\n'.join(broken)


def test_no_error_outputs(visited):
    bad = []
    for rel, info in visited.items():
        if info['errorCells']: bad.append(f'{rel}: {info["errorCells"]} error output(s)')
        for text in info['outputs']:
            if 'Traceback (most recent call last)' in text or re.search(r'^\w*(Error|Exception): ', text, re.M):
                bad.append(f'{rel}: an output shows an error: {text[:200]!r}')
        if info['script_errors']: bad.append(f'{rel}: script errors {info["script_errors"]}')
    assert not bad, '\n'.join(bad)


def test_every_exported_function_is_documented(visited):
    "Every public function and class in nbdev's index of the package has its doc block at its nbdev URL."
    idx = importlib.import_module('sg2im_nb._modidx').d['syms']
    missing = []
    for mod, syms in idx.items():
        for name, (url, _) in syms.items():
            short = name[len(mod) + 1:]
            if '.' in short or short.startswith('_'): continue  # methods and private helpers
            page, _, anchor = url.partition('#')
            if anchor not in visited.get(page, {}).get('ids', []): missing.append(url)
    assert not missing, missing
    layout = visited['layout.html']['text']
    assert 'masks_to_layout' in layout and '(O, 4) boxes' in layout  # signature with docments


def test_search_finds_a_function(site, browser):
    ctx, _ = browser
    page = ctx.new_page()
    page.goto(f'{site}/index.html', wait_until='load')
    page.click('label.md-search__icon, .md-search__input')
    page.fill('input.md-search__input', 'masks_to_layout')
    hit = page.wait_for_selector('.md-search-result__item a[href*="layout.html"]', timeout=30_000)
    assert 'layout.html' in hit.get_attribute('href')
    page.close()


def test_nothing_leaves_localhost(browser, visited):
    _, outside = browser
    assert visited and not outside, outside[:20]


def test_math_is_typeset(visited):
    """Every equation of a notebook's markdown is a MathML element of its page with a size (drawn), none an error,
    and no TeX is left in the page's prose: no `$$`, no backslash command such as \\frac or \\tilde outside code."""
    bad, total = [], 0
    for nb in sorted((REPO / 'nbs').glob('*.ipynb')):
        rel = page_name(nb) + '.html'
        info, eqs = visited[rel], notebook_equations(nb)
        total += len(eqs)
        if len(info['equations']) != len(eqs): bad.append(f'{rel}: {len(info["equations"])} equations shown, {len(eqs)} in {nb.name}')
        want = ['block' if e.display else 'inline' for e in eqs]
        if [e['display'] for e in info['equations']] != want[:len(info['equations'])]: bad.append(f'{rel}: inline/display order differs')
        bad += [f'{rel}: equation {k} is not drawn ({e})' for k, e in enumerate(info['equations']) if e['w'] < 4 or e['h'] < 4 or e['errors']]
    for rel, info in visited.items():
        for m in re.finditer(r'\$\$|\\[A-Za-z]{2,}', info['prose']):
            bad.append(f'{rel}: raw TeX in the text: {info["prose"][max(0, m.start() - 40):m.end() + 40]!r}')
    assert total > 100 and not bad, '\n'.join(bad[:30])


def test_home_page_shows_the_course(visited):
    "The home page has the course table (a link, a promise and a reading time per lesson), then Reference and Engineering."
    sys.path.insert(0, str(REPO / '.ci' / 'docs'))
    import course
    home = visited['index.html']
    groups = course.parts(list((REPO / 'nbs').glob('*.ipynb')))
    entries = {course.key(e['notebook']): e for e in course.load()['Course']['entries']}
    for nb in groups['Course']:
        assert any(l.split('#')[0].endswith('/' + page_name(nb) + '.html') for l in home['links']), nb.name
        assert entries[course.key(nb.stem)]['promise'] in home['text'] and f'{entries[course.key(nb.stem)]["minutes"]} min' in home['text']
    text = home['text']
    assert text.index('The course') < text.index('Reference:') < text.index('Engineering:')
    for part in course.PARTS: assert f'\n{part}\n' in text  # the navigation's three parts


def test_classes_show_as_classes(visited):
    "show_doc writes classes like functions; the site shows `class Name(...)` with the parameters it is called with."
    for rel, name, params in [('model.html', 'Sg2ImModel', 'vocab:dict'), ('scene_graphs.html', 'EncodedGraphs', 'objs:torch.Tensor')]:
        doc = next((d for d in visited[rel]['docs'] if d.lstrip().startswith(name)), '')
        assert f'class {name}(' in doc and params in doc and f'def {name}(' not in doc, (rel, doc[:300])
    defs = [d.split('\n')[0] for info in visited.values() for d in info['docs'] if re.search(r'^def (Sg2ImModel|EncodedGraphs|Batch)\(', d, re.M)]
    assert not defs, defs


def test_notebook_mentions_are_links(visited):
    "A notebook named in prose (`21_train_step`, nbs/03_layout.ipynb) links to its page (test_internal_links_resolve: it resolves)."
    bad, linked = [], 0
    for rel, info in visited.items():
        own = rel.removesuffix('.html')
        for m in info['notebookMentions']:
            if m['href']: linked += 1; expect = page_name(Path(m['name'])) + '.html'; ok = m['href'].split('#')[0].endswith('/' + expect)
            else: ok = page_name(Path(m['name'])) == own  # a page's mention of itself stays text
            if not ok: bad.append(f'{rel}: {m["name"]} -> {m["href"]}')
    assert linked > 50 and not bad, '\n'.join(bad[:30])
