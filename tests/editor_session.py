"""Shared by the browser tests of the scene-graph editor (JupyterLab and `sg2im-app`): start a local server, drive
Debian's chromium with Playwright, and play a realistic editing session with actions 250 ms apart.

Not a test file itself (pytest collects only test_*.py). We never run `playwright install`."""
import contextlib, json, os, re, signal, socket, subprocess, time, urllib.request
from pathlib import Path

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
try: from playwright import sync_api
except ImportError: sync_api = None


def browser_marks() -> list:
    "The pytest marks of a browser test module: skip when Debian's chromium or the playwright package is missing."
    import pytest
    return [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f'{CHROMIUM} missing (bash .ci/setup_browser)'),
            pytest.mark.skipif(sync_api is None, reason='playwright missing (bash .ci/setup_browser)')]


PAUSE_MS = 250  # between two user actions: faster than the kernel answers on a loaded 2-core machine
LOCAL = re.compile(r'^(https?|wss?)://127\.0\.0\.1[:/]|^(data|blob|about):')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@contextlib.contextmanager
def server(cmd, ready_url, log_path, cwd, env=None, timeout=90, shutdown_url=None, ready_text=None):
    "Run `cmd` in its own process group until `ready_url` answers 200 (or its log shows `ready_text`); stop the group after."
    log = open(log_path, 'wb')
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None: raise RuntimeError(f'{cmd[:3]} exited: {Path(log_path).read_text()[-3000:]}')
            if ready_text is not None:
                if ready_text in Path(log_path).read_text(errors='replace'): break
            else:
                try:
                    with urllib.request.urlopen(ready_url, timeout=2) as r:
                        if r.status == 200: break
                except OSError: pass
            if time.time() > deadline: raise RuntimeError(f'{cmd[:3]} did not start within {timeout} s')
            time.sleep(0.3)
        yield proc
    finally:
        if shutdown_url:
            try:
                urllib.request.urlopen(urllib.request.Request(shutdown_url, method='POST'), timeout=5); proc.wait(timeout=15)
            except Exception: pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try: os.killpg(proc.pid, sig)
            except ProcessLookupError: break
            try: proc.wait(timeout=10); break
            except subprocess.TimeoutExpired: pass
        try: os.killpg(proc.pid, signal.SIGKILL)  # kernels left in the group
        except ProcessLookupError: pass
        log.close()


EDITOR_NOTEBOOK = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': 'editor', 'metadata': {}, 'outputs': [],
                              'source': "from sg2im_nb.editor.widget import SceneGraphEditor\nSceneGraphEditor(device='cpu')"}],
                   'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
                   'nbformat': 4, 'nbformat_minor': 5}


