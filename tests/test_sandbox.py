"""Attacks on skybench.harness.sandbox: each must fail inside the sandbox, be reported, and leave the host intact."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import bwrap_works, python_submission

from skybench.harness.sandbox import Limits, SandboxResult, run_sandboxed
from skybench.harness.submission import Submission, load_submission, sandboxed_predict
from skybench.release import layout, open_release
from skybench.tracks import load_track

pytestmark = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap missing or cannot create namespaces")

FAST = Limits(memory_mb=1024, cpu_seconds=20, wall_seconds=30, max_processes=32)


def run_script(tmp_path: Path, source: str, *args: str, limits: Limits = FAST, ro_binds=(),
               **kw) -> SandboxResult:
    """Write ``source`` to a read-only-bound folder and run it with the sandbox's Python."""
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    code.chmod(0o755)  # as root the sandboxed command runs as an unprivileged uid
    script = code / "attack.py"
    script.write_text(textwrap.dedent(source))
    script.chmod(0o644)
    return run_sandboxed([sys.executable, str(script), *args], scratch=tmp_path / "scratch",
                         ro_binds=[code, *ro_binds], limits=limits, **kw)


def host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_well_behaved_script_writes_scratch_and_succeeds(tmp_path):
    res = run_script(tmp_path, """
        import os
        with open("/scratch/out.txt", "w") as f:
            f.write("result " + os.environ["FOO"])
        print("hello from", os.getcwd())
    """, env={"FOO": "bar"}, outputs=["out.txt"])
    assert res.ok, res
    assert (res.returncode, res.reason) == (0, "")
    assert res.stdout == "hello from /scratch\n"
    out = tmp_path / "scratch" / "out.txt"
    assert out.read_text() == "result bar"
    assert out.stat().st_uid == os.getuid()  # ownership handed back to the caller


def test_crashing_script_reports_last_stderr_line(tmp_path):
    res = run_script(tmp_path, 'raise RuntimeError("boom")')
    assert not res.ok
    assert res.returncode == 1
    assert res.reason == "exited with status 1: RuntimeError: boom"
    assert "Traceback" in res.stderr


def test_socket_to_host_loopback_server_never_connects(tmp_path):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        res = run_script(tmp_path, f"""
            import socket
            s = socket.create_connection(("127.0.0.1", {port}), timeout=3)
            s.sendall(b"stolen labels")
            print("connected")
        """)
        assert not res.ok
        assert res.reason.startswith("exited with status 1: ")
        assert "Operation not permitted" in res.reason  # no socket but AF_UNIX (sandbox._SOCKET_FAMILY)
        assert "connected" not in res.stdout
        with pytest.raises(BlockingIOError):  # the host server never saw a connection
            server.accept()
    finally:
        server.close()



def test_abstract_unix_sockets_of_the_host_are_out_of_reach(tmp_path):
    """AF_UNIX is the one family a run may use; its abstract names belong to the network namespace, and each run has
    its own: neither the host's services (D-Bus, systemd, containerd listen there) nor another run's are reachable."""
    name = f"skybench-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(8)
    server.setblocking(False)
    try:
        res = run_script(tmp_path, f"""
            import socket
            names = [line.split()[-1] for line in open("/proc/net/unix").read().splitlines()[1:]]
            print(sum("{name}" in n for n in names), len(names))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect("\\0{name}")
            print("connected")
        """)
        assert not res.ok and res.reason == "exited with status 1: ConnectionRefusedError: [Errno 111] Connection " \
                                            "refused", res.reason
        assert res.stdout == "0 0\n"  # the namespace holds no socket of the host
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()

