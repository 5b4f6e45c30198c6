"""`sg2im-app` for real: start the Voila server on 127.0.0.1 with a free port, open the printed address (token
included) in headless Chromium (Playwright) and play the same realistic editing session as in JupyterLab, actions
250 ms apart, then the explorer's session. The page must load nothing from outside 127.0.0.1 and log no errors.

Needs Debian's chromium at /usr/bin/chromium, the `playwright` and `voila` Python packages; skips only when one of
them is missing. Set SG2IM_SCREENSHOTS=data/screenshots to keep the screenshot in the repository."""
import pytest
from editor_session import sync_api, browser_marks, Editor, browser_page, explorer_session, session_and_screenshot, sg2im_app

try: import voila
except ImportError: voila = None

pytestmark = browser_marks() + [pytest.mark.skipif(voila is None, reason='voila missing (pip install "sg2im_nb[widgets]")')]


def test_editor_session_in_sg2im_app(tmp_path):
    with sg2im_app(tmp_path) as (url, proc, log), browser_page(sync_api, tmp_path) as page:
        page.goto(url, timeout=120_000)
        root = page.locator('.sg2im-editor').first
        root.wait_for(timeout=120_000)
        ed = Editor(page, root)
        def shoot():                                                             # the page's title and the editor
            box = root.bounding_box()
            return page.screenshot(clip={'x': 0, 'y': 0, 'width': box['x'] + box['width'] + 16, 'height': box['y'] + box['height'] + 8})
        session_and_screenshot(ed, tmp_path, 'editor_app.png', shoot)
        explorer_session(ed, tmp_path)
        assert page.problems == {'console': [], 'pageerror': [], 'remote': []}, page.problems
