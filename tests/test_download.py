"Tests of sg2im_nb.data.download against a local HTTP server on 127.0.0.1 (nothing reaches the internet)."
import hashlib, io, json, os, re, resource, signal, socket, subprocess, sys, threading, time, zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import pytest
from sg2im_nb.cli import run_cli
from sg2im_nb.data.download import COLLECTIONS, DownloadError, Resource, download, fetch, main, unpack
from sg2im_nb.data.download_verify import MANIFEST, read_manifest

MODEL = '/sg2im-data/small/coco64.pt'


def _checkpoint(dim=8) -> bytes:
    "A real (small) sg2im checkpoint: what the structural check accepts."
    import torch
    from sg2im_nb.scene_graph import make_vocab
    from sg2im_nb.model.generator import Sg2ImModel
    torch.manual_seed(0)
    m = Sg2ImModel(make_vocab(['__image__', 'cat', 'dog'], ['__in_image__', 'on']), image_size=(16, 16), embedding_dim=dim,
                   gconv_dim=16, gconv_hidden_dim=32, gconv_num_layers=1, refinement_dims=(32, 16), mask_size=0)
    buf = io.BytesIO(); torch.save({'model_kwargs': m.model_kwargs, 'model_state': m.state_dict()}, buf)
    return buf.getvalue()


BLOB = _checkpoint()
N = len(BLOB)


class Handler(BaseHTTPRequestHandler):
    "Serves server.files; honours `Range: bytes=N-`; drops the connection after server.drop[path] bytes, once."
    timeout = 5

    def do_GET(self):
        mode = self.server.modes.get(self.path)
        if mode is not None: return self.hostile(mode)
        srv, rng = self.server, self.headers.get('Range')
        srv.log.append((self.path, rng)); srv.if_range.append(self.headers.get('If-Range'))
        data = srv.files.get(self.path)
        if data is None: return self.send_error(404)
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        if self.headers.get('If-Range') not in (None, etag): rng = None  # changed since: the whole file, 200
        start = int(re.match(r'bytes=(\d+)-', rng).group(1)) if rng else 0
        if start >= len(data) and rng:
            self.send_response(416); self.send_header('Content-Range', f'bytes */{len(data)}')
            self.send_header('Content-Length', '0'); self.end_headers(); return
        self.send_response(206 if start else 200)
        self.send_header('Content-Type', srv.types.get(self.path, 'application/octet-stream'))
        if srv.etags: self.send_header('ETag', etag)
        if start: self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        self.send_header('Content-Length', str(len(data) - start)); self.end_headers()
        body = data[start:][:srv.drop.pop(self.path, None)]
        srv.sent.append((self.path, len(body)))  # recorded before writing: the client may finish before this thread
        pace = srv.pace.get(self.path)
        try:
            if pace is None: self.wfile.write(body)
            else:  # (bytes, seconds): a slow but steady server
                for k in range(0, len(body), pace[0]): self.wfile.write(body[k:k + pace[0]]); self.wfile.flush(); time.sleep(pace[1])
        except OSError: pass  # the client hung up

    def hostile(self, mode):
        """endless: zeros without end, no Content-Length; trickle: 2 bytes a second; slow-headers: the headers 1 byte a second;
        bad-length: Content-Length abc."""
        try:
            if mode == 'slow-headers':
                for ch in b'HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n':
                    self.wfile.write(bytes([ch])); self.wfile.flush(); time.sleep(1)
                return
            self.send_response(200); self.send_header('Content-Type', 'application/octet-stream')
            if mode == 'bad-length': self.send_header('Content-Length', 'abc')
            self.end_headers()
            if mode == 'endless':
                while True: self.wfile.write(bytes(1 << 16))
            elif mode == 'trickle':
                for _ in range(120): self.wfile.write(b'PK'); self.wfile.flush(); time.sleep(1)
            else: self.wfile.write(BLOB)
        except OSError: pass  # the client hung up

    def log_message(self, *args): pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    srv.files, srv.drop, srv.log, srv.sent, srv.if_range, srv.types, srv.etags = {MODEL: BLOB}, {}, [], [], [], {}, True
    srv.modes, srv.pace = {}, {}
    srv.url = f'http://127.0.0.1:{srv.server_address[1]}'
    t = threading.Thread(target=srv.serve_forever, kwargs=dict(poll_interval=0.1), daemon=True)
    t.start()
    yield srv
    srv.shutdown(); srv.server_close(); t.join(5)


@pytest.fixture
def closed_url():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}'