def test_hidden_dir_next_to_bound_public_dir_is_invisible(tmp_path):
    release = tmp_path / "release"
    public, hidden = layout.public_dir(release, "test"), layout.hidden_dir(release, "test")
    public.mkdir(parents=True)
    hidden.mkdir(parents=True)
    (public / "images.txt").write_text("public images")
    secret = f"label-secret-{uuid.uuid4().hex}"
    (hidden / "labels.csv").write_text(secret)
    res = run_script(tmp_path, f"""
        import os
        print(open("{public}/images.txt").read())
        print(os.listdir("{release}"))
        print(open("{hidden}/labels.csv").read())
    """, ro_binds=[public])
    assert not res.ok
    assert res.reason.startswith("exited with status 1: FileNotFoundError")
    assert "public images" in res.stdout  # the bound public folder is readable ...
    assert f"[{layout.PUBLIC!r}]" in res.stdout  # ... but nothing else of the release exists inside
    assert secret not in res.stdout + res.stderr


needs_usr_local = pytest.mark.skipif(os.geteuid() != 0 or not os.access("/usr/local/src", os.W_OK),
                                    reason="needs a writable /usr/local/src")


@contextlib.contextmanager
def _release_under_usr(tiny_space_release: Path, tmp_path: Path) -> Iterator[tuple[Path, Submission]]:
    """(a copy of the release under /usr/local/src, a submission that says whether it sees its hidden/ folder)."""
    top = Path(tempfile.mkdtemp(prefix="skybench-test-", dir="/usr/local/src"))
    try:
        top.chmod(0o755)
        release = top / "lens-space"
        shutil.copytree(tiny_space_release, release)
        hidden = layout.hidden_dir(release, "test")
        yield release, load_submission(python_submission(tmp_path / "subs", "peek", f"""
            import os, sys
            def load(d):
                print("release holds", sorted(os.listdir({str(release)!r})), file=sys.stderr)
                try:
                    print("hidden holds", sorted(os.listdir({str(hidden)!r})), file=sys.stderr)
                except OSError as exc:
                    print("hidden unseen", type(exc).__name__, file=sys.stderr)
            def predict(m, b):
                return b.sum(axis=(1, 2, 3))
        """))
    finally:
        shutil.rmtree(top)


@needs_usr_local
def test_a_release_under_a_system_folder_the_sandbox_binds_is_hidden(tiny_space_release, tmp_path):
    # e.g. a project in /usr/src/app (the python Docker image's WORKDIR): the sandbox binds /usr whole, so the
    # release's hidden/ folder would be readable at its own path; it is masked, and the test inputs bound again
    with _release_under_usr(tiny_space_release, tmp_path) as (release, sub):
        res = sandboxed_predict(sub, release, scratch=tmp_path / "scratch", track=load_track("lens-space"),
                                gpu=False)
        assert res.ok, res
        assert "hidden unseen FileNotFoundError" in res.log and "release holds []" in res.log, res.log
        assert len(res.predictions) == len(open_release(release).meta("test"))


@needs_usr_local
def test_a_release_under_a_system_folder_is_hidden_from_inputs_outside_it(tiny_space_release, tmp_path):
    """Before: a Ray shard's view of the test set (and a maps track's drawn latents) is a folder outside the release,
    so only the project root was hidden: a release under /usr outside the project was readable, hidden/ included.
    The job carries the release now."""
    from skybench.harness.executors import Job, _predict_shard, shard_ranges

    with _release_under_usr(tiny_space_release, tmp_path) as (release, sub):
        test_dir = layout.public_dir(release, "test")
        (a, b), *_ = shard_ranges(test_dir, 4, 2)  # a part of the set: the sandbox sees a view of it
        res = _predict_shard(Job(sub, test_dir, load_track("lens-space"), private=(release,)), a, b, 1)
        assert res.ok, res
        assert "hidden unseen FileNotFoundError" in res.log, res.log


def test_a_private_folder_inside_a_bound_folder_is_refused(tmp_path):
    """A bound folder (a submission's, the Python installation) is bound after the masks: a private folder inside
    it would show through, so the run is refused as the evaluating machine's fault."""
    bound = tmp_path / "bound"
    (bound / "release").mkdir(parents=True)
    res = run_sandboxed(["true"], scratch=tmp_path / "scratch", ro_binds=[bound], private=[bound / "release"])
    assert not res.ok and res.infrastructure and res.reason.startswith(f"refused: {bound / 'release'} is inside")


