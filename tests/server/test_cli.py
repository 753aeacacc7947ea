"""``skybench admin`` and ``skybench submit`` against a real server (uvicorn on loopback)."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from datetime import timezone
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from skybench.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "submissions" / "examples" / "lens-space" / "onnx"


@pytest.fixture
def config(cfg, tmp_path: Path) -> Path:
    path = tmp_path / "challenge.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    return path


def test_admin_team_add_prints_the_token_once_and_stores_its_hash(config: Path, cfg):
    from skybench.server.auth import FailureLimiter, verify
    from skybench.server.db import Team, make_engine, sessions

    runner = CliRunner()
    r = runner.invoke(app, ["admin", "db", "upgrade", "--config", str(config)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["admin", "team", "add", "lensfinders", "--members", "ada, bob", "--config", str(config)])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("sbt_") and r.stdout.count(token) == 1
    again = runner.invoke(app, ["admin", "team", "add", "lensfinders", "--config", str(config)])
    assert again.exit_code == 1 and "exists already" in again.output
    with sessions(make_engine(cfg.db_url))() as s:
        assert verify(s, token, "cli", FailureLimiter(5, 60)).members == ["ada", "bob"]
        assert token.split("_", 2)[2] not in s.query(Team).one().token_hash
    r = runner.invoke(app, ["admin", "phase", "close", "lens-space", "--config", str(config)])
    assert r.exit_code == 0 and "closed" in r.output
    r = runner.invoke(app, ["admin", "phase", "set", "nope", "open", "--config", str(config)])
    assert r.exit_code == 1 and "not part of this challenge" in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(cfg, engine):  # type: ignore[no-untyped-def]
    import uvicorn

    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import sessions

    with sessions(engine)() as s:
        token = add_team(s, "alpha").token
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, engine), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", token
    server.should_exit = True
    t.join(10)


def test_submit_uploads_and_prints_the_status_url(live, tmp_path: Path, monkeypatch):
    url, token = live
    folder = tmp_path / "m1"
    shutil.copytree(EXAMPLE, folder)
    spec = (folder / "submission.yaml").read_text().replace("team: examples", "team: alpha")
    (folder / "submission.yaml").write_text(spec.replace("name: onnx-example", "name: m1"))
    runner = CliRunner()
    monkeypatch.delenv("SKYBENCH_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    r = runner.invoke(app, ["submit", str(folder), "--server", url, "--skip-validate"])
    assert r.exit_code == 1 and "no token" in r.output
    monkeypatch.setenv("SKYBENCH_TOKEN", token)
    r = runner.invoke(app, ["submit", str(folder), "--server", url, "--skip-validate"])
    assert r.exit_code == 0, r.output
    assert "state queued" in r.output and f"{url}/api/submissions/" in r.output
    monkeypatch.setenv("SKYBENCH_TOKEN", token[:-2] + "xx")
    r = runner.invoke(app, ["submit", str(folder), "--server", url, "--skip-validate"])
    assert r.exit_code == 1 and "401" in r.output and "invalid" in r.output


def test_the_receipt_time_is_when_the_upload_is_complete_not_when_it_began(live):
    """The receipt time breaks ties on the leaderboard and names the day whose quota an upload uses, so it must
    be when the last byte is in (the content fixed): an upload opened early and finished later, its content
    chosen meanwhile, must not keep the earlier time (a tie won in advance, or an earlier day's quota banked)."""
    import http.client
    import json
    from datetime import datetime

    from skybench.server.cli import pack as pack_folder

    url, token = live
    with tempfile.TemporaryDirectory(prefix="skybench-pack-") as tmp:
        folder = Path(tmp) / "slow"
        shutil.copytree(EXAMPLE, folder)
        spec = (folder / "submission.yaml").read_text().replace("team: examples", "team: alpha")
        (folder / "submission.yaml").write_text(spec.replace("name: onnx-example", "name: slow"))
        archive = pack_folder(folder)
    boundary = "skybenchslowupload"
    body = b"".join([
        *(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
          for k, v in (("track", "lens-space"), ("name", "slow"))),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.tar.gz"\r\n'
        "Content-Type: application/gzip\r\n\r\n".encode(), archive, f"\r\n--{boundary}--\r\n".encode()])
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", "/api/submissions")
    for k, v in (("Authorization", f"Bearer {token}"), ("Content-Length", str(len(body))),
                 ("Content-Type", f"multipart/form-data; boundary={boundary}")):
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(body[:100])
    time.sleep(1.5)  # the rest of the upload comes later
    done = datetime.now(timezone.utc)
    conn.send(body[100:])
    r = conn.getresponse()
    answer = json.loads(r.read())
    assert r.status == 202, answer
    received = datetime.fromisoformat(answer["received_at"])
    assert received >= done, f"received_at {received} is before the upload was complete ({done})"


@pytest.mark.slow  # starts uvicorn and a worker process
def test_skybench_serve_and_worker_start_from_the_command_line(config: Path, cfg):
    import json
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "skybench"]
    proc = subprocess.Popen([*cmd, "serve", "--config", str(config), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        status = None
        for _ in range(150):  # up to 30 s on a loaded machine
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/me", timeout=2)
            except urllib.error.HTTPError as exc:
                status, body = exc.code, json.load(exc)
                break
            except urllib.error.URLError:
                time.sleep(0.2)
        assert status == 401 and "token" in body["detail"], proc.poll()
        spec = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/openapi.json", timeout=5))
        assert "/api/submissions/{sub_id}" in spec["paths"]
    finally:
        proc.terminate()
        proc.wait(30)
    done = subprocess.run([*cmd, "worker", "--config", str(config), "--once"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_submit_sends_the_token_over_https_or_to_this_machine_and_follows_no_redirect(tmp_path: Path, monkeypatch):
    """The token is a header: not in clear text to another host, and not on to whatever host a redirect names
    (urllib would re-send it). A real HTTP server on this machine answers 307 to a second one, which must get
    nothing."""
    import http.server

    got: list[str] = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            got.append(self.headers.get("Authorization", ""))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    elsewhere = http.server.HTTPServer(("127.0.0.1", 0), Elsewhere)

    class Redirects(Elsewhere):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{elsewhere.server_port}/api/submissions")
            self.send_header("Content-Length", "0")
            self.end_headers()

    first = http.server.HTTPServer(("127.0.0.1", 0), Redirects)
    for srv in (elsewhere, first):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    folder = tmp_path / "m1"
    shutil.copytree(EXAMPLE, folder)
    monkeypatch.setenv("SKYBENCH_TOKEN", "tok_secret")
    runner = CliRunner()
    try:
        r = runner.invoke(app, ["submit", str(folder), "--server", "http://challenge.example.org", "--skip-validate"])
        assert r.exit_code == 1 and "clear text" in r.output and "https://" in r.output, r.output
        r = runner.invoke(app, ["submit", str(folder), "--server", f"http://127.0.0.1:{first.server_port}",
                                "--skip-validate"])
        assert r.exit_code == 1 and "redirects (307)" in r.output, r.output
        assert got == []  # the second server never saw the token
    finally:
        for srv in (elsewhere, first):
            srv.shutdown()



@pytest.mark.parametrize(("edit", "where"), [
    (("open: 2027-01-10T00:00:00Z", "open: 2027-13-10T00:00:00Z"), "at line 7, column 13: '2027-13-10T00:00:00Z'"),
    (("    final_entries: 2 ", "   final_entries: 2 "), "at line 14, column 4: expected <block end>"),
])
def test_a_challenge_yaml_typo_is_one_line_naming_file_and_line(tmp_path: Path, edit, where):
    """A bad date or a mis-indented key in challenge.yaml: one line with the file and the line, no traceback."""
    path = tmp_path / "challenge.yaml"
    text = (ROOT / "challenge.example.yaml").read_text()
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    r = CliRunner().invoke(app, ["admin", "db", "upgrade", "--config", str(path)])
    assert r.exit_code == 1, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert r.output.startswith(f"error: {path}: YAML syntax error {where}"), r.output


def test_submit_to_a_server_that_is_not_running_says_so_not_that_the_upload_broke(tmp_path: Path, monkeypatch):
    """A refused connection sent nothing: it is not "the connection broke during the upload ... may or may not
    have been queued"."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SKYBENCH_TOKEN", "sbt_" + "x" * 40)
    r = CliRunner().invoke(app, ["submit", str(EXAMPLE), "--server", f"http://127.0.0.1:{port}", "--skip-validate"])
    assert r.exit_code == 1, r.output
    assert "connection refused" in r.output and "nothing was uploaded" in r.output, r.output
    assert "may or may not" not in r.output and len(r.output.strip().splitlines()) == 1


def test_submit_validates_on_the_published_release_a_team_pulled(tmp_path: Path, monkeypatch, tiny_space_release):
    """A team has `published/<track>` (`dvc pull published/lens-space.dvc`), not the organiser's `releases/`: the
    local validation stopped at "no release at .../releases/lens-space"."""
    from helpers import bwrap_works

    from skybench.server.publish import stage

    if not bwrap_works():
        pytest.skip("bubblewrap missing or cannot create namespaces (validation runs the model in it)")
    team = tmp_path / "team"
    team.mkdir()
    (team / "benchmarks").symlink_to(ROOT / "benchmarks")
    stage(tiny_space_release, team / "published" / "lens-space")
    monkeypatch.setenv("SKYBENCH_ROOT", str(team))
    monkeypatch.setenv("SKYBENCH_TOKEN", "sbt_" + "x" * 40)
    with socket.socket() as s:  # a port nothing listens on: the upload is refused after the validation
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = CliRunner().invoke(app, ["submit", str(EXAMPLE), "--server", f"http://127.0.0.1:{port}"])
    assert r.exit_code == 1 and "connection refused" in r.output, r.output
    assert "passes at batch sizes" in r.output and "no release" not in r.output, r.output


def test_an_unreachable_database_is_one_line_naming_it_without_its_password(tmp_path: Path):
    """A PostgreSQL URL nobody answers at: the worker, the server and the admin commands said so in a 49-frame
    traceback (and a host that never answers held them 130 s first: now 10 s, connect_timeout)."""
    import subprocess
    import sys

    path = tmp_path / "challenge.yaml"
    path.write_text(yaml.safe_dump({"tracks": {"lens-space": {}}, "storage": str(tmp_path / "store"),
                                    "database_url": "postgresql+psycopg://sk:hunter2@127.0.0.1:1/skybench"}))
    for args in (["worker", "--once"], ["serve", "--port", "1"], ["admin", "db", "upgrade"]):
        r = subprocess.run([sys.executable, "-m", "skybench", *args, "--config", str(path)], capture_output=True,
                           text=True, timeout=120)
        out = r.stdout + r.stderr
        assert r.returncode == 1 and "Traceback" not in out, (args, out[-3000:])
        assert "cannot reach the challenge database postgresql+psycopg://sk:***@127.0.0.1:1/skybench" in out, out
        assert "hunter2" not in out


def test_an_admin_command_that_meets_an_os_error_says_it_in_one_line(tmp_path: Path):
    """`admin` and its groups were plain Typer apps: a storage path that is a file gave a FileExistsError
    traceback where `serve` and `worker` say one line."""
    from typer.testing import CliRunner

    from skybench.cli import app

    (tmp_path / "base.yaml").write_text("not a folder\n")
    path = tmp_path / "challenge.yaml"
    path.write_text(yaml.safe_dump({"tracks": {"lens-space": {}}, "storage": str(tmp_path / "base.yaml")}))
    for args in (["admin", "db", "upgrade"], ["admin", "team", "add", "x"]):
        r = CliRunner().invoke(app, [*args, "--config", str(path)])
        assert r.exit_code == 1 and not isinstance(r.exception, OSError), (args, r.exception, r.output)
        assert "base.yaml" in r.output and "Traceback" not in r.output, (args, r.output)


@pytest.mark.parametrize("page", [b"<html>Sign in to the guest network</html>", b'{"ok": true}', b"[1, 2]"])
def test_submit_answered_200_by_something_else_says_so_in_one_line(tmp_path: Path, monkeypatch, page):
    """A captive portal or a proxy answers 200 with its own page: a JSONDecodeError or KeyError traceback left the
    team not knowing whether the upload was received."""
    import http.server

    class Portal(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("SKYBENCH_TOKEN", "sbt_" + "x" * 40)
    try:
        r = CliRunner().invoke(app, ["submit", str(EXAMPLE), "--server", f"http://127.0.0.1:{srv.server_port}",
                                     "--skip-validate"])
    finally:
        srv.shutdown()
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "answered 200 but not as a skybench server" in r.output and len(r.output.strip().splitlines()) == 1


def test_a_phase_change_with_mlflow_unreachable_is_refused_at_once(config: Path, monkeypatch):
    """Changing a phase keeps the ending phase's board, read from MLflow: with MLflow down it retried for four
    minutes, then printed a traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner = CliRunner()
    assert runner.invoke(app, ["admin", "db", "upgrade", "--config", str(config)]).exit_code == 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    r = runner.invoke(app, ["admin", "phase", "close", "lens-space", "--config", str(config)])
    assert r.exit_code == 1 and "unreachable" in r.output and "stays in its phase" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
