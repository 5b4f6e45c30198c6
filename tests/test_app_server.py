"""`sg2im-app` as a server, with real HTTP requests, real WebSocket handshakes and headless Chromium:

- it answers only its own origin: a foreign Host gets 403 on every path, a WebSocket from a foreign origin is
  refused, a visitor without the token gets no kernel (issue 23, item 5);
- it frees the kernels of pages that are gone: a reload shuts the old kernel down (with the page's _xsrf token), a
  reload with unsaved edits asks first, and six visits that never come back leave at most one kernel two minutes
  later, the app's memory back near its start (issue 22, defect 2; the slowest editor test, about two minutes);
- it refuses a checkpoint that is not a generator at start, with one line and exit 2 (issue 22, defects 6 and 9);
- its temporary folder goes when it stops, by Ctrl-C or SIGTERM (issue 23, item 14).

Needs the `voila` package (and for the page tests Debian's chromium and `playwright`)."""
import base64, http.client, os, re, signal, socket, subprocess, time, urllib.parse
from pathlib import Path
import pytest
from editor_session import CHROMIUM, Editor, app_command, browser_page, free_port, sg2im_app

sync_api = None
try: from playwright import sync_api
except ImportError: pass
psutil = pytest.importorskip('psutil')
pytest.importorskip('voila')
REPO = Path(__file__).resolve().parent.parent
needs_browser = pytest.mark.skipif(not Path(CHROMIUM).exists() or sync_api is None,
                                   reason=f'{CHROMIUM} or playwright missing (bash .ci/setup_browser)')


def kernels(proc) -> list:
    "The kernels the app runs (its child processes running ipykernel)."
    return [p for p in psutil.Process(proc.pid).children(recursive=True) if 'ipykernel' in ' '.join(p.cmdline())]


def tree_mb(proc) -> float:
    "Resident memory of the app and its children, MB."
    ps = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    return sum(p.memory_info().rss for p in ps if p.is_running()) / 2**20


def wait_until(f, timeout, step=1.0):
    end = time.time() + timeout
    while time.time() < end:
        if f(): return True
        time.sleep(step)
    return f()


def get(url, host=None, cookies=''):
    "(status, headers, body) of a GET, with an optional Host header; redirects are not followed."
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    c.request('GET', u.path + (f'?{u.query}' if u.query else ''), headers={'Host': host or u.netloc, 'Cookie': cookies})
    r = c.getresponse()
    return r.status, r.getheaders(), r.read().decode(errors='replace')


def visit(url) -> tuple:
    "Load the page as a browser would, without a browser: (kernel id, cookies)."
    status, headers, body = get(url)
    assert status == 200, (status, body[:300])
    cookies = '; '.join(v.split(';')[0] for k, v in headers if k.lower() == 'set-cookie')
    return re.search(r'"kernelId": *"([^"]+)"', body).group(1), cookies


def shutdown(port, kid, cookies) -> int:
    "POST the page's shutdown request for kernel `kid`, with the _xsrf token from its cookie, as Voila's page does."
    xsrf = re.search(r'_xsrf=([^;]+)', cookies).group(1)
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
    c.request('POST', f'/voila/api/shutdown/{kid}', body=urllib.parse.urlencode({'_xsrf': xsrf}),
              headers={'Cookie': cookies, 'Content-Type': 'application/x-www-form-urlencoded'})
    return c.getresponse().status


def handshake(port, path, host, origin, cookies) -> str:
    "The status line the server answers to a real WebSocket opening handshake."
    with socket.create_connection(('127.0.0.1', port), timeout=30) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f'GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                   f'Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\nCookie: {cookies}\r\n\r\n').encode())
        return s.recv(4096).decode(errors='replace').splitlines()[0]


@pytest.fixture(scope='module')
def app(tmp_path_factory):
    with sg2im_app(tmp_path_factory.mktemp('app')) as running: yield running


def test_only_its_own_origin(app):
    url, proc, log = app
    port = urllib.parse.urlsplit(url).port
    assert '?token=' in url and len(url.split('token=')[1]) >= 32                   # a token in the printed address
    for path in ('/', '/voila/static/voila.js', '/api/kernels', '/voila/api/shutdown/x', '/voila/templates/lab/static/x.css'):
        status, _, body = get(f'http://127.0.0.1:{port}{path}', host=f'evil.example.com:{port}')
        assert status == 403 and 'not this server' in body, (path, status, body[:200])
    status, headers, _ = get(f'http://127.0.0.1:{port}/')                          # no token: no page, no kernel
    assert status in (302, 403) and not kernels(proc), status
    kid, cookies = visit(url)
    for host in (f'127.0.0.1:{port}', f'localhost:{port}'):
        assert get(f'http://127.0.0.1:{port}/voila/static/voila.js', host=host)[0] == 200
    ws = f'/api/kernels/{kid}/channels'
    assert handshake(port, ws, f'127.0.0.1:{port}', f'http://127.0.0.1:{port}', cookies).startswith('HTTP/1.1 101')
    assert handshake(port, ws, f'127.0.0.1:{port}', 'http://evil.example.com', cookies).startswith('HTTP/1.1 403')
    assert handshake(port, ws, f'evil.example.com:{port}', f'http://evil.example.com:{port}', cookies).startswith('HTTP/1.1 403')
    assert handshake(port, ws, f'127.0.0.1:{port}', f'http://127.0.0.1:{port}', '').split()[1] in ('401', '403')  # no cookie
    assert shutdown(port, kid, cookies) == 204                                      # what the page sends when it is left
    assert wait_until(lambda: not kernels(proc), 20)