@pytest.mark.parametrize("target", ["host_tmp", "new_in_ro_bind", "overwrite_ro_bind", "usr"])
def test_writes_outside_scratch_fail(tmp_path, target):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "model.onnx").write_text("original")
    path = {"host_tmp": tmp_path / f"escape-{uuid.uuid4().hex}.txt", "new_in_ro_bind": ro / "planted.py",
            "overwrite_ro_bind": ro / "model.onnx", "usr": Path("/usr/lib/escape-sandbox-test.txt")}[target]
    res = run_script(tmp_path, f"""
        with open("{path}", "w") as f:
            f.write("pwned")
        print("written")
    """, ro_binds=[ro])
    assert not res.ok
    assert res.reason.startswith("exited with status 1: ")
    assert any(e in res.reason for e in ("Read-only file system", "Permission denied", "No such file"))
    assert "written" not in res.stdout
    if target == "overwrite_ro_bind":
        assert path.read_text() == "original"
    else:
        assert not path.exists()


@pytest.mark.parametrize("alloc", ["bytearray(10 * 1024**3)", "__import__('numpy').ones(10 * 1024**3, 'u1')"])
def test_allocating_10_gb_hits_memory_limit(tmp_path, alloc):
    res = run_script(tmp_path, f"""
        buf = {alloc}
        print("allocated", len(buf))
    """, env={"OPENBLAS_NUM_THREADS": "1"})
    assert not res.ok
    assert res.reason == "exceeded the memory limit of 1024 MB"
    assert "allocated" not in res.stdout


def test_infinite_loop_hits_wall_time_limit(tmp_path):
    marker = f"wall-{uuid.uuid4().hex}"
    t0 = time.monotonic()
    res = run_script(tmp_path, "while True:\n    pass\n", marker,
                     limits=Limits(memory_mb=1024, cpu_seconds=60, wall_seconds=3))
    elapsed = time.monotonic() - t0
    assert not res.ok
    assert res.returncode is None
    assert res.reason == "exceeded the wall-time limit of 3 s"
    assert 2.9 <= res.wall_seconds <= 10 and elapsed <= 30  # loose: other tests load the machine; CPU limit is 60 s
    assert host_processes_with(marker) == []


@pytest.mark.parametrize("ignore_sigxcpu", [False, True])
def test_cpu_burner_hits_cpu_time_limit(tmp_path, ignore_sigxcpu):
    res = run_script(tmp_path, f"""
        import signal
        if {ignore_sigxcpu}:
            signal.signal(signal.SIGXCPU, signal.SIG_IGN)  # then the hard limit sends SIGKILL
        while True:
            pass
    """, limits=Limits(memory_mb=1024, cpu_seconds=1, wall_seconds=30))
    assert not res.ok
    assert res.reason == "killed: exceeded the CPU-time limit of 1 s"
    assert res.wall_seconds < 10


@pytest.mark.parametrize("how", ["fork", "threads"])
def test_fork_bomb_hits_process_limit(tmp_path, how):
    res = run_script(tmp_path, f"""
        import os, threading, time
        for i in range(200):
            if "{how}" == "threads":
                threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
            elif os.fork() == 0:
                open(f"/scratch/child-{{i}}", "w").close()
                time.sleep(30)
                os._exit(0)
        print("spawned all")
    """, limits=Limits(memory_mb=2048, cpu_seconds=20, wall_seconds=30, max_processes=8))
    assert not res.ok
    assert "exceeded the process limit of 8" in res.reason
    assert "spawned all" not in res.stdout
    assert res.wall_seconds < 10  # the sleeping children did not keep it alive


def test_background_process_is_reported_and_killed(tmp_path):
    marker = f"bg-{uuid.uuid4().hex}"
    res = run_script(tmp_path, """
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", sys.argv[1]],
                         start_new_session=True)
        print("main done")
    """, marker)
    assert not res.ok
    assert res.returncode == 0
    assert res.reason == "left 1 background process running after it returned"
    assert res.stdout == "main done\n"
    assert res.wall_seconds < 10
    assert host_processes_with(marker) == []


