"""Shared by the browser tests of the scene-graph editor (JupyterLab and `sg2im-app`): start a local server, drive
Debian's chromium with Playwright, and play a realistic editing session with actions 250 ms apart.

Not a test file itself (pytest collects only test_*.py). We never run `playwright install`."""
import contextlib, json, os, re, signal, socket, subprocess, time, urllib.request
from pathlib import Path

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
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
        w, h, fx, fy = b[2] - b[0], b[3] - b[1], dx / r['width'], dy / r['height']
        nx, ny = min(max(b[0] + fx, 0), 1 - w), min(max(b[1] + fy, 0), 1 - h)
        return [nx, ny, nx + w, ny + h]

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
