"""The scene-graph editor in a real JupyterLab 4 with headless Chromium (Playwright): a realistic editing session with
actions 250 ms apart must give exactly the intended scene graph, errors and warnings must show in the editor, and
nothing may reach JupyterLab's log console or the browser console.

Needs Debian's chromium at /usr/bin/chromium and the `playwright` Python package (`bash .ci/setup_browser`); we never
run `playwright install`. Skips only when one of them is missing. Set SG2IM_SCREENSHOTS=data/screenshots to keep the
screenshot in the repository (it always goes to the test's temporary folder)."""
import json, os, secrets, sys
from pathlib import Path
import pytest
from editor_session import CHROMIUM, Editor, browser_page, free_port, server, session_and_screenshot

sync_api = None
try: from playwright import sync_api
except ImportError: pass

pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f'{CHROMIUM} missing (bash .ci/setup_browser)'),
              pytest.mark.skipif(sync_api is None, reason='playwright missing (bash .ci/setup_browser)')]

NOTEBOOK = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': 'editor', 'metadata': {}, 'outputs': [],
                       'source': "from sg2im_nb.editor.widget import SceneGraphEditor\nSceneGraphEditor(device='cpu')"}],
            'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
            'nbformat': 4, 'nbformat_minor': 5}


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 (free port, token) whose root holds a notebook that shows an editor."
    root = tmp_path_factory.mktemp('lab')
    (root / 'editor.ipynb').write_text(json.dumps(NOTEBOOK))
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
        yield base, token, root


def test_editor_session_in_jupyterlab(lab, tmp_path):
    base, token, root = lab
    with browser_page(sync_api, tmp_path) as page:
        page.goto(f'{base}/lab/tree/editor.ipynb?token={token}')
        page.wait_for_function('''() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
                   && w.sessionContext.session.kernel.status === 'idle'; }''', timeout=90_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        root_el = page.locator('.sg2im-editor').first
        root_el.wait_for(timeout=90_000)
        ed = Editor(page, root_el)
        session_and_screenshot(ed, tmp_path, 'editor_jupyterlab.png', root_el.screenshot)
        # nothing reached the log console: open it and look, and the browser console has no errors either
        page.evaluate("() => window.jupyterapp.commands.execute('logconsole:open', {source: 'editor.ipynb'})")
        panel = page.locator('.jp-LogConsolePanel').first
        panel.wait_for()
        page.wait_for_timeout(500)
        logged = panel.locator('.jp-OutputArea-output').all_inner_texts()
        assert logged == [], logged
        assert page.problems == {'console': [], 'pageerror': [], 'remote': []}, page.problems