def _cli(*args, file_size_limit=None):
    "The command as a process; `file_size_limit`: the most bytes it may write to one file (RLIMIT_FSIZE: writes past it fail with EFBIG)."
    env = {k: v for k, v in os.environ.items() if k != 'SG2IM_BASE_URL'}
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    return subprocess.run([sys.executable, '-m', 'sg2im_nb.data.download', *map(str, args)], capture_output=True,
                          text=True, timeout=60, env=env, preexec_fn=limit if file_size_limit else None)


def _one_error(res):
    "The one `error:` line of a finished command (progress bars aside), after checking there is nothing else."
    lines = [l for l in res.stderr.strip().splitlines() if l.strip() and 'B/s]' not in l and '?B/s' not in l]
    assert 'Traceback' not in res.stderr and len(lines) == 1 and lines[0].startswith('error: '), res.stderr[-3000:]
    return lines[0]


def _zip(members, method=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', method) as zf:
        for name, data in members.items(): zf.writestr(name, data)
    return buf.getvalue()


def test_complete_download_cli(server, tmp_path, capsys):  # in-process (run_cli parses argv like the script)
    assert run_cli(main, ['models', '--only', 'coco64', '--dir', str(tmp_path), '--base_url', server.url]) is None
    assert '1 file(s) ready' in capsys.readouterr().out
    assert (tmp_path / 'sg2im-models' / 'coco64.pt').read_bytes() == BLOB
    assert not list(tmp_path.rglob('*.part'))
    assert server.log == [(MODEL, None)]


def test_interrupted_then_resumed(server, tmp_path):
    server.drop[MODEL] = 20_000
    res = COLLECTIONS['models'][0]
    with pytest.raises(DownloadError, match=f'stopped at 20000 of {N} bytes.*run the same command again to resume'):
        fetch(res, tmp_path, server.url, progress=False)
    part = tmp_path / 'sg2im-models' / 'coco64.pt.part'
    assert part.stat().st_size == 20_000 and not (tmp_path / 'sg2im-models' / 'coco64.pt').exists()
    assert fetch(res, tmp_path, server.url, progress=False).read_bytes() == BLOB
    assert server.log == [(MODEL, None), (MODEL, 'bytes=20000-')]
    assert server.if_range == [None, f'"{hashlib.sha256(BLOB).hexdigest()[:16]}"']  # the validator the server gave
    assert server.sent == [(MODEL, 20_000), (MODEL, N - 20_000)]  # only the rest was fetched
    assert not part.exists() and not (tmp_path / 'sg2im-models' / 'coco64.pt.part.json').exists()


def test_part_of_another_version_is_not_spliced(server, tmp_path):
    "The file changed on the server after a broken download: If-Range fails, the whole new file comes."
    server.drop[MODEL] = 20_000
    res = COLLECTIONS['models'][0]
    with pytest.raises(DownloadError, match='resume'): fetch(res, tmp_path, server.url, progress=False)
    server.files[MODEL] = new = _checkpoint(dim=12)
    assert fetch(res, tmp_path, server.url, progress=False).read_bytes() == new
    assert server.log[-1] == (MODEL, 'bytes=20000-') and server.sent[-1] == (MODEL, len(new))


def test_part_without_validator_record_restarts(server, tmp_path):
    "A .part with no .part.json (older version, copied in) is never continued: bytes of unknown origin."
    part = tmp_path / 'sg2im-models' / 'coco64.pt.part'
    part.parent.mkdir(parents=True); part.write_bytes(os.urandom(20_000))
    assert fetch(COLLECTIONS['models'][0], tmp_path, server.url, progress=False).read_bytes() == BLOB
    assert server.log == [(MODEL, None)]


def test_server_without_validators_resumes_by_size(server, tmp_path):
    server.etags, server.drop[MODEL] = False, 20_000
    res = COLLECTIONS['models'][0]
    with pytest.raises(DownloadError, match='resume'): fetch(res, tmp_path, server.url, progress=False)
    assert fetch(res, tmp_path, server.url, progress=False).read_bytes() == BLOB
    assert server.log[-1] == (MODEL, 'bytes=20000-') and server.if_range[-1] is None


def test_416_and_server_ignoring_range(server, tmp_path):
    part = tmp_path / 'sg2im-models' / 'coco64.pt.part'
    part.parent.mkdir(parents=True)
    part.write_bytes(BLOB)  # complete .part: the server answers 416 and the file is verified
    side = part.with_name('coco64.pt.part.json')
    side.write_text(json.dumps({'url': server.url + MODEL, 'total': N}))
    assert fetch(COLLECTIONS['models'][0], tmp_path, server.url, progress=False).read_bytes() == BLOB
    assert server.log[-1] == (MODEL, f'bytes={N}-')
    # a .part longer than the file on the server is deleted
    part.write_bytes(BLOB + b'xx'); side.write_text(json.dumps({'url': server.url + MODEL}))
    r = Resource(COLLECTIONS['models'][0].url, 'sg2im-models/coco64.pt')
    (tmp_path / r.dest).unlink()
    with pytest.raises(DownloadError, match='deleted'): fetch(r, tmp_path, server.url, progress=False)
    assert not part.exists()


@pytest.mark.parametrize('kind', ['html', 'html-as-octets', 'random', 'random-zip'])
def test_wrong_answers_are_refused(kind, server, tmp_path):
    "An error page sent with 200 OK, or random bytes of the right length: exit 2, one line, nothing kept."
    page = b'<!DOCTYPE html>\n<html><body>Service temporarily unavailable</body></html>'
    path, only = (MODEL, 'coco64') if kind != 'random-zip' else ('/people/rak248/VG_100K_2/images.zip', 'images.zip')
    server.files[path] = page if kind.startswith('html') else os.urandom(N)
    if kind == 'html': server.types[path] = 'text/html; charset=utf-8'
    coll = 'vg' if kind == 'random-zip' else 'models'
    res = _cli(coll, '--only', only, '--dir', tmp_path, '--base_url', server.url)
    assert res.returncode == 2 and 'Traceback' not in res.stderr and 'ready' not in res.stdout, res.stderr
    lines = [l for l in res.stderr.strip().splitlines() if 'B/s]' not in l]  # the progress bar may come first
    assert len(lines) == 1 and lines[0].startswith('error: '), res.stderr
    want = {'html': 'answered with an HTML page', 'html-as-octets': 'HTML page', 'random': 'not a usable sg2im checkpoint',
            'random-zip': 'not a zip archive'}[kind]
    assert want in lines[0], lines[0]
    assert not [p for p in tmp_path.rglob('*') if p.is_file()], list(tmp_path.rglob('*'))  # no file, no .part, no manifest


def test_manifest_and_reverification(server, tmp_path, capsys):
    "A verified file is recorded (size, sha256, ETag); the next run hashes it again and notices a change."
    assert run_cli(main, ['models', '--only', 'coco64', '--dir', str(tmp_path), '--base_url', server.url]) is None
    rec = read_manifest(tmp_path)['sg2im-models/coco64.pt']
    assert rec['size'] == N and rec['sha256'] == hashlib.sha256(BLOB).hexdigest() and rec['etag'].startswith('"')
    p = tmp_path / 'sg2im-models' / 'coco64.pt'
    data = bytearray(BLOB); data[N // 2] ^= 0xFF; p.write_bytes(bytes(data))  # same size, one byte changed
    capsys.readouterr()
    assert run_cli(main, ['models', '--only', 'coco64', '--dir', str(tmp_path), '--base_url', server.url]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'changed since it was verified' in err and f'delete {p}' in err
    assert len(server.log) == 1  # never downloaded again behind the user's back
    # a file placed by hand is checked like a download before it is recorded
    (tmp_path / MANIFEST).unlink(); p.write_bytes(b'<html>not a model</html>')
    assert run_cli(main, ['models', '--only', 'coco64', '--dir', str(tmp_path), '--base_url', server.url]) == 2
    assert 'HTML page' in capsys.readouterr().err


def test_truncated_and_corrupt(server, tmp_path):
    url = COLLECTIONS['models'][0].url
    server.drop[MODEL] = 30_000  # truncated body: the connection closes before Content-Length bytes
    with pytest.raises(DownloadError, match=f'stopped at 30000 of {N} bytes; .*a.pt.part is kept'):
        fetch(Resource(url, 'a.pt'), tmp_path, server.url, progress=False)
    assert (tmp_path / 'a.pt.part').stat().st_size == 30_000  # kept for resume
    with pytest.raises(DownloadError, match=f'the server has {N} bytes but {N + 10} are expected'):
        fetch(Resource(url, 'e.pt', size=N + 10), tmp_path, server.url, progress=False)  # table and server disagree
    with pytest.raises(DownloadError, match='checksum mismatch'):
        fetch(Resource(url, 'b.pt', sha256='0' * 64), tmp_path, server.url, progress=False)
    assert not (tmp_path / 'b.pt').exists() and not (tmp_path / 'b.pt.part').exists()
    good = hashlib.sha256(BLOB).hexdigest()
    assert fetch(Resource(url, 'c.pt', size=len(BLOB), sha256=good), tmp_path, server.url, progress=False).is_file()
    (tmp_path / 'd.pt').write_bytes(BLOB[:10])  # a complete-looking file of the wrong size
    with pytest.raises(DownloadError, match=f'has 10 bytes, expected {N}'):
        fetch(Resource(url, 'd.pt', size=len(BLOB)), tmp_path, server.url, progress=False)


def test_refused_connection_cli(closed_url, tmp_path):
    res = _cli('models', '--only', 'vg128.pt', '--dir', tmp_path, '--base_url', closed_url)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in res.stderr
    assert lines[0].startswith(f'error: {closed_url}/sg2im-data/small/vg128.pt: cannot download')
    assert f'place it at {tmp_path / "sg2im-models" / "vg128.pt"}' in lines[0]


def test_errors_one_line_per_file_and_env_base_url(server, tmp_path):
    env = dict(os.environ, SG2IM_BASE_URL=server.url)  # the server only has coco64.pt
    res = subprocess.run([sys.executable, '-m', 'sg2im_nb.data.download', 'models', '--dir', str(tmp_path)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    lines = [l for l in res.stderr.splitlines() if l.startswith('error:')]
    assert [l.split(': ')[1].rsplit('/', 1)[1] for l in lines] == ['vg64.pt', 'vg128.pt']
    assert all('HTTP 404' in l for l in lines)
    assert (tmp_path / 'sg2im-models' / 'coco64.pt').read_bytes() == BLOB


def test_unknown_collection(capsys):
    with pytest.raises(SystemExit) as e: run_cli(main, ['cocoa'])
    assert e.value.code == 2
    assert capsys.readouterr().err == 'error: unknown collection cocoa; choose from models, ablated, coco, vg\n'


def test_zip_layout_and_skip(server, tmp_path, capsys):
    server.files.update({
        '/annotations/annotations_trainval2017.zip': _zip({'annotations/instances_train2017.json': '{}',
                                                           'annotations/instances_val2017.json': '{}'}),
        '/annotations/stuff_annotations_trainval2017.zip': _zip({
            'annotations/stuff_train2017.zip': _zip({'stuff_train2017.json': '{}'}),
            'annotations/stuff_val2017.zip': _zip({'stuff_val2017.json': '{}'})}),
        '/zips/train2017.zip': _zip({'train2017/000000000009.jpg': b'a'}),
        '/zips/val2017.zip': _zip({'val2017/000000000139.jpg': b'b'}),
    })
    download('coco', tmp_path, server.url, progress=False)
    coco = tmp_path / 'datasets' / 'coco'
    for f in ('annotations/instances_train2017.json', 'annotations/instances_val2017.json',
              'annotations/stuff_train2017.json', 'annotations/stuff_val2017.json',
              'images/train2017/000000000009.jpg', 'images/val2017/000000000139.jpg'):
        assert (coco / f).is_file(), f
    assert sorted(p.name for p in (tmp_path / 'datasets').iterdir()) == ['coco']  # no temporary folder left
    n = len(server.log)
    capsys.readouterr()
    assert run_cli(main, ['coco', '--dir', str(tmp_path), '--base_url', server.url]) is None  # all complete
    assert capsys.readouterr().out.count('already complete, skipped (verified)') == 4
    assert len(server.log) == n  # no request made


def test_corrupt_zip_leaves_no_folder(server, tmp_path):
    data = bytearray(_zip({'VG_100K/1.jpg': b'x' * 5000, 'VG_100K/2.jpg': b'y' * 5000}, zipfile.ZIP_STORED))
    data[6000] ^= 0xFF  # inside the second member: the first one unpacks before the CRC error
    server.files['/people/rak248/VG_100K_2/images.zip'] = bytes(data)
    res = _cli('vg', '--only', 'images.zip', '--dir', tmp_path, '--base_url', server.url)
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    assert 'VG_100K/2.jpg fails its CRC check' in res.stderr and 'images.zip' in res.stderr  # checked before "ready"
    vg = tmp_path / 'datasets' / 'vg'
    assert sorted(p.name for p in vg.iterdir()) == []  # no images/ folder, no temporary folder, no damaged zip kept
    bad = vg / 'bad.zip'; bad.write_bytes(bytes(data))  # unpack checks the CRCs too
    with pytest.raises(DownloadError, match='cannot unpack'): unpack(bad, vg / 'images')
    assert sorted(p.name for p in vg.iterdir()) == ['bad.zip']
    assert sorted(p.name for p in (tmp_path / 'datasets').iterdir()) == ['vg']
    # a good zip afterwards unpacks into datasets/vg/images/VG_100K with its completion marker
    good = tmp_path / 'good.zip'
    good.write_bytes(_zip({'VG_100K/1.jpg': b'x'}))
    assert unpack(good, vg / 'images') == vg / 'images'
    assert (vg / 'images' / 'VG_100K' / '1.jpg').is_file() and (vg / 'images' / '.good.zip.unpacked').is_file()



# ---------------------------------------------------------------------------------------------------------------
# issue 23, items 8 and 10: sizes, stalls, bad headers, full disks, Ctrl-C

def test_endless_stream_is_stopped(server, tmp_path):
    "A server that streams without end (no Content-Length) is stopped at the file's ceiling, and nothing is kept."
    server.modes['/endless.pt'] = 'endless'
    with pytest.raises(DownloadError, match=r'the server sent more than 1,048,576 bytes \(1 MiB\), the most this file can have'):
        fetch(Resource('https://example.org/endless.pt', 'e.pt', max_size=1 << 20), tmp_path, server.url, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert all(r.max_size for rs in COLLECTIONS.values() for r in rs)  # every published file has a ceiling


def test_announced_size_over_the_ceiling(server, tmp_path):
    with pytest.raises(DownloadError, match=f'the server announces {N:,} bytes, more than the 1 KiB this file can have'):
        fetch(Resource(COLLECTIONS['models'][0].url, 'x.pt', max_size=1024), tmp_path, server.url, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('mode', ['trickle', 'slow-headers'])
def test_trickle_is_timed_out_cli(mode, server, tmp_path):
    "2 bytes a second never trips a socket timeout; --timeout 1 still stops it, with one line."
    server.modes['/sg2im-data/small/coco64.pt'] = mode
    t0 = time.monotonic()
    res = _cli('models', '--only', 'coco64', '--dir', tmp_path, '--base_url', server.url, '--timeout', '1')
    print(f'{mode}: stopped after {time.monotonic() - t0:.1f} s (the process, start-up included)')
    assert res.returncode == 2
    line = _one_error(res)
    assert 'the transfer stalled' in line and 'bytes/s' in line and '--timeout span of 1 s' in line, line


def test_bad_content_length_cli(server, tmp_path):
    server.modes['/sg2im-data/small/coco64.pt'] = 'bad-length'
    res = _cli('models', '--only', 'coco64', '--dir', tmp_path, '--base_url', server.url)
    assert res.returncode == 2
    assert "the server sent a bad reply: Content-Length 'abc' is not a number of bytes" in _one_error(res)


def test_full_disk_names_it_and_resumes(server, tmp_path):
    "A file-size limit (EFBIG, as a full disk gives ENOSPC): one line naming the .part and the cause; then a resume."
    res = _cli('models', '--only', 'coco64', '--dir', tmp_path, '--base_url', server.url, file_size_limit=8192)
    assert res.returncode == 2
    line = _one_error(res)
    part = tmp_path / 'sg2im-models' / 'coco64.pt.part'
    assert f'cannot write {part}: the file would exceed the largest file allowed here' in line, line
    assert 'run the same command again to resume' in line and part.stat().st_size == 8192
    res = _cli('models', '--only', 'coco64', '--dir', tmp_path, '--base_url', server.url)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / 'sg2im-models' / 'coco64.pt').read_bytes() == BLOB and server.log[-1] == (MODEL, 'bytes=8192-')


def test_ctrl_c_one_line_then_resume(server, tmp_path):
    "Ctrl-C during a slow download: one line naming the kept .part, exit 130; the next run fetches only the rest."
    server.pace[MODEL] = (512, 0.1)  # 5 KiB/s: slow, above the least pace
    env = {k: v for k, v in os.environ.items() if k != 'SG2IM_BASE_URL'}
    p = subprocess.Popen([sys.executable, '-m', 'sg2im_nb.data.download', 'models', '--only', 'coco64', '--dir', str(tmp_path),
                          '--base_url', server.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    part = tmp_path / 'sg2im-models' / 'coco64.pt.part'
    try:
        while p.poll() is None and not (part.is_file() and part.stat().st_size >= 1024): time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130, err[-2000:]
    line = _one_error(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    assert line.startswith('error: interrupted (Ctrl-C) while downloading') and f'{part} keeps' in line and 'to resume' in line, line
    kept = part.stat().st_size
    assert 0 < kept < N
    server.pace.clear()
    res = _cli('models', '--only', 'coco64', '--dir', tmp_path, '--base_url', server.url)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / 'sg2im-models' / 'coco64.pt').read_bytes() == BLOB and server.log[-1] == (MODEL, f'bytes={kept}-')