@contextlib.contextmanager
def jupyterlab(root:Path):
    "A JupyterLab server on 127.0.0.1 (free port, token) whose root holds editor.ipynb, a notebook that shows an editor."
    import secrets, sys
    (root / 'editor.ipynb').write_text(json.dumps(EDITOR_NOTEBOOK))
    cfg = root / '.config'; (cfg / 'labconfig').mkdir(parents=True)
    (cfg / 'labconfig' / 'page_config.json').write_text(json.dumps(  # no news pop-up, no update check
        {'disabledExtensions': {'@jupyterlab/apputils-extension:announcements': True}}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(cfg), JUPYTER_RUNTIME_DIR=str(root / '.runtime'),
               JUPYTERLAB_SETTINGS_DIR=str(root / '.settings'), JUPYTERLAB_WORKSPACES_DIR=str(root / '.workspaces'),
               PYTHONUNBUFFERED='1')
    port, token = free_port(), secrets.token_hex(16)
    base = f'http://127.0.0.1:{port}'
    cmd = [sys.executable, '-m', 'jupyterlab', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
           '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}', '--ServerApp.open_browser=False',
           f'--ServerApp.root_dir={root}', '--LabApp.expose_app_in_browser=True',
           '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'] + (['--allow-root'] if os.geteuid() == 0 else [])
    with server(cmd, f'{base}/api/status?token={token}', root / 'lab.log', root, env,
                shutdown_url=f'{base}/api/shutdown?token={token}'):
        yield base, token


def open_editor_notebook(page, base, token):
    "Open editor.ipynb in JupyterLab, run it, and return the editor's root element."
    page.goto(f'{base}/lab/tree/editor.ipynb?token={token}')
    page.wait_for_function('''() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
        return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
               && w.sessionContext.session.kernel.status === 'idle'; }''', timeout=90_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    root = page.locator('.sg2im-editor').first
    root.wait_for(timeout=90_000)
    return root


APP_URL = re.compile(r'the scene-graph editor is at (http://127\.0\.0\.1:\d+/(\?token=[0-9a-f]+)?)')


def app_command(port, *args):
    "sg2im-app when it is installed next to this Python, else the same function through python -m."
    import sys
    exe = Path(sys.executable).parent / 'sg2im-app'
    return ([str(exe)] if exe.exists() else [sys.executable, '-m', 'sg2im_nb.editor.app']) + ['--port', str(port), '--device', 'cpu', *args]


@contextlib.contextmanager
def sg2im_app(folder:Path, *args, env=None):
    "A running sg2im-app on a free port, its temporary files under `folder`; yields (url with token, process, log path)."
    port, log = free_port(), folder / 'app.log'
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(folder / '.runtime'), PYTHONUNBUFFERED='1', TMPDIR=str(folder), **(env or {}))
    with server(app_command(port, *args), None, log, folder, env, ready_text=f'is at http://127.0.0.1:{port}/', timeout=120) as proc:
        yield APP_URL.search(log.read_text()).group(1), proc, log


@contextlib.contextmanager
def browser_page(sync_api, downloads, width=1500, height=1400):
    "A fresh headless chromium page; collects console errors, page errors and requests that leave 127.0.0.1."
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000,
                                    downloads_path=str(downloads))
        try:
            ctx = browser.new_context(viewport={'width': width, 'height': height}, accept_downloads=True)
            page = ctx.new_page()
            page.set_default_timeout(60_000)
            page.problems = {'console': [], 'pageerror': [], 'remote': []}
            page.on('console', lambda m: m.type == 'error' and page.problems['console'].append(m.text))
            page.on('pageerror', lambda e: page.problems['pageerror'].append(str(e)))
            page.on('request', lambda r: LOCAL.match(r.url) or page.problems['remote'].append(r.url))
            yield page
        finally: browser.close()