@needs_browser
def test_a_reload_frees_the_old_kernel_and_asks_about_unsaved_edits(app, tmp_path):
    url, proc, log = app
    assert not kernels(proc)
    with browser_page(sync_api, tmp_path) as page:
        dialogs, answers = [], []                                                    # answers: True leaves, False stays
        page.on('dialog', lambda d: (dialogs.append(d.type), d.accept() if answers.pop(0) else d.dismiss()))
        page.goto(url, timeout=120_000)
        ed = Editor(page, page.locator('.sg2im-editor').first)
        ed.root.wait_for(timeout=120_000); ed.idle()
        first = {k.pid for k in kernels(proc)}
        assert len(first) == 1
        page.reload(timeout=120_000)                                                # nothing edited: no question
        ed.root.wait_for(timeout=120_000); ed.idle()
        assert dialogs == [] and wait_until(lambda: {k.pid for k in kernels(proc)} - first and len(kernels(proc)) == 1, 20), \
            [k.pid for k in kernels(proc)]
        ed.add_object('star'); ed.idle()                                            # an unsaved edit
        second = {k.pid for k in kernels(proc)}
        answers.append(False)                                                       # "stay": the page and its kernel stay
        page.evaluate('() => { setTimeout(() => location.reload(), 0); }')
        page.wait_for_timeout(3000)
        assert dialogs == ['beforeunload'] and {k.pid for k in kernels(proc)} == second, (dialogs, kernels(proc))
        ed.add_object('heart'); ed.idle()
        assert ed.graph()['objects'][-2:] == ['star', 'heart']                      # the editor still works
        answers.append(True)                                                        # "leave": the old kernel goes
        page.reload(timeout=120_000)
        ed.root.wait_for(timeout=120_000); ed.idle()
        assert dialogs == ['beforeunload'] * 2, dialogs
        assert wait_until(lambda: not ({k.pid for k in kernels(proc)} & second) and len(kernels(proc)) == 1, 20)
        assert "'_xsrf' argument missing" not in log.read_text()


def test_six_visits_that_never_come_back_are_culled(tmp_path):
    "Six visits without a goodbye (no WebSocket, no shutdown request): at most one kernel two minutes later. ~2 minutes."
    with sg2im_app(tmp_path) as (url, proc, log):
        start = tree_mb(proc)
        for _ in range(6): visit(url)
        six = kernels(proc)
        peak = tree_mb(proc)
        t0 = time.time()
        assert len(six) == 6
        assert wait_until(lambda: len(kernels(proc)) <= 1, 120, step=5), len(kernels(proc))
        took = time.time() - t0
        assert wait_until(lambda: not kernels(proc), 30, step=2)
        end = tree_mb(proc)
        print(f'\nsg2im-app memory: {start:.0f} MB at start, {peak:.0f} MB with six kernels, {end:.0f} MB after culling '
              f'({took:.0f} s after the sixth visit)')
        assert end < start + 150, (start, peak, end)


def run_app(*args, cwd, timeout=90):
    "The app's exit status and stderr; it must exit by itself (a server that starts is killed and fails the test)."
    env = dict(os.environ, TMPDIR=str(cwd), PYTHONUNBUFFERED='1')
    p = subprocess.Popen(app_command(free_port(), *args), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try: out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); out, err = p.communicate()
        pytest.fail(f'sg2im-app {args} started instead of refusing: {out[-500:]}')
    return p.returncode, err.strip().splitlines()


def test_a_checkpoint_that_is_not_a_generator_is_refused_at_start(tmp_path):
    (tmp_path / 'notes.pt').write_text('not a checkpoint')
    blob = (REPO / 'data' / 'models' / 'shapes64.pt').read_bytes()
    (tmp_path / 'half.pt').write_bytes(blob[:len(blob) // 2])                      # a download cut in the middle
    classifier = REPO / 'data' / 'models' / 'shapes_classifier.pt'
    for ck, says in ((classifier, 'shapes_classifier.pt'), (tmp_path / 'notes.pt', 'notes.pt is truncated or not a PyTorch checkpoint'),
                     (tmp_path / 'half.pt', 'half.pt is truncated or not a PyTorch checkpoint')):
        code, err = run_app('--checkpoint', str(ck), cwd=tmp_path)
        assert code == 2 and len(err) == 1 and err[0].startswith('error: ') and says in err[0], (ck.name, code, err)
    assert not list(tmp_path.glob('sg2im-app-*'))


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_the_temporary_folder_goes_when_the_app_stops(tmp_path, sig):
    with sg2im_app(tmp_path) as (url, proc, log):
        visit(url)
        assert len(list(tmp_path.glob('sg2im-app-*'))) == 1 and len(kernels(proc)) == 1
        kids = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
    assert not list(tmp_path.glob('sg2im-app-*')) and not list(tmp_path.glob('voila_*'))
    assert not [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
    assert 'sg2im-app: stopped' in log.read_text()
