"""The interactive notebook in a real browser: JupyterLab + headless Chromium (Playwright), run all cells, move the seed
slider and press 'resample', and check from screenshots that the generated image changes.

Needs Debian's chromium at /usr/bin/chromium and the `playwright` Python package (`bash .ci/setup_browser`); we never
run `playwright install`. Skips only when one of them is missing."""
import io, json, os, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
sync_api = None
try: from playwright import sync_api
except ImportError: pass

pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f'{CHROMIUM} missing (bash .ci/setup_browser)'),
              pytest.mark.skipif(sync_api is None, reason='playwright missing (bash .ci/setup_browser)')]


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r: return r.status, r.read()


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 (free port, token) whose root holds a copy of the interactive notebook."
    root = tmp_path_factory.mktemp('lab')
    shutil.copy(REPO / 'nbs' / '31_widgets.ipynb', root / 'widgets.ipynb')
    cfg = root / '.config'; (cfg / 'labconfig').mkdir(parents=True)
    (cfg / 'labconfig' / 'page_config.json').write_text(json.dumps(  # no news pop-up, no update check
        {'disabledExtensions': {'@jupyterlab/apputils-extension:announcements': True}}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(cfg), JUPYTER_RUNTIME_DIR=str(root / '.runtime'),
               JUPYTERLAB_SETTINGS_DIR=str(root / '.settings'), JUPYTERLAB_WORKSPACES_DIR=str(root / '.workspaces'),
               PYTHONUNBUFFERED='1')
    port, token = _free_port(), secrets.token_hex(16)
    log = open(root / 'lab.log', 'wb')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
                             '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}', '--ServerApp.open_browser=False',
                             f'--ServerApp.root_dir={root}', '--LabApp.expose_app_in_browser=True',
                             '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate']
                            + (['--allow-root'] if os.geteuid() == 0 else []),
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None: pytest.fail(f'jupyter lab exited: {(root / "lab.log").read_text()[-2000:]}')
            try:
                if _get(f'{base}/api/status?token={token}')[0] == 200: break
            except OSError: pass
            if time.time() > deadline: pytest.fail('jupyter lab did not start within 60 s')
            time.sleep(0.3)
        yield base, token
    finally:
        try:  # polite shutdown (stops the kernels too), then make sure the whole process group is gone
            urllib.request.urlopen(urllib.request.Request(f'{base}/api/shutdown?token={token}', method='POST'), timeout=5)
            proc.wait(timeout=15)
        except Exception: pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(timeout=10)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(timeout=10)
        try: os.killpg(proc.pid, signal.SIGKILL)  # stray kernels left in the group
        except ProcessLookupError: pass
        log.close()


@pytest.fixture(scope='module')
def page(lab):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000)
        try:
            pg = browser.new_page(viewport={'width': 1600, 'height': 1200})
            pg.set_default_timeout(60_000)
            yield pg
        finally: browser.close()


def _shot(el) -> np.ndarray:
    el.scroll_into_view_if_needed()
    return np.asarray(Image.open(io.BytesIO(el.screenshot())).convert('RGB')).astype(np.int16)


def _wait_changed(el, before, timeout=30):
    "Screenshot `el` until it differs from `before`; return the new screenshot and the mean absolute difference."
    deadline = time.time() + timeout
    while True:
        now = _shot(el)
        diff = float(np.abs(now - before).mean()) if now.shape == before.shape else 255.0
        if diff > 0.5 or time.time() > deadline: return now, diff
        time.sleep(0.25)


def test_editor_in_jupyterlab(lab, page):
    base, token = lab
    t0 = time.time()
    page.goto(f'{base}/lab/tree/widgets.ipynb?token={token}')
    page.wait_for_function('() => window.jupyterapp && document.querySelector(".jp-Notebook .jp-Cell")')
    page.wait_for_function('''() => { const w = window.jupyterapp.shell.currentWidget;
        return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
               && w.sessionContext.session.kernel.status === 'idle'; }''', timeout=90_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.locator('.jp-OutputArea-output', has_text='median update:').first.wait_for(timeout=120_000)  # the last cell ran
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
    assert not [e for e in errors if 'Error' in e], errors
    image = page.locator('img.sg2im-image').first
    image.wait_for(state='visible')
    s0 = _shot(image)
    assert s0.shape[0] >= 200 and s0.std() > 1  # a real, enlarged picture, not an empty element

    readout = page.locator('.sg2im-seed .widget-readout').first
    seed0 = int(readout.inner_text())
    handle = page.locator('.sg2im-seed .noUi-handle').first   # move the seed slider with the keyboard
    handle.scroll_into_view_if_needed(); handle.focus()
    for _ in range(3): page.keyboard.press('ArrowRight')
    s1, d1 = _wait_changed(image, s0)
    assert int(readout.inner_text()) == seed0 + 3
    assert d1 > 0.5, f'image did not change after moving the seed slider (mean abs diff {d1:.3f})'

    page.locator('button.sg2im-resample').first.click()       # press the resample button
    s2, d2 = _wait_changed(image, s1)
    assert d2 > 0.5, f'image did not change after pressing resample (mean abs diff {d2:.3f})'
    assert int(readout.inner_text()) == seed0 + 4
    if os.environ.get('SG2IM_BROWSER_SHOTS'):  # keep pictures for a human to look at
        out = Path(os.environ['SG2IM_BROWSER_SHOTS']); out.mkdir(parents=True, exist_ok=True)
        page.locator('.sg2im-image').first.evaluate('e => e.closest(".jp-OutputArea-output").scrollIntoView()')
        page.screenshot(path=str(out / 'lab.png'))
        for k, a in enumerate((s0, s1, s2)): Image.fromarray(a.astype(np.uint8)).save(out / f'image{k}.png')
    assert time.time() - t0 < 240