class Editor:
    "The editor on a page, driven like a user: pick, click, drag; 250 ms between actions, never waiting for the kernel."
    def __init__(self, page, root):
        self.page, self.root = page, root

    def pause(self): self.page.wait_for_timeout(PAUSE_MS)

    def idle(self, timeout=60_000):
        "Wait until every queued action has been handled (what a user sees when the spinner stops)."
        self.page.wait_for_function('(e) => e.dataset.pending === "0"', arg=self.root.element_handle(), timeout=timeout)

    def graph(self) -> dict:
        return json.loads(self.root.get_attribute('data-scene-graph'))[0]

    def pick(self, cls, name):
        "Choose the option of select.`cls` labelled `name` (a vocab name) or `name #id`; wait until it exists."
        sel = self.root.locator(f'select.{cls}')
        opt = sel.locator('option', has_text=re.compile(rf'^{re.escape(name)}( #\d+)?$')).first
        opt.wait_for(state='attached')
        sel.select_option(opt.get_attribute('value'))

    def click(self, cls): self.root.locator(f'.{cls}').first.click(); self.pause()

    def add_object(self, name): self.pick('sg2im-new-object', name); self.click('sg2im-add-object')

    def burst(self, names):
        """Pick each name in "new object" and click "add object", all in one browser task: the kernel cannot answer
        between the clicks (the fastest a user could be), so the actions must queue, whatever the machine's speed."""
        self.root.evaluate('''(root, names) => {
            const sel = root.querySelector('select.sg2im-new-object'), add = root.querySelector('.sg2im-add-object');
            for (const name of names) {
                const opt = [...sel.options].find((o) => o.textContent.trim() === name);
                if (!opt) throw new Error('no option ' + name);
                sel.value = opt.value; sel.dispatchEvent(new Event('change', {bubbles: true}));
                add.click();
            }
        }''', names)

    def add_relationship(self, s, p, o):
        self.pick('sg2im-subject', s); self.pick('sg2im-predicate', p); self.pick('sg2im-object', o)
        self.click('sg2im-add-relationship')

    def remove_object(self, name):
        self.root.locator('.sg2im-objects li', has_text=re.compile(rf'^{re.escape(name)} #')).locator('.sg2im-remove-object').click()
        self.pause()

    def box_of(self, name) -> list:
        "The box on screen of the object called `name` (after the queue drained)."
        self.idle()
        items = self.root.locator('.sg2im-objects li', has_text=re.compile(rf'^{re.escape(name)} #'))
        oid = items.first.get_attribute('data-id')
        return json.loads(self.root.get_attribute('data-boxes'))[oid]

    def drag(self, name, dx, dy, panel='sg2im-layout'):
        "Drag `name`'s box by (dx, dy) pixels on a panel, grabbed where no other box is; return the box expected."
        b, canvas = self.box_of(name), self.root.locator(f'canvas.{panel}')
        others = [v for k, v in json.loads(self.root.get_attribute('data-boxes')).items() if v != b]
        inside = lambda u, v, q, t=0.03: q[0] - t <= u <= q[2] + t and q[1] - t <= v <= q[3] + t
        grips = [(b[0] + fx * (b[2] - b[0]), b[1] + fy * (b[3] - b[1])) for fx in (.5, .3, .7, .15, .85) for fy in (.5, .3, .7, .15, .85)]
        u, v = next(g for g in grips if not any(inside(*g, q) for q in others))
        canvas.scroll_into_view_if_needed()
        r = canvas.bounding_box()
        x, y = r['x'] + u * r['width'], r['y'] + v * r['height']
        self.page.mouse.move(x, y); self.page.mouse.down()
        self.page.mouse.move(x + dx, y + dy, steps=6); self.page.mouse.up()
        self.pause()
        return clip_move(b, dx / r['width'], dy / r['height'])

    def resize(self, name, dx, dy, panel='sg2im-layout'):
        "Drag the lower-right corner of `name`'s box (selected) by (dx, dy) pixels; return the box expected."
        b, canvas = self.box_of(name), self.root.locator(f'canvas.{panel}')
        canvas.scroll_into_view_if_needed()
        r = canvas.bounding_box()
        x, y = r['x'] + b[2] * r['width'] - 1, r['y'] + b[3] * r['height'] - 1
        self.page.mouse.move(x, y); self.page.mouse.down()
        self.page.mouse.move(x + dx, y + dy, steps=6); self.page.mouse.up()
        self.pause()
        return [b[0], b[1], min(max(b[2] + dx / r['width'], b[0] + 0.02), 1), min(max(b[3] + dy / r['height'], b[1] + 0.02), 1)]

    def save(self, path) -> dict:
        with self.page.expect_download() as d: self.root.locator('.sg2im-save').click()
        d.value.save_as(str(path))
        self.pause()
        return json.loads(Path(path).read_text())

    def load(self, path):
        self.root.locator('input.sg2im-load-file').set_input_files(str(path)); self.pause()

    def messages(self, level) -> list: return self.root.locator(f'.sg2im-status .sg2im-{level}').all_inner_texts()

    def ids(self) -> dict:
        "{vocab name: id} of the objects listed, the first of each name (after the queue drained)."
        self.idle()
        out = {}
        for li in self.root.locator('.sg2im-objects li').all():
            out.setdefault(li.inner_text().split(' #')[0].strip(), int(li.get_attribute('data-id')))
        return out

    def select(self, name):
        "Click the row of the object called `name` (a vocab name or 'name #id') in the objects list."
        li = self.root.locator('.sg2im-objects li', has_text=re.compile(rf'^{re.escape(name)} #\d+')).first
        li.click(position={'x': 40, 'y': 8})  # on its name (the × to remove it is at the right)
        self.pause()

    def relationships(self) -> list:
        "[(id, text)] of the relationships listed."
        return [(int(li.get_attribute('data-id')), li.locator('.sg2im-text').inner_text())
                for li in self.root.locator('.sg2im-relationships li').all()]

    def select_relationship(self, rid):
        self.root.locator(f'.sg2im-relationships li[data-id="{rid}"] .sg2im-text').click(); self.pause()

    def key(self, keys):
        "Press `keys` (Playwright names: 'Delete', 'Control+z') with the editor focused."
        self.page.keyboard.press(keys); self.pause()

    def download(self, cls, path) -> Path:
        with self.page.expect_download() as d: self.root.locator(f'.{cls}').click()
        d.value.save_as(str(path))
        return Path(path)


def clip_move(b, dx, dy) -> list:
    "What the editor does to a box taken hold of and moved by (dx, dy): clip it to the picture (2% at least), move it inside."
    x0, y0 = min(max(b[0], 0), 0.98), min(max(b[1], 0), 0.98)
    x1, y1 = min(max(b[2], x0 + 0.02), 1), min(max(b[3], y0 + 0.02), 1)
    nx, ny = min(max(x0 + dx, 0), 1 - (x1 - x0)), min(max(y0 + dy, 0), 1 - (y1 - y0))
    return [nx, ny, nx + x1 - x0, ny + y1 - y0]