def test_parent_environment_does_not_leak(tmp_path, monkeypatch):
    token = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("SECRET_TOKEN", token)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", token)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{token}")
    res = run_script(tmp_path, """
        import os
        print(dict(os.environ))
        try:  # the sandbox's init shim: not readable either
            print(open("/proc/1/environ", "rb").read())
        except OSError as e:
            print("shim environ:", e)
        print(os.environ["SECRET_TOKEN"])
    """)
    assert not res.ok
    assert res.reason == "exited with status 1: KeyError: 'SECRET_TOKEN'"
    assert token not in res.stdout + res.stderr
    assert "'HOME': '/scratch'" in res.stdout


def test_a_run_reads_no_host_wide_counter_a_later_run_could_read(tmp_path):
    """The run's /proc showed the host's counters: a run left negative dentries (stat of missing names under /usr)
    that outlived it, and a later run read fs/dentry-state back exactly (10 bits per run, no timing; session 34's red
    team), an other-run channel through the re-run check of the maps tracks. Every global /proc entry a run reads
    is now the same whatever the host does in between (cpuinfo aside: static but for clock rates)."""
    read_all = """
        import hashlib, json, os
        seen = {}
        for top, dirs, files in os.walk("/proc"):
            if top == "/proc":
                dirs[:] = [d for d in dirs if not d.isdigit() and not os.path.islink(f"/proc/{d}")]
                files = [f for f in files if f != "cpuinfo" and not os.path.islink(f"/proc/{f}")]
            for f in files:
                try:
                    with open(os.path.join(top, f), "rb") as fh:
                        seen[os.path.join(top, f)] = hashlib.sha256(fh.read(1 << 20)).hexdigest()
                except OSError:
                    pass
        with open("/scratch/seen.json", "w") as out:
            json.dump(seen, out)
    """
    import json
    import subprocess

    before = run_script(tmp_path, read_all, outputs=["seen.json"])
    assert before.ok, before
    old = json.loads((tmp_path / "scratch" / "seen.json").read_text())
    for i in range(3000):  # the host moves its counters: negative dentries, processes, memory
        with contextlib.suppress(FileNotFoundError):
            os.stat(f"/usr/.skybench-test-{uuid.uuid4().hex}-{i}")
    subprocess.run(["true"], check=True)
    ballast = bytearray(64 << 20)
    after = run_script(tmp_path, read_all, outputs=["seen.json"])
    del ballast
    assert after.ok, after
    new = json.loads((tmp_path / "scratch" / "seen.json").read_text())
    assert old, "read nothing"
    assert "/proc/meminfo" in old and "/proc/sys/vm/overcommit_memory" in old, "what libraries read is there"
    assert {k for k in old if old[k] != new.get(k)} == set()


def test_gpu_flag_without_gpu_still_runs(tmp_path):
    res = run_script(tmp_path, "print('ok')", gpu=True)
    assert res.ok, res
    assert res.stdout == "ok\n"


def test_missing_bwrap_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="apt-get install bubblewrap"):
        run_sandboxed(["true"], scratch=tmp_path / "scratch")


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
def test_models_run_in_full_float32_on_a_gpu_whatever_the_framework(tmp_path, tiny_space_release):
    """cuBLAS and cuDNN round float32 products to TF32 (~1e-3) by default on Ampere and later: the CPU's 1e-4 and a
    maps track's re-run check (1e-3 of each map's spread, at another batch size) would fail honest models. The runner
    sets NVIDIA's override before any framework loads (a python model sees it too)."""
    sub = load_submission(python_submission(tmp_path / "subs", "tf32", """
        import os
        import numpy as np
        def load(d): return None
        def predict(m, b): return np.full(len(b), float(os.environ.get("NVIDIA_TF32_OVERRIDE") == "0"), np.float32)
    """))
    res = sandboxed_predict(sub, tiny_space_release, scratch=tmp_path / "scratch", track=load_track("lens-space"),
                            gpu=False)
    assert res.ok and res.predictions is not None and (res.predictions == 1).all(), res.reason
