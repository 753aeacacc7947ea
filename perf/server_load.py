"""Load test of the challenge server (issue 15): one ``skybench serve`` and N ``skybench worker`` processes on
SQLite, loopback only, bounded in time.

Default: 8 teams x 25 concurrent uploads (the example ONNX lens-space submission, each a distinct entry) and
200 status polls per second for 60 s; then waits (``--drain-timeout``) until every accepted upload has a final
state, and checks that each has exactly one final state and exactly one MLflow run. ``--quick``: a 15 s smoke
run (4 teams x 3 uploads, 50 polls/s).

References, measured in the same run (the perf/ convention: every figure beside a reference, as a ratio):
  * poll / upload latency: a bare FastAPI app on uvicorn (a no-op GET, a POST that reads the same bytes),
    driven by the same client at the same rate and concurrency;
  * worker throughput: one direct ``skybench evaluate`` of one submission (evaluations per second of a
    single process, cold start included, as each worker pays per job).

    python perf/server_load.py [--quick] [--teams 8 --concurrency 25 --polls 200 --duration 60 --workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "submissions" / "examples" / "lens-space" / "onnx"
TRACK = "lens-space"

BARE_APP = """
import sys, uvicorn
from fastapi import FastAPI, Request
app = FastAPI()
@app.get("/noop")
def noop() -> dict:
    return {"state": "queued"}
@app.post("/upload", status_code=202)
async def upload(request: Request) -> dict:
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
    return {"bytes": n}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pack(team: str, name: str) -> bytes:
    """The example ONNX submission as ``team``'s entry ``name``, packed as ``skybench submit`` packs it."""
    from skybench.server.cli import pack as pack_folder

    with tempfile.TemporaryDirectory(prefix="skybench-pack-") as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        (folder / "submission.yaml").write_text(
            f"team: {team}\nname: {name}\ntrack: {TRACK}\nformat: onnx\nmodel: model.onnx\n")
        shutil.copyfile(EXAMPLE / "model.onnx", folder / "model.onnx")
        return pack_folder(folder)


def pct(xs: list[float], q: int) -> float:
    if not xs:
        return float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