def close(a, b, tol=0.02) -> bool: return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def realistic_session(ed:Editor, tmp:Path) -> dict:
    """Add three objects and two relationships, trigger a warning, remove one object, drag two boxes and undo the
    second, change the seed, save and reload the JSON, and load a broken file: 250 ms between actions. Checks every
    result; returns what it measured."""
    ed.idle()
    ed.click('sg2im-clear')
    ed.root.locator('.sg2im-info', has_text='The graph is empty').wait_for()     # the empty editor says how to start
    for name in ('sky', 'grass', 'star'): ed.add_object(name)
    ed.add_relationship('sky', 'above', 'grass')
    ed.add_relationship('star', 'above', 'grass')
    ed.add_relationship('grass', 'above', 'star')                                 # contradicts the one before
    ed.root.locator('.sg2im-warning', has_text='contradiction').wait_for()
    ed.click('sg2im-undo')
    ed.remove_object('sky')                                                       # and its relationship
    ed.drag('star', 60, 40)
    star = ed.resize('star', 25, -15)                                             # the dragged star is selected
    ed.drag('grass', -30, 0, panel='sg2im-image-overlay')
    ed.click('sg2im-undo')                                                        # undo the grass drag
    ed.click('sg2im-resample'); ed.click('sg2im-resample'); ed.click('sg2im-resample')
    ed.idle()
    ed.burst(['star', 'heart', 'ring'])                                           # a burst: no pause at all
    assert int(ed.root.get_attribute('data-most-pending')) >= 2                   # they queued, and the editor said so
    ed.idle()
    assert ed.graph()['objects'] == ['grass', 'star', 'star', 'heart', 'ring'], ed.graph()
    for _ in range(3): ed.click('sg2im-undo')
    ed.idle()
    assert not ed.messages('warning') and not ed.messages('error'), ed.messages('warning') + ed.messages('error')
    saved = ed.save(tmp / 'session.json')
    assert len(saved) == 1, saved
    g = saved[0]
    assert g['objects'] == ['grass', 'star'] and g['relationships'] == [[1, 'above', 0]], g
    assert g['boxes'][0] is None and close(g['boxes'][1], star), (g['boxes'], star)
    assert g['seed'] == 3, g
    ed.click('sg2im-clear'); ed.load(tmp / 'session.json'); ed.idle()
    assert ed.graph() == g, (ed.graph(), g)
    assert ed.save(tmp / 'again.json') == saved
    (tmp / 'bad.json').write_text('[{"objects": ["unicorn"], "relationships": []}]')
    ed.load(tmp / 'bad.json'); ed.idle()
    errs = ed.messages('error')
    assert errs and 'unicorn' in errs[0], errs
    assert ed.graph() == g                                                        # a refused file changes nothing
    img = ed.root.locator('img.sg2im-image')
    assert img.evaluate('(e) => e.getBoundingClientRect().width') >= 384 and img.evaluate('(e) => e.naturalWidth') == 64
    return {'ack_ms': json.loads(ed.root.get_attribute('data-ack-ms') or '[]'), 'graph': g}


def showcase(ed:Editor):
    "An example graph, its star selected by clicking its node in the graph drawing, and the grid of seeds: for screenshots."
    ed.pick('sg2im-examples', 'shapes_demo 1'); ed.idle()
    ed.root.locator('.sg2im-graph [data-obj]', has_text='star').click()
    legend = ed.root.locator('.sg2im-group legend', has_text='Box of').inner_text()
    assert legend.startswith('Box of star #'), legend                           # selected from the graph panel
    ed.root.locator('input.sg2im-show-seeds').check(); ed.idle()
    ed.root.locator('.sg2im-seed-note').wait_for()


def save_screenshot(png:bytes, path):
    "Save a screenshot as a small 256-colour PNG (the repository keeps them)."
    import io
    from PIL import Image
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im = Image.open(io.BytesIO(png)).convert('RGB')
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def session_and_screenshot(ed:Editor, tmp:Path, name:str, shoot) -> dict:
    """`realistic_session`, then `showcase`, photographed by `shoot()` (PNG bytes) into tmp/name, and also into the
    repository's $SG2IM_SCREENSHOTS folder when that is set. Returns the session's result."""
    result = realistic_session(ed, tmp)
    print(f"\nbrowser round trips (ms, click to answer): {result['ack_ms']}")
    showcase(ed)
    png = shoot()
    shots = [tmp / name]
    if os.environ.get('SG2IM_SCREENSHOTS'): shots.append(Path(__file__).resolve().parent.parent / os.environ['SG2IM_SCREENSHOTS'] / name)
    for s in shots: save_screenshot(png, s)
    return result


