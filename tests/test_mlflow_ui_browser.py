"""`skybench ui` as a new user sees it: Debian's headless chromium (Playwright) on the URL it prints.

Two evaluation runs of lens-space (phase open: ranked on ``public_auroc``) in a temporary sqlite store;
``skybench ui`` starts MLflow's server on a free loopback port and prints the track's URL; the page must show the
runs view ("Training runs", not the GenAI overview), the runs best first, and the ranked metric as a visible
column. Screenshots go to the test's ``tmp_path`` (and ``$SKYBENCH_TEST_ARTIFACTS/browser/`` when set)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import mlflow_store

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed; "
                       "`make setup` installs it as root (scripts/ensure-browser.sh)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_skybench_ui_opens_on_the_sorted_runs_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    from skybench import tracking

    uri = mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name, auroc in (("cnn", 0.91), ("resnet", 0.95)):  # the worse one first: the view must sort
        tracking.log_evaluation(
            "lens-space", team="baselines", name=name, fmt="onnx", status="FINISHED",
            metrics={"public_auroc": auroc, "public_auroc_ci_low": auroc - 0.01, "public_auroc_ci_high": auroc + 0.01,
                     "public_tpr0": 0.3, "public_tpr10": 0.5},
            tags={"submission_sha256": name.ljust(64, "0"), "release_sha256": "r" * 64})
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SKYBENCH_ROOT": str(ROOT)}
    log = tmp_path / "ui.log"
    proc = subprocess.Popen([sys.executable, "-m", "skybench", "ui", "--port", str(port)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,  # noqa: SIM115
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        printed = []
        for line in proc.stdout:
            printed.append(line)
            if line.startswith("MLflow UI for"):
                break
        urls = dict(line.strip().split(": ", 1) for line in printed if line.startswith("skybench-"))
        assert set(urls) == {"skybench-lens-space"}, printed  # only tracks with runs
        url = urls["skybench-lens-space"]
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/") and "viewStateShareKey=" in url
        start = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() - start < 120, log.read_text()[-3000:]
                time.sleep(0.5)

        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 900})
                page.goto(url)
                names = page.get_by_role("link", name="auroc=")
                header = page.locator('.ag-header-cell[role="columnheader"][col-id="metrics.`public_auroc`"]')
                shot = tmp_path / "skybench-ui-lens-space.png"
                try:  # the shared view (columns) applies once the UI has read the experiment's tags
                    header.wait_for(timeout=120_000)  # a loaded 2-core machine: tens of seconds
                    names.first.wait_for(timeout=60_000)
                finally:
                    page.screenshot(path=str(shot), full_page=True)
                if os.environ.get("SKYBENCH_TEST_ARTIFACTS"):
                    extra = Path(os.environ["SKYBENCH_TEST_ARTIFACTS"]) / "browser"
                    extra.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(shot, extra / shot.name)
                assert "/runs" in page.url and "/overview" not in page.url, page.url
                assert "orderByKey=metrics.%60public_auroc%60" in page.url and "orderByAsc=false" in page.url
                runs_heading = re.compile(r"^(Training )?[Rr]uns$")  # not the GenAI overview
                assert page.get_by_role("heading", name=runs_heading).is_visible()
                assert page.get_by_text("No data available").count() == 0
                assert names.all_inner_texts() == ["1 auroc=0.9500 baselines/resnet", "2 auroc=0.9100 baselines/cnn"]
                assert header.is_visible()
                box = header.bounding_box()
                assert box is not None and box["x"] + box["width"] <= 1600  # on screen, not scrolled off
                cells = page.get_by_role("gridcell", name="0.95", exact=True)
                assert cells.first.is_visible()
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
