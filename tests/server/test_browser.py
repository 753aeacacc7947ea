"""The web pages in a real browser: Debian's headless chromium driven by Playwright for Python.

``skybench serve`` runs as its own process on loopback (SQLite, a temporary store and MLflow store); the test
logs in with a team token, uploads the example ONNX submission through the form, sees it queued, runs the
worker once (the sandboxed evaluation), sees it finished with its plot, then on the leaderboard. A team and an
entry named ``<script>...`` render as text: no script element, no dialog. Screenshots go to the test's
``tmp_path`` and, when ``$SKYBENCH_TEST_ARTIFACTS`` names a folder, to ``<that folder>/browser/`` too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/helpers.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import bwrap_works, mlflow_store  # noqa: E402
from test_api import pack  # noqa: E402
from test_cli import _free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
EVIL = "<script>alert(1)</script>"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed; "
                       "`make setup` installs it as root (scripts/ensure-browser.sh)"),
]


@pytest.fixture
def shots(tmp_path: Path):  # type: ignore[no-untyped-def]
    """save(page, name): a full-page screenshot under tmp_path (and $SKYBENCH_TEST_ARTIFACTS/browser/)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    extra = Path(os.environ["SKYBENCH_TEST_ARTIFACTS"]) / "browser" if os.environ.get(
        "SKYBENCH_TEST_ARTIFACTS") else None

    def save(page, name: str) -> Path:  # type: ignore[no-untyped-def]
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if extra is not None:
            extra.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, extra / path.name)
        return path

    return save


@pytest.fixture
def served(tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """``skybench serve`` on a free loopback port: (url, config, alpha's token)."""
    from skybench.server.auth import add_team
    from skybench.server.config import load_config
    from skybench.server.db import make_engine, sessions, upgrade

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    config = tmp_path / "challenge.yaml"
    config.write_text(yaml.safe_dump({
        "tracks": {"lens-space": {"quota": {"per_day": 3, "per_phase": 5}}},
        "storage": "store", "public_score_digits": 3, "open_board": "scores", "project_root": "project",
        "upload": {"max_bytes": 2_000_000, "max_files": 50, "max_unpacked_bytes": 4_000_000},
        "public_test_sets": True}))  # a demo release
    cfg = load_config(config)
    engine = make_engine(cfg.db_url)
    upgrade(engine)
    with sessions(engine)() as s:
        token = add_team(s, "alpha").token
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "skybench", "serve", "--config", str(config), "--port",
                             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):  # up to 60 s on a loaded machine
            try:
                urllib.request.urlopen(f"{url}/", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.2)
        else:
            pytest.fail(f"skybench serve did not answer: {(tmp_path / 'serve.log').read_text()[-3000:]}")
        yield url, cfg, engine, token
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        engine.dispose()


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed "
                                   "(pip install playwright; the [dev] extra)")
    with sync_api.sync_playwright() as p:
        # Debian's chromium, never a downloaded one; --no-sandbox because the tests may run as root.
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_log_in_upload_queued_finished_leaderboard(served, browser, shots, tmp_path, tiny_space_release):
    from skybench.server import worker
    from skybench.server.db import sessions

    url, cfg, engine, token = served
    archive = tmp_path / "m1.tar.gz"
    archive.write_bytes(pack("alpha", "m1"))
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.goto(f"{url}/team")
    assert page.url == f"{url}/login"  # no team page without logging in
    page.get_by_label("Team token").fill(token)
    shots(page, "01-login")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/team")
    assert page.get_by_role("heading", name="Team alpha").is_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "skybench_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # not readable from a script

    page.get_by_role("link", name="Submit a new entry").click()
    page.get_by_label("Track").select_option("lens-space")
    page.get_by_label("Entry name").fill("m1")
    page.get_by_label("Archive").set_input_files(str(archive))
    shots(page, "02-submit")
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(f"{url}/team/submissions/*")
    assert page.locator("#state").inner_text() == "queued"
    shots(page, "03-queued")
    status_page = page.url

    done = worker.run_one(cfg, sessions(engine), "browser-test", release=tiny_space_release, out=tmp_path / "evals")
    assert done is not None and done.state == "finished", done.reason if done else "the queue was empty"

    page.goto(status_page)
    shots(page, "04-finished")
    assert page.locator("#state").inner_text() == "finished"
    assert page.get_by_role("rowheader", name="public_auroc", exact=True).is_visible()
    plot = page.locator("figure img")  # the lens ROC on the public part, from the participant's MLflow artifacts
    assert plot.count() == 1 and plot.first.evaluate("img => img.complete && img.naturalWidth > 0")

    page.goto(f"{url}/tracks/lens-space")
    row = page.locator("table.board tbody tr", has_text="m1")
    assert row.count() == 1 and row.locator("td").nth(1).inner_text() == "alpha"
    assert row.locator("td").first.inner_text() == "1"
    shots(page, "05-leaderboard")
    assert dialogs == []


def test_script_named_team_and_entry_render_as_text(served, browser, shots):
    from skybench.server.db import Submission, Team, sessions, utcnow
    from skybench.tracking import log_evaluation

    url, cfg, engine, token = served
    with sessions(engine)() as s:  # names the CLI refuses, written straight into the stores
        team = s.query(Team).one()
        team.name = EVIL
        s.add(Submission(id="e" * 32, team_id=team.id, track="lens-space", name=EVIL, sha256="0" * 64,
                         phase="open", state="failed", reason=EVIL, received_at=utcnow(), failed_at=utcnow()))
        s.commit()
    log_evaluation("lens-space", team=EVIL, name=EVIL, fmt="onnx", status="FINISHED",
                   metrics={"public_auroc": 0.9}, tags={})
    log_evaluation("lens-space", team=EVIL, name="broken", fmt="onnx", status="FAILED", metrics={}, tags={},
                   reason=EVIL)
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{url}/login")
    page.get_by_label("Team token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/team")
    for path in ("/team", f"/team/submissions/{'e' * 32}", "/tracks/lens-space"):
        page.goto(f"{url}{path}")
        assert page.locator("main script").count() == 0, path  # no element was made from the name
        assert page.get_by_text(EVIL).first.is_visible(), path  # the name is shown as text
        shots(page, "xss-" + path.strip("/").replace("/", "-")[:40])
    assert dialogs == []