def explorer_session(ed:Editor, tmp:Path) -> dict:
    """What explorers expect (issue 22, items 10-13), with real clicks and keys: pick an example by its thumbnail,
    build a graph, rename an object and change a relationship in place, delete, nudge, undo and redo with keys, go
    back in the history strip, draw a random seed, save the image at 1x and 4x. Ends with exactly the intended graph."""
    import numpy as np
    from PIL import Image
    ed.idle()
    ed.root.locator('.sg2im-thumb[data-key="shapes_demo 2"]').click(); ed.idle()        # 13: example thumbnails
    demo = json.loads((Path(__file__).resolve().parent.parent / 'scene_graphs' / 'shapes_demo.json').read_text())[1]
    assert ed.graph()['objects'] == demo['objects'], ed.graph()
    assert ed.root.locator('select.sg2im-examples').input_value() == 'shapes_demo 2'  # the menu shows what is loaded
    assert 'sg2im-current' in ed.root.locator('.sg2im-thumb[data-key="shapes_demo 2"]').get_attribute('class')
    ed.click('sg2im-clear')
    for name in ('sky', 'grass', 'circle', 'star'): ed.add_object(name)
    ed.add_relationship('circle', 'above', 'grass')
    ids = ed.ids()
    ed.select('circle'); ed.pick('sg2im-rename', 'square'); ed.idle()                 # 10: edit in place
    (rid, text), = ed.relationships()
    assert text == f"square #{ids['circle']} above grass #{ids['grass']}", text
    ed.select_relationship(rid)
    ed.pick('sg2im-subject', 'square'); ed.pick('sg2im-predicate', 'left of'); ed.pick('sg2im-object', 'star')
    ed.click('sg2im-set-relationship'); ed.idle()
    assert ed.relationships() == [(rid, f"square #{ids['circle']} left of star #{ids['star']}")], ed.relationships()
    ed.select('sky'); ed.key('Delete'); ed.idle()                                       # 12: keys
    assert 'sky' not in ed.ids()
    ed.select('star'); before = ed.box_of('star')
    ed.key('ArrowRight'); ed.key('ArrowDown'); ed.key('ArrowDown')
    star, want = ed.box_of('star'), before
    for dx, dy in ((0.01, 0), (0, 0.01), (0, 0.01)): want = clip_move(want, dx, dy)
    assert close(star, want, 0.002), (before, star, want)
    assert ed.graph()['boxes'][2] is not None
    ed.key('Control+z'); ed.idle()
    undone = ed.graph()['boxes'][2]
    ed.key('Control+Shift+z'); ed.idle()
    assert ed.graph()['boxes'][2] == star and undone != star, (undone, star)
    strip = ed.root.locator('.sg2im-strip .sg2im-step')                                  # 11: history strip
    labels = strip.locator('figcaption').all_inner_texts()
    assert f"remove sky #{ids['sky']}" in labels, labels
    strip.nth(labels.index(f"remove sky #{ids['sky']}")).click(); ed.idle()
    assert ed.graph()['boxes'][2] is None and ed.graph()['objects'] == ['grass', 'square', 'star']
    assert ed.root.locator('.sg2im-before-after .sg2im-arrow').inner_text().startswith('→ back to remove sky')
    ed.key('Control+z'); ed.idle()                                                       # going back is undone like any edit
    assert ed.graph()['boxes'][2] == star
    old = ed.graph()['seed']
    ed.click('sg2im-random-seed'); ed.idle()                                             # 13: a random seed
    seed = ed.graph()['seed']
    assert seed != old and str(seed) == ed.root.locator('input.sg2im-seed').input_value() and 0 <= seed < 2**63
    one = np.asarray(Image.open(ed.download('sg2im-png', tmp / 'one.png')).convert('RGB'))
    four = np.asarray(Image.open(ed.download('sg2im-png4', tmp / 'four.png')).convert('RGB'))
    assert one.shape == (64, 64, 3) and four.shape == (256, 256, 3)
    assert np.array_equal(four, one.repeat(4, 0).repeat(4, 1))                           # nearest neighbour: 4 x 4 blocks
    g = ed.graph()
    assert g == {'objects': ['grass', 'square', 'star'], 'relationships': [[1, 'left of', 2]], 'boxes': [None, None, star],
                 'seed': seed}, g
    assert not ed.messages('error'), ed.messages('error')
    return g
