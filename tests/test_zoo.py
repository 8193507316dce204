"""Model zoo: registry data, verified/resumable downloads against a local HTTP server, install
from a local file, cache location, and the `zoo` CLI. No network: everything is on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import http.server
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from restorekit.cli.zoo import zoo_app
from restorekit.core.errors import BadInputError
from restorekit.models import zoo

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ANIME = SHARED / "weights" / "realesr-animevideov3.pth"
PAYLOAD = os.urandom(300_000 + 123)
runner = CliRunner()


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not present: {path} (../shared is provided on CI and developer machines)")
    return path


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path; honours `Range: bytes=N-` unless the server says not to."""

    def do_GET(self):  # noqa: N802 - http.server naming
        srv = self.server
        srv.seen.append(self.headers.get("Range"))
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not srv.ignore_range:
            start = int(m.group(1))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = PAYLOAD[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            body = PAYLOAD
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after:  # drop the connection part-way, once
            self.wfile.write(body[:srv.cut_after])
            srv.cut_after = 0
            self.close_connection = True
            return
        if srv.delay:  # a slow link: 4 KiB at a time
            try:
                for i in range(0, len(body), 4096):
                    self.wfile.write(body[i:i + 4096])
                    self.wfile.flush()
                    time.sleep(srv.delay)
            except OSError:  # the client was killed
                pass
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.seen, srv.ignore_range, srv.cut_after, srv.delay = [], False, 0, 0.0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache via RESTOREKIT_CACHE; proxies bypassed so 127.0.0.1 is reached directly."""
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    return tmp_path / "cache"


def _register(monkeypatch, url: str, sha256: str | None = hashlib.sha256(PAYLOAD).hexdigest()) -> zoo.ZooEntry:
    entry = dataclasses.replace(zoo.get_entry("realesr-general-x4v3"), name="test-model", filename="test-model.pth",
                                url=url, sha256=sha256, size=len(PAYLOAD), also_sha256=())
    monkeypatch.setitem(zoo.REGISTRY, entry.name, entry)
    return entry


def _url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/models/test-model.pth"


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_zoo_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, restorekit.models.zoo; print(sorted({'torch', 'rich', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- registry -------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", zoo.list_entries(), ids=lambda e: e.name)
def test_every_entry_is_well_formed(entry):
    assert entry.task in zoo.ZOO_TASKS
    assert entry.url.startswith("https://") and entry.filename and entry.licence and entry.io
    assert entry.description and entry.arch and entry.scale >= 1
    for h in entry.accepted_sha256:
        assert re.fullmatch(r"[0-9a-f]{64}", h), h
    assert entry.sha256 is None or entry.sha256_source, "say where a recorded sha256 came from"
    assert zoo.get_entry(entry.name) is entry


def test_registry_covers_the_issue_and_marks_licences():
    names = {e.name for e in zoo.list_entries()}
    assert {"RealESRGAN_x4plus", "RealESRGAN_x2plus", "realesr-general-x4v3", "realesr-animevideov3", "GFPGANv1.3",
            "GFPGANv1.4", "CodeFormer", "ddcolor_paper", "ddcolor_paper_tiny", "big-lama",
            "retinaface_mobilenet0.25"} <= names
    assert {e.task for e in zoo.list_entries()} == set(zoo.ZOO_TASKS)
    assert zoo.get_entry("CodeFormer").non_commercial and "S-Lab" in zoo.get_entry("CodeFormer").licence
    assert not zoo.get_entry("RealESRGAN_x4plus").non_commercial
    # the two hashes of ../shared/README.md are accepted as recorded there
    assert "4e1e09ba96d08bd4b8455e8897c3242a3501e3766f359941ea894122e158a932" in \
        zoo.get_entry("realesr-animevideov3").accepted_sha256
    assert zoo.get_entry("retinaface_mobilenet0.25").sha256 == \
        "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1"


def test_unknown_name_suggests_the_closest():
    with pytest.raises(BadInputError, match="did you mean 'CodeFormer'"):
        zoo.get_entry("codefromer")
    assert zoo.get_entry("codeformer").name == "CodeFormer"


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path / "rk"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "rk" and zoo.models_dir() == tmp_path / "rk" / "models"
    monkeypatch.delenv("RESTOREKIT_CACHE")
    assert zoo.cache_dir() == tmp_path / "xdg" / "restorekit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "restorekit"


# --- fetch ----------------------------------------------------------------------------------------

def test_fetch_downloads_verifies_and_installs(server, cache, monkeypatch):
    _register(monkeypatch, _url(server))
    path = zoo.fetch("test-model", progress=False)
    assert path == cache / "models" / "test-model.pth" and path.read_bytes() == PAYLOAD
    assert not path.with_name(path.name + ".part").exists()
    assert zoo.cached_path("test-model") == path
    assert server.seen == [None]
    assert zoo.fetch("test-model", progress=False) == path and server.seen == [None]  # cached: no request


def test_fetch_resumes_a_partial_download(server, cache, monkeypatch):
    _register(monkeypatch, _url(server))
    part = cache / "models" / "test-model.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:100_000])
    path = zoo.fetch("test-model", progress=True)
    assert server.seen == ["bytes=100000-"]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_interrupted_download_resumes_on_the_next_fetch(server, cache, monkeypatch):
    server.cut_after = 120_000
    _register(monkeypatch, _url(server))
    with pytest.raises(BadInputError, match="interrupted"):
        zoo.fetch("test-model", progress=False)
    part = cache / "models" / "test-model.pth.part"
    assert part.stat().st_size == 120_000 and zoo.cached_path("test-model") is None
    path = zoo.fetch("test-model", progress=False)
    assert server.seen == [None, "bytes=120000-"] and path.read_bytes() == PAYLOAD


def test_zoo_fetch_killed_twice_mid_download_resumes_and_installs_the_verified_file(server, cache, monkeypatch):
    """SIGKILL of `restorekit zoo fetch` at two points of the download; the same command again
    resumes from what was written and installs the file only once its sha256 matches."""
    import signal
    import subprocess
    import sys

    server.delay = 0.01
    url = _url(server)
    _register(monkeypatch, url)
    fetch_cmd = ("import dataclasses, sys; from restorekit.models import zoo; from restorekit.cli.main import main; "
                 "e = dataclasses.replace(zoo.get_entry('realesr-general-x4v3'), name='test-model', "
                 f"filename='test-model.pth', url={url!r}, sha256={hashlib.sha256(PAYLOAD).hexdigest()!r}, "
                 f"size={len(PAYLOAD)}, also_sha256=()); zoo.REGISTRY[e.name] = e; "
                 "sys.argv = ['restorekit', 'zoo', 'fetch', 'test-model']; main()")
    part = cache / "models" / "test-model.pth.part"
    for at in (60_000, 180_000):
        proc = subprocess.Popen([sys.executable, "-c", fetch_cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= at):
            assert proc.poll() is None and time.monotonic() < deadline, \
                f"the download ended before the crash point ({at}): {server.seen}, {sorted(p.name for p in (cache / 'models').iterdir()) if (cache / 'models').exists() else None}"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert zoo.cached_path("test-model") is None and not (cache / "models" / "test-model.pth").exists()
    server.delay = 0.0
    have = part.stat().st_size
    path = zoo.fetch("test-model", progress=False)
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert server.seen[0] is None and server.seen[1].startswith("bytes=") and server.seen[-1] == f"bytes={have}-"


def test_fetch_restarts_when_server_ignores_range(server, cache, monkeypatch):
    server.ignore_range = True
    _register(monkeypatch, _url(server))
    part = cache / "models" / "test-model.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 5000)  # would corrupt the file if appended to
    path = zoo.fetch("test-model", progress=False)
    assert server.seen == ["bytes=5000-"] and path.read_bytes() == PAYLOAD


def test_fetch_accepts_a_complete_part_file(server, cache, monkeypatch):
    _register(monkeypatch, _url(server))
    part = cache / "models" / "test-model.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)  # the server answers 416: nothing left to send
    assert zoo.fetch("test-model", progress=False).read_bytes() == PAYLOAD


def test_fetch_rejects_sha256_mismatch_and_leaves_nothing(server, cache, monkeypatch):
    _register(monkeypatch, _url(server), sha256="0" * 64)
    with pytest.raises(BadInputError) as err:
        zoo.fetch("test-model", progress=False)
    msg = str(err.value)
    assert "0" * 64 in msg and hashlib.sha256(PAYLOAD).hexdigest() in msg
    assert _files(cache) == []


def test_fetch_offline_names_url_and_manual_step(cache, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/test-model.pth"
    _register(monkeypatch, url)
    with pytest.raises(BadInputError) as err:
        zoo.fetch("test-model", progress=False, timeout=5)
    assert url in str(err.value) and "restorekit zoo fetch test-model --from FILE" in str(err.value)
    assert zoo.cached_path("test-model") is None


def test_unverified_entry_needs_trust(server, cache, monkeypatch):
    _register(monkeypatch, _url(server), sha256=None)
    with pytest.raises(BadInputError, match=hashlib.sha256(PAYLOAD).hexdigest()):
        zoo.fetch("test-model", progress=False)
    assert _files(cache) == []
    path = zoo.fetch("test-model", progress=False, trust_unverified=True)
    assert path.read_bytes() == PAYLOAD and zoo.cached_path("test-model") == path


# --- install_from / cached_path / resolve_model_ref ------------------------------------------------

def test_install_from_accepts_the_shared_teacher(cache):
    src = _need(ANIME)
    path = zoo.install_from("realesr-animevideov3", src)
    assert path == cache / "models" / "realesr-animevideov3.pth"
    assert path.read_bytes() == src.read_bytes()
    assert zoo.cached_path("realesr-animevideov3") == path
    assert zoo.resolve_model_ref("realesr-animevideov3") == path


def test_install_from_rejects_a_wrong_file(cache, tmp_path):
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"not the weights")
    with pytest.raises(BadInputError) as err:
        zoo.install_from("realesr-animevideov3", wrong)
    assert zoo.get_entry("realesr-animevideov3").sha256 in str(err.value)
    assert hashlib.sha256(b"not the weights").hexdigest() in str(err.value)
    assert _files(cache) == []
    with pytest.raises(BadInputError, match="not found"):
        zoo.install_from("realesr-animevideov3", tmp_path / "missing.pth")


def test_install_from_verifies_exactly_the_bytes_it_installs(cache, tmp_path, monkeypatch):
    """One read of the source, hashed as it is written: no window between the check and the copy
    in which a swapped file could slip into the cache."""
    src = tmp_path / "w.pth"
    src.write_bytes(PAYLOAD)
    _register(monkeypatch, "https://example.invalid/test-model.pth")
    opened = []
    monkeypatch.setattr(zoo, "open", lambda f, *a, **k: opened.append(Path(f)) or open(f, *a, **k), raising=False)
    monkeypatch.setattr(zoo, "sha256_file", lambda p: pytest.fail("hashed the source apart from the copy"))
    path = zoo.install_from("test-model", src)
    assert opened == [src] and path.read_bytes() == PAYLOAD


def test_cached_path_rejects_a_tampered_file(cache, tmp_path, monkeypatch):
    src = tmp_path / "w.pth"
    src.write_bytes(PAYLOAD)
    _register(monkeypatch, "https://example.invalid/test-model.pth")
    path = zoo.install_from("test-model", src)
    assert zoo.cached_path("test-model") == path
    path.write_bytes(PAYLOAD[:-1] + b"!")
    assert zoo.cached_path("test-model") is None


def test_a_rewrite_that_keeps_size_and_mtime_is_caught_while_the_stamp_is_fresh(cache, tmp_path, monkeypatch):
    src = tmp_path / "w.pth"
    src.write_bytes(PAYLOAD)
    _register(monkeypatch, "https://example.invalid/test-model.pth")
    path = zoo.install_from("test-model", src)
    st = path.stat()
    path.write_bytes(PAYLOAD[:-1] + b"!")  # same size; a coarse clock would also keep the mtime:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert zoo.recorded_sha256(path) is None
    assert zoo.cached_path("test-model") is None
    path.write_bytes(PAYLOAD)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert zoo.cached_path("test-model") == path
    # once the file is older than the stamp by more than the clock's slack, the stamp is trusted (no re-hash)
    stamp = json.loads(zoo._stamp(path).read_text())
    zoo._stamp(path).write_text(json.dumps({**stamp, "stamped_ns": st.st_mtime_ns + 2 * zoo.RACY_NS}))
    monkeypatch.setattr(zoo, "sha256_file", lambda p: pytest.fail("hashed a file whose stamp is trusted"))
    assert zoo.recorded_sha256(path) == stamp["sha256"]


def test_resolve_model_ref(cache, tmp_path):
    assert zoo.resolve_model_ref("some/checkpoint.pth") == "some/checkpoint.pth"
    assert zoo.resolve_model_ref(tmp_path / "x.safetensors") == tmp_path / "x.safetensors"
    with pytest.raises(BadInputError, match="restorekit zoo fetch CodeFormer"):
        zoo.resolve_model_ref("CodeFormer")


# --- CLI ------------------------------------------------------------------------------------------

def test_cli_list_shows_every_entry_and_non_commercial(cache):
    res = runner.invoke(zoo_app, ["list"])
    assert res.exit_code == 0, res.output
    for e in zoo.list_entries():
        assert e.name in res.stdout
    row = next(line for line in res.stdout.splitlines() if "CodeFormer" in line)
    assert "NON-COMMERCIAL" in row
    assert "NON-COMMERCIAL" not in next(line for line in res.stdout.splitlines() if "RealESRGAN_x4plus" in line)


def test_cli_info_and_unknown_name(cache):
    res = runner.invoke(zoo_app, ["info", "GFPGANv1.4"])
    assert res.exit_code == 0 and "not downloaded" in res.stdout and "512" in res.stdout
    for args in (["info", "nope"], ["fetch", "codefromer"]):
        res = runner.invoke(zoo_app, args)
        assert res.exit_code == 2, res.output
        assert "unknown zoo model" in res.stderr and res.stderr.strip().count("\n") == 0


def test_cli_fetch_from_file(cache, tmp_path):
    src = _need(ANIME)
    res = runner.invoke(zoo_app, ["fetch", "realesr-animevideov3", "--from", str(src)])
    assert res.exit_code == 0, res.output
    assert "verified" in res.stdout and (cache / "models" / "realesr-animevideov3.pth").exists()
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"nope")
    res = runner.invoke(zoo_app, ["fetch", "GFPGANv1.4", "--from", str(wrong)])
    assert res.exit_code == 2 and "sha256 mismatch" in res.stderr
    assert not (cache / "models" / "GFPGANv1.4.pth").exists()


def test_a_fetched_zoo_name_works_wherever_a_model_is_taken(cache):
    """`restorekit inspect NAME` loads the verified cached file; before the fetch it says how to get it."""
    from restorekit.cli.main import app

    res = runner.invoke(app, ["inspect", "realesr-animevideov3"])
    assert res.exit_code == 2 and "restorekit zoo fetch realesr-animevideov3" in res.output
    src = _need(ANIME)
    assert runner.invoke(app, ["zoo", "fetch", "realesr-animevideov3", "--from", str(src)]).exit_code == 0
    res = runner.invoke(app, ["inspect", "realesr-animevideov3"])
    assert res.exit_code == 0 and "RealESRGAN" in res.output.replace("-", "").replace(" ", "")
