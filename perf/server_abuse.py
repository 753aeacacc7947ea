"""What one team's abuse of the challenge server costs another team: the latency of team beta's requests
(``GET /api/me`` with its token, then the index page) while team alpha logs in over and over with its own token
(``--connections`` at once), and while anonymous clients post large JSON bodies to a route that takes one; and the
server's peak RSS. The reference, measured in the same run: beta's latency with nothing else going on.

    python perf/server_abuse.py [--seconds 15] [--connections 10] [--body-mb 40]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _victim(base: str, token: str, until: float, answers: Counter) -> list[float]:
    """beta's round trips (seconds) until ``until``; their answers' status codes counted in ``answers``."""
    lat = []
    with httpx.Client(base_url=base, timeout=120) as c:
        while time.monotonic() < until:
            t = time.perf_counter()
            answers[c.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code] += 1
            answers[c.get("/").status_code] += 1
            lat.append(time.perf_counter() - t)
            time.sleep(0.05)
    return lat


def _log_ins(base: str, token: str, until: float, answers: Counter) -> None:
    with httpx.Client(base_url=base, timeout=120, follow_redirects=False) as c:
        while time.monotonic() < until:
            c.cookies.clear()
            csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
            assert csrf is not None
            answers[c.post("/login", data={"csrf": csrf.group(1), "token": token}).status_code] += 1


def _big_bodies(base: str, mb: int, until: float, answers: Counter) -> None:
    body = b'{"submissions": [' + b"{}," * (mb * 2**20 // 3) + b"{}]}"
    while time.monotonic() < until:
        try:
            with httpx.Client(base_url=base, timeout=120) as c:
                answers[c.post("/api/tracks/lens-space/final", content=body,
                               headers={"Content-Type": "application/json"}).status_code] += 1
        except httpx.TransportError:  # refused before the body was all sent: the connection is closed on it
            answers["closed early"] += 1


def _phase(name: str, base: str, token: str, proc: psutil.Process, seconds: float, load: list[threading.Thread],
           ref: float | None) -> float:
    peak, stop = [proc.memory_info().rss], threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], proc.memory_info().rss)

    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in load:
        t.start()
    got: Counter = Counter()
    lat = _victim(base, token, time.monotonic() + seconds, got)
    for t in load:
        t.join()
    stop.set()
    watcher.join()
    med = statistics.median(lat)
    p95 = statistics.quantiles(lat, n=20)[-1]
    ratio = f"{med / ref:5.2f}x the idle median" if ref else "(reference)"
    print(f"{name:<34} beta median {med * 1e3:6.1f} ms, p95 {p95 * 1e3:6.1f} ms  {ratio};"
          f"  server peak RSS {peak[0] / 2**20:6.0f} MiB")
    if set(got) != {200}:
        print(f"{'':<34} beta's answers: {dict(got)}")
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--body-mb", type=int, default=40)
    args = ap.parse_args()
    from skybench.server.auth import add_team
    from skybench.server.db import make_engine, sessions, upgrade

    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"tracks": {"lens-space": {}}, "storage": f"{tmp}/store", "public_test_sets": True,
               "project_root": f"{tmp}/project"}
        (Path(tmp) / "challenge.yaml").write_text(yaml.safe_dump(cfg))
        engine = make_engine(f"sqlite:///{tmp}/store/skybench.db")
        upgrade(engine)
        with sessions(engine)() as s:
            tokens = {n: add_team(s, n).token for n in ("alpha", "beta")}
        engine.dispose()
        port = _port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "skybench", "serve", "--config", f"{tmp}/challenge.yaml",
                                   "--port", str(port)], env={**os.environ, "SKYBENCH_ROOT": str(ROOT)},
                                  stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/server.log", "wb"))
        try:
            for _ in range(300):
                try:
                    httpx.get(f"{base}/", timeout=2)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            proc = psutil.Process(server.pid)
            beta = tokens["beta"]
            print(f"skybench serve (SQLite), {os.cpu_count()} cores; {args.seconds:g} s per phase")
            ref = _phase("idle", base, beta, proc, args.seconds, [], None)
            until = time.monotonic() + args.seconds
            answers: Counter = Counter()
            _phase(f"alpha logs in, {args.connections} at once", base, beta, proc, args.seconds,
                   [threading.Thread(target=_log_ins, args=(base, tokens["alpha"], until, answers))
                    for _ in range(args.connections)], ref)
            print(f"{'':<34} alpha's log-ins: {dict(answers)}")
            until, bodies = time.monotonic() + args.seconds, Counter[object]()
            _phase(f"{args.body_mb} MiB bodies, 4 at once", base, beta, proc, args.seconds,
                   [threading.Thread(target=_big_bodies, args=(base, args.body_mb, until, bodies)) for _ in range(4)],
                   ref)
            print(f"{'':<34} the bodies' answers: {dict(bodies)}")
        finally:
            if server.poll() is not None:  # it died: say why
                print(f"the server exited ({server.returncode}):", Path(f"{tmp}/server.log").read_text()[-2000:])
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