class PeakRSS(threading.Thread):
    """Samples the resident memory of each watched process (and, separately, its whole tree) every 0.2 s."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.stop = pids, threading.Event()
        self.peak: Counter[str] = Counter()
        self.tree: Counter[str] = Counter()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for label, pid in self.pids.items():
                try:
                    p = psutil.Process(pid)
                    own = p.memory_info().rss
                    tree = own + sum(c.memory_info().rss for c in p.children(recursive=True))
                except psutil.Error:
                    continue
                self.peak[label] = max(self.peak[label], own)
                self.tree[label] = max(self.tree[label], tree)


def wait_http(url: str, headers: dict[str, str] | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


async def drive(base: str, tokens: dict[str, str], *, concurrency: int, per_team: int, poll_rate: float,
                duration: float, upload_url: str | None = None, poll_url: str | None = None) -> dict:
    """Uploads (per team: ``per_team`` uploads, ``concurrency`` at a time) and polls at ``poll_rate`` per second
    for ``duration`` s. ``upload_url``/``poll_url``: fixed targets (the bare reference app)."""
    limits = httpx.Limits(max_connections=len(tokens) * concurrency + 64, max_keepalive_connections=64)
    up_lat: list[float] = []
    poll_lat: list[float] = []
    statuses: Counter = Counter()
    poll_status: Counter = Counter()
    accepted: list[tuple[str, str, str]] = []  # (team, name, id)
    t_start = time.monotonic()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=300) as client:
        async def one_upload(team: str, i: int, sem: asyncio.Semaphore) -> None:
            name = f"load-{i:03d}"
            body = pack(team, name)
            async with sem:
                t = time.perf_counter()
                r = await client.post(upload_url or "/api/submissions",
                                      headers={"Authorization": f"Bearer {tokens[team]}"},
                                      data={"track": TRACK, "name": name},
                                      files={"file": ("s.tar.gz", body, "application/gzip")})
                up_lat.append(time.perf_counter() - t)
            statuses[r.status_code] += 1
            if r.status_code == 202 and upload_url is None:
                accepted.append((team, name, r.json()["id"]))
            elif r.status_code != 202:
                print(f"  upload {team}/{name}: {r.status_code} {r.text[:200]}", file=sys.stderr)

        async def poller() -> None:
            team0 = next(iter(tokens))
            interval, n, tasks = 1.0 / poll_rate, 0, set()

            async def one_poll(url: str, token: str) -> None:
                t = time.perf_counter()
                r = await client.get(url, headers={"Authorization": f"Bearer {token}"})
                poll_lat.append(time.perf_counter() - t)
                poll_status[r.status_code] += 1

            while (now := time.monotonic()) - t_start < duration:
                if accepted and poll_url is None:
                    team, _, sid = accepted[n % len(accepted)]
                    url, tok = f"/api/submissions/{sid}", tokens[team]
                else:
                    url, tok = poll_url or "/api/me", tokens[team0]
                task = asyncio.create_task(one_poll(url, tok))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
                await asyncio.sleep(max(0.0, t_start + n * interval - now))
            await asyncio.gather(*tasks)

        sems = {team: asyncio.Semaphore(concurrency) for team in tokens}
        uploads = [one_upload(team, i, sems[team]) for i in range(per_team) for team in tokens]
        t0 = time.monotonic()
        up_task = asyncio.gather(*uploads)
        await asyncio.gather(up_task, poller())
        wall = time.monotonic() - t0
    return {"up_lat": up_lat, "poll_lat": poll_lat, "statuses": statuses, "poll_status": poll_status,
            "accepted": accepted, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="15 s smoke run: 4 teams x 3 uploads, 50 polls/s")
    ap.add_argument("--teams", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=25, help="uploads in flight per team")
    ap.add_argument("--uploads", type=int, default=None, help="uploads per team (default: --concurrency)")
    ap.add_argument("--polls", type=float, default=200.0, help="status polls per second")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of polling")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--drain-timeout", type=float, default=1800.0, help="max seconds to wait for final states")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()
    if a.quick:
        a.teams, a.concurrency, a.uploads, a.polls, a.duration = 4, 3, 3, 50.0, 15.0
    per_team = a.uploads or a.concurrency

    from skybench.server.auth import add_team
    from skybench.server.db import make_engine, sessions, upgrade
    from skybench.simulate import simulate_release

    tmp = Path(tempfile.mkdtemp(prefix="skybench-load-"))
    project = tmp / "project"
    (project / "releases").mkdir(parents=True)
    (project / "benchmarks").symlink_to(ROOT / "benchmarks")
    t = time.perf_counter()
    release = simulate_release(TRACK, project / "releases" / TRACK, profile="demo", seed=3, size=64, progress=False)
    print(f"tiny release in {time.perf_counter() - t:.1f} s: {release}")
    config = tmp / "challenge.yaml"
    config.write_text(yaml.safe_dump({
        "tracks": {TRACK: {"open": True, "quota": {"per_day": 100000, "per_phase": 100000}}},
        "storage": str(tmp / "store"), "database_url": f"sqlite:///{tmp / 'store' / 'skybench.db'}",
        "upload": {"max_bytes": 10_000_000, "max_files": 50, "max_unpacked_bytes": 20_000_000, "max_depth": 8},
        "auth": {"max_failures": 1000, "window_seconds": 60}, "lease_seconds": 120, "max_attempts": 3,
        "project_root": str(project), "public_test_sets": True}))  # a demo release
    (tmp / "store").mkdir()
    engine = make_engine(f"sqlite:///{tmp / 'store' / 'skybench.db'}")
    upgrade(engine)
    with sessions(engine)() as s:
        tokens = {f"team{i}": add_team(s, f"team{i}").token for i in range(a.teams)}
    env = {**os.environ, "SKYBENCH_ROOT": str(project), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    os.environ.update({k: env[k] for k in ("SKYBENCH_ROOT", "MLFLOW_TRACKING_URI")})
    import mlflow

    mlflow.search_experiments()  # create the MLflow store once, not in a race between the workers
    procs: list[subprocess.Popen] = []
    logs = tmp / "logs"
    logs.mkdir()

    def start(label: str, *args: str) -> subprocess.Popen:
        p = subprocess.Popen(args, env=env, cwd=tmp, stdout=open(logs / f"{label}.log", "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p

    try:
        # 1. references: the bare app, same client, same load shape
        bare_port = free_port()
        bare = start("bare", sys.executable, "-c", BARE_APP, str(bare_port))
        wait_http(f"http://127.0.0.1:{bare_port}/noop")
        ref = asyncio.run(drive(f"http://127.0.0.1:{bare_port}", tokens, concurrency=a.concurrency,
                                per_team=per_team, poll_rate=a.polls, duration=min(a.duration, 15.0),
                                upload_url="/upload", poll_url="/noop"))
        bare.terminate()
        bare.wait(10)
        # one direct evaluation of one submission (cold process, as a worker job)
        one = tmp / "direct" / "direct-one"
        one.parent.mkdir()
        with tarfile.open(fileobj=io.BytesIO(pack("direct", "direct-one"))) as tar:
            tar.extractall(one.parent, filter="data")
        for p in (one.parent, one, *one.iterdir()):
            p.chmod(0o755 if p.is_dir() else 0o644)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "skybench", "evaluate", str(one), "--track", TRACK, "--release",
                            str(release), "--out", str(tmp / "direct-evals"), "--no-log"], env=env, cwd=tmp,
                           capture_output=True, text=True)
        direct_s = time.perf_counter() - t
        if r.returncode:
            raise SystemExit(f"direct skybench evaluate failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")

        # 2. the server and the workers
        port = free_port()
        server = start("serve", sys.executable, "-m", "skybench", "serve", "--config", str(config), "--port",
                       str(port))
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/me", {"Authorization": f"Bearer {tokens['team0']}"})
        workers = [start(f"worker{i}", sys.executable, "-m", "skybench", "worker", "--config", str(config),
                         "--poll", "0.5") for i in range(a.workers)]
        mem = PeakRSS({"server": server.pid, **{f"worker{i}": w.pid for i, w in enumerate(workers)}})
        mem.start()
        print(f"load: {a.teams} teams x {per_team} uploads ({a.concurrency} at a time), {a.polls:.0f} polls/s "
              f"for {a.duration:.0f} s, {a.workers} workers")
        t_load = time.monotonic()
        res = asyncio.run(drive(base, tokens, concurrency=a.concurrency, per_team=per_team, poll_rate=a.polls,
                                duration=a.duration))
        # 3. drain: every accepted upload reaches a final state
        from sqlalchemy import select

        from skybench.server.db import Submission, Team

        ids = {sid for _, _, sid in res["accepted"]}
        deadline = time.monotonic() + a.drain_timeout
        while True:
            with sessions(engine)() as s:
                rows = s.scalars(select(Submission)).all()
            done = [x for x in rows if x.state in ("finished", "failed")]
            if len(done) == len(rows) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        drain_wall = time.monotonic() - t_load
        mem.stop.set()
        mem.join()
        with sessions(engine)() as s:
            teams = {t.id: t.name for t in s.scalars(select(Team)).all()}
            rows = s.scalars(select(Submission)).all()
        finals = Counter(x.state for x in rows)
        one_final = all((x.finished_at is None) != (x.failed_at is None) for x in rows if x.state in
                        ("finished", "failed"))
        runs = mlflow.search_runs(experiment_names=[f"skybench-{TRACK}"], output_format="list")
        per_entry = Counter((r.data.params.get("team"), r.data.params.get("name")) for r in runs)
        entries = {(teams[x.team_id], x.name) for x in rows}
        bad_runs = {e: per_entry.get(e, 0) for e in entries if per_entry.get(e, 0) != 1}
        stray_runs = set(per_entry) - entries
        n_finished = finals["finished"] + finals["failed"]

        def line(label: str, ours: float, refv: float, unit: str = "ms", scale: float = 1000) -> None:
            print(f"  {label:<28} {ours * scale:10.1f} {unit}   reference {refv * scale:10.1f} {unit}   "
                  f"ratio {ours / refv if refv else float('nan'):7.2f}")

        print("\nresults (reference = bare FastAPI/uvicorn app, same client and load shape; "
              "direct `skybench evaluate` of one submission)")
        line("upload p50", pct(res["up_lat"], 50), pct(ref["up_lat"], 50))
        line("upload p95", pct(res["up_lat"], 95), pct(ref["up_lat"], 95))
        line("poll p50", pct(res["poll_lat"], 50), pct(ref["poll_lat"], 50))
        line("poll p95", pct(res["poll_lat"], 95), pct(ref["poll_lat"], 95))
        print(f"  {'polls/s achieved':<28} {len(res['poll_lat']) / a.duration:10.1f}       reference "
              f"{len(ref['poll_lat']) / min(a.duration, 15.0):10.1f}       (asked {a.polls:.0f})")
        print(f"  {'uploads/s (all answered)':<28} {len(res['up_lat']) / res['wall']:10.2f}       reference "
              f"{len(ref['up_lat']) / ref['wall']:10.2f}")
        wtp = n_finished / drain_wall
        print(f"  {'evaluations/s (workers)':<28} {wtp:10.3f}       reference {1 / direct_s:10.3f}       ratio "
              f"{wtp * direct_s:7.2f}   ({a.workers} workers; direct evaluate {direct_s:.1f} s)")
        print(f"  upload answers: {dict(res['statuses'])}; poll answers: {dict(res['poll_status'])}")
        print(f"  accepted {len(ids)}, rows {len(rows)}, final states {dict(finals)}, "
              f"exactly one final state each: {one_final and n_finished == len(rows)}, drained in {drain_wall:.0f} s")
        print(f"  MLflow runs {len(runs)} for {len(entries)} entries: exactly one each: {not bad_runs}"
              f"{'' if not bad_runs else f' (off: {dict(list(bad_runs.items())[:5])})'}; stray runs {len(stray_runs)}")
        mib = 2 ** 20
        print("  peak RSS: " + ", ".join(f"{k} {mem.peak[k] / mib:.0f} MiB (tree {mem.tree[k] / mib:.0f} MiB)"
                                         for k in mem.peak))
        ok = (len(ids) == len(rows) and n_finished == len(rows) and one_final and not bad_runs and not stray_runs
              and set(res["statuses"]) <= {202})
        print("PASS" if ok else f"FAIL (logs in {logs})")
        if not ok:
            a.keep = True
        sys.exit(0 if ok else 1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        engine.dispose()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


if __name__ == "__main__":
    main()
