"""One submission must not stop or starve the others: memory (including tmpfs, shared memory and memfd pages),
processes, CPU, time, disk and kernel interfaces are contained per sandbox. Each attack fails with a one-line
reason, the host (this test process, the scratch folder) is intact, and the next sandbox still works."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from helpers import bwrap_works, python_submission

from skybench.harness import cgroups, sandbox
from skybench.harness.sandbox import Limits, SandboxResult, check_bwrap_features, gpu_binds, remove_tree, run_sandboxed
from skybench.harness.submission import load_submission, sandboxed_predict
from skybench.release import layout, open_release, read_manifest
from skybench.tracks import Evaluation, SandboxLimits, load_track

# Sandboxed end-to-end runs of the trust model's attacks: the full suite (`make test`), not the fast lane.
pytestmark = pytest.mark.slow

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap missing or cannot create namespaces")
needs_cgroups = pytest.mark.skipif(bool(cgroups.unavailable_reason()), reason="no usable cgroup controllers")
SMALL = Limits(memory_mb=256, cpu_seconds=20, wall_seconds=30, max_processes=32, scratch_mb=64)


def run_script(tmp_path: Path, source: str, *args: str, limits: Limits = SMALL, **kw) -> SandboxResult:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    code.chmod(0o755)
    script = code / "attack.py"
    script.write_text(textwrap.dedent(source))
    script.chmod(0o644)
    return run_sandboxed([sys.executable, str(script), *args], scratch=tmp_path / "scratch", ro_binds=[code],
                         limits=limits, **kw)


def assert_next_sandbox_works(tmp_path: Path) -> None:
    res = run_script(tmp_path, "open('/scratch/ok.txt', 'w').write('fine'); print('fine')", outputs=["ok.txt"])
    assert res.ok, res
    assert res.stdout == "fine\n" and (tmp_path / "scratch" / "ok.txt").read_text() == "fine"


def run_groups() -> list[Path]:
    """Run cgroups of this process left under skybench/ (must be none between runs)."""
    out = []
    for base in cgroups._v1_bases()[0].values() if cgroups._v1_bases()[0] else []:
        out += list((base / "skybench").glob(f"run-{os.getpid()}-*"))
    return out


def test_mountinfo_paths_are_unescaped_as_proc5_writes_them():
    """A mount point with a space (\\040), a tab (\\011) or a backslash (\\134) is found where it is: the sweep of
    killed evaluators' scratch tmpfs read the tab and backslash forms literally and could not unmount them."""
    text = ("36 25 0:32 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
            "97 36 0:51 / /tmp/my\\040runs/skybench-scratch-x/a\\011b\\134c rw - tmpfs skybench-scratch-4242 rw\n"
            "malformed line\n")
    got = cgroups.parse_mountinfo(text)
    assert [(m.root, m.point, m.fstype, m.source) for m in got] == [
        ("/", "/sys/fs/cgroup", "cgroup2", "cgroup2"),
        ("/", "/tmp/my runs/skybench-scratch-x/a\tb\\c", "tmpfs", "skybench-scratch-4242")]
    assert got[0].options == {"rw", "nsdelegate"}


# --- memory: pages outside the address space are charged to the sandbox's cgroup --------------------

WRITE_800_MB = """
import mmap, os, sys
chunk = b"x" * (1 << 20)
def fill(f, mb):
    for _ in range(mb):
        os.write(f, chunk)
where, mb = sys.argv[1], int(sys.argv[2])
for w in (["memfd", "shm", "tmp"] if where == "all" else [where]):
    if w == "memfd":
        fill(os.memfd_create("hoard"), mb)
    else:
        fill(os.open(("/dev/shm" if w == "shm" else "/tmp") + "/hoard", os.O_CREAT | os.O_WRONLY, 0o600), mb)
print("held", mb, "MB in", where)
"""


@needs_bwrap
@needs_cgroups
@pytest.mark.parametrize(("where", "mb"), [("memfd", 800), ("shm", 800), ("tmp", 800), ("all", 200)])
def test_memory_outside_the_heap_hits_the_memory_limit(tmp_path, where, mb):
    # 3 x 200 MB under a 256 MB limit: each part stays under the old per-tmpfs caps, together they do not.
    parent = os.getppid()
    res = run_script(tmp_path, WRITE_800_MB, where, str(mb))
    assert not res.ok
    assert res.reason == "exceeded the memory limit of 256 MB"
    assert "held" not in res.stdout
    assert not res.infrastructure
    os.kill(parent, 0)  # this test process and its parent survived: the OOM killer stayed in the sandbox
    assert run_groups() == []
    assert_next_sandbox_works(tmp_path)


# --- processes and CPU --------------------------------------------------------------------------------


@needs_bwrap
@needs_cgroups
@pytest.mark.parametrize("how", ["fork", "threads"])
def test_fork_and_thread_bombs_are_contained(tmp_path, how):
    res = run_script(tmp_path, f"""
        import os, threading, time
        for i in range(500):
            if "{how}" == "threads":
                threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
            elif os.fork() == 0:
                time.sleep(30)
                os._exit(0)
        print("spawned all")
    """, limits=Limits(memory_mb=1024, cpu_seconds=20, wall_seconds=30, max_processes=16))
    assert not res.ok
    assert res.reason.startswith("exceeded the process limit of 16 (processes and threads)")
    assert "spawned all" not in res.stdout
    assert res.wall_seconds < 10
    assert_next_sandbox_works(tmp_path)


@needs_cgroups
def test_pids_max_holds_by_itself(tmp_path):
    """The cgroup alone (no RLIMIT_NPROC, no sandbox) stops a thread bomb at pids.max."""
    cg = cgroups.create(memory_mb=512, max_processes=12)
    assert cg is not None
    try:
        code = ("import threading, time\nn = 0\ntry:\n    for _ in range(100):\n"
                "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start(); n += 1\n"
                "except RuntimeError:\n    pass\nprint(n)")
        join = 'for f in "$@"; do echo $$ > "$f"; done; exec ' + sys.executable + " -c '" + code + "'"
        out = subprocess.run(["/bin/sh", "-c", join, "sh", *map(str, cg.procs_files)], capture_output=True,
                             text=True, timeout=60)
        assert int(out.stdout) < 12
        assert cg.pids_limit_hit()
    finally:
        cg.remove()
    assert not any(d.exists() for d in cg.dirs.values())


def _dead_pid() -> int:
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists():
        pid += 1
    return pid


@needs_cgroups
def test_the_cgroup_sweep_spares_live_evaluators_in_other_pid_namespaces(monkeypatch):
    """Run groups were swept when the pid in their name was dead here: an evaluator in a container or another pid
    namespace (sharing the hierarchy, its pids meaningless here) had its running sandbox SIGKILLed whenever another
    evaluator started one. A group is stale only when nobody holds its flock (its evaluator died)."""
    monkeypatch.setattr(cgroups, "_SWEEP_GRACE", 0.0)
    monkeypatch.setattr(cgroups, "_run_name", lambda: f"run-{_dead_pid()}-{os.urandom(4).hex()}")
    groups, sleepers = [], []
    try:
        for _ in range(2):  # one whose evaluator lives elsewhere, one whose evaluator died
            cg = cgroups.create(memory_mb=256, max_processes=8)
            assert cg is not None
            join = 'for f in "$@"; do echo $$ > "$f"; done; exec sleep 60'
            sleepers.append(subprocess.Popen(["/bin/sh", "-c", join, "sh", *map(str, cg.procs_files)]))
            groups.append(cg)
        time.sleep(0.5)
        live, dead = groups
        for fd in dead._locks:  # the kernel drops a dead evaluator's flocks
            os.close(fd)
        dead._locks.clear()
        third = cgroups.create(memory_mb=256, max_processes=8)  # another evaluation starts: it sweeps
        assert third is not None
        third.remove()
        assert sleepers[1].wait(timeout=30) == -signal.SIGKILL and not any(d.exists() for d in dead.dirs.values())
        assert sleepers[0].poll() is None and all(d.exists() for d in live.dirs.values())
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
        for cg in groups:
            cg.remove()


@needs_bwrap
@needs_cgroups
def test_cpu_quota_limits_cores(tmp_path):
    res = run_script(tmp_path, """
        import threading, time
        def spin():
            end = time.monotonic() + 2
            while time.monotonic() < end:
                pass
        ts = [threading.Thread(target=spin) for _ in range(2)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        print(time.process_time())
    """, limits=Limits(memory_mb=512, cpu_seconds=20, wall_seconds=30, cpus=0.25))
    assert res.ok, res
    assert float(res.stdout) < 1.2  # 2 s wall at a quarter core, not 2 threads x 2 s


# --- time scales with the work ------------------------------------------------------------------------


def test_track_time_limits_scale_with_the_number_of_objects():
    box = load_track("lens-space").sandbox
    wall, cpu = box.scaled(64, threads=2)
    assert wall < 60 and cpu <= 2 * wall + 1  # a stuck model on 64 objects fails within a minute, not 1,800 s
    assert box.scaled(10**7, threads=2) == (box.wall_seconds, box.cpu_seconds)  # the caps still hold
    for name in ("lens-space", "lens-ground", "enhance", "photoz-catalog", "photoz-images"):
        t = load_track(name)
        assert t.sandbox.scaled(64, 2)[0] < 50, name
        # demo sizes leave the slow baselines (Keras CNN, pix2pix) at least 30 ms per object after loading
        demo = t.profiles["demo"].test
        assert (t.sandbox.scaled(demo, 2)[0] - 30) / demo >= 0.01, name


@needs_bwrap
def test_busy_loop_on_a_small_set_fails_within_the_scaled_time(tiny_space_release, tmp_path):
    track = load_track("lens-space")
    box = SandboxLimits(memory_mb=1024, max_processes=32, load_seconds=3, seconds_per_object=0.02)
    track = track.model_copy(update={"sandbox": box, "evaluation": Evaluation(batch_size=32)})
    sub = load_submission(python_submission(tmp_path / "subs", "spin", """
        def load(d):
            return None
        def predict(model, batch):
            while True:
                pass
    """))
    t0 = time.monotonic()
    res = sandboxed_predict(sub, tiny_space_release, scratch=tmp_path / "scratch", track=track, threads=1, gpu=False)
    assert not res.ok
    assert res.reason == "exceeded the wall-time limit of 4.28 s"  # 3 + 0.02 x 64 objects
    assert res.device == "cpu"  # the runner never said, but a run without a GPU ran on the CPU (was "unknown")
    assert res.seconds < 10 and time.monotonic() - t0 < 30  # the old limit held the evaluator for 900 s


# --- disk ---------------------------------------------------------------------------------------------


def _blocks_under(folder: Path) -> int:
    """Bytes allocated under the run's folder, where all it can leave on the host goes (its /scratch is a tmpfs).
    Not the file system's usage: other tests write to it at the same time."""
    return sum(p.lstat().st_blocks * 512 for p in folder.rglob("*"))


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="the size-limited /scratch tmpfs needs root")
@pytest.mark.parametrize("what", ["bytes", "files"])
def test_filling_scratch_fails_and_the_host_stays_empty(tmp_path, what):
    res = run_script(tmp_path, f"""
        import os
        if "{what}" == "bytes":
            for i in range(100):  # 100 x 8 MB into a 64 MB /scratch
                with open(f"/scratch/fill-{{i}}", "wb") as f:
                    f.write(b"x" * (8 << 20))
        else:
            for i in range(50_000):
                open(f"/scratch/f{{i}}", "w").close()
        print("filled")
    """, limits=Limits(memory_mb=512, cpu_seconds=20, wall_seconds=30, scratch_mb=64, scratch_files=2000),
        outputs=["fill-0"])
    assert not res.ok
    assert res.reason.startswith("ran out of disk space: /scratch holds 64 MB and 2000 files")
    assert "filled" not in res.stdout
    assert not res.infrastructure
    scratch = tmp_path / "scratch"
    leftovers = sorted(p.name for p in scratch.iterdir())
    assert leftovers == (["fill-0"] if what == "bytes" else [])  # only the declared output came back
    assert _blocks_under(tmp_path) < 32 << 20
    assert_next_sandbox_works(tmp_path)


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="the size-limited /scratch tmpfs needs root")
def test_an_output_past_its_most_bytes_costs_the_host_only_those(tmp_path):
    """Each declared output is copied up to the most bytes it can be (the rest a hole): N sandboxes at once writing
    their whole /scratch into predictions.npy cost the evaluator's disk N times a predictions file, not N x 1 GB."""
    res = run_script(tmp_path, """
        with open("/scratch/out.bin", "wb") as f:
            f.write(bytes(range(256)) * (160 << 10))  # 40 MB
        print("written")
    """, limits=Limits(memory_mb=512, cpu_seconds=20, wall_seconds=30, scratch_mb=64), outputs={"out.bin": 1 << 20})
    assert res.ok and res.stdout == "written\n", res.reason
    out = tmp_path / "scratch" / "out.bin"
    assert out.stat().st_size == 40 << 20  # its reader sees how large it was, and refuses it
    assert out.stat().st_blocks * 512 <= (1 << 20) + (64 << 10)
    assert out.read_bytes()[: 1 << 20] == bytes(range(256)) * 4096
    assert _blocks_under(tmp_path) < 8 << 20


@needs_bwrap
def test_deep_directory_tree_in_scratch_does_not_crash_the_parent(tmp_path):
    res = run_script(tmp_path, """
        import os
        os.chdir("/scratch")
        for _ in range(1500):
            os.mkdir("d")
            os.chdir("d")
        open("leaf", "w").close()
        print("planted")
    """, limits=Limits(memory_mb=512, cpu_seconds=20, wall_seconds=30))
    assert res.ok, res
    assert res.stdout == "planted\n"
    assert list((tmp_path / "scratch").iterdir()) == []
    assert_next_sandbox_works(tmp_path)


def test_remove_tree_deletes_trees_deeper_than_the_recursion_limit(tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(1500):  # relative to a folder fd: the full path is longer than PATH_MAX
        os.mkdir("dd", dir_fd=fd)
        nfd = os.open("dd", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.mkdir("locked", 0, dir_fd=fd)  # unreadable, unwritable folder with a file in it
    os.close(os.open("locked/x", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.chmod("locked", 0, dir_fd=fd)
    os.symlink("/etc", "etc-link", dir_fd=fd)
    os.close(fd)
    remove_tree(root)
    assert not root.exists()
    assert Path("/etc/passwd").exists()


@pytest.mark.parametrize("names", [[".rm-1/sub/"], [".rm-1/x/y/", "a/b/", ".rm-2/f", ".rm-3"]])
def test_remove_tree_deletes_folders_named_like_its_own_moves(tmp_path, names):
    # remove_tree moves sub-folders up as .rm-<n>: a sandbox's scratch (a host folder without root) may already
    # hold folders or files of those names; an OSError would be an infrastructure failure, retried every run
    root = tmp_path / "scratch"
    for name in names:  # "x/": a folder, "x": a file
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).mkdir() if name.endswith("/") else (root / name).touch()
    remove_tree(root)
    assert not root.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another uid")
@pytest.mark.parametrize("mode", [0, 0o555, 0o444, 0o500])
def test_remove_tree_deletes_a_scratch_folder_its_sandbox_made_unreadable(mode: int):
    # Without root the sandbox's /scratch is a host folder of the evaluator's own uid: the command can chmod it
    # (000, or read-only: 0555 was removed from nothing). The evaluator (no override of permissions) must still
    # remove it; a PermissionError would make a submission's doing an infrastructure failure
    # (executors.is_infrastructure), retried at every evaluation.
    top = Path(tempfile.mkdtemp(prefix="skybench-test-"))  # in /tmp: reachable by the dropped uid
    try:
        box = top / ".sandbox-x"
        (box / "sub" / "deeper" / "deepest").mkdir(parents=True)
        (box / "sub" / "f").write_text("x")
        (box / "f").write_text("x")
        for p in (top, box, box / "sub", box / "sub" / "f", box / "f", *(box / "sub").rglob("deep*")):
            os.chown(p, 65534, 65534)
        for p in (box / "sub" / "deeper" / "deepest", box / "sub" / "deeper", box / "sub", box):
            os.chmod(p, mode)  # a folder moved to another parent must be writable (its ".." changes)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # as an ordinary user, the way an unprivileged evaluator runs
            try:
                os.close(r)
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
                try:
                    remove_tree(box)
                    os.write(w, b"ok")
                except BaseException as exc:  # noqa: BLE001 - reported to the test
                    os.write(w, repr(exc).encode()[:500])
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            said = f.read().decode()
        os.waitpid(pid, 0)
        assert said == "ok", said
        assert not box.exists()
    finally:
        shutil.rmtree(top)


# --- kernel interfaces: seccomp, rlimits, namespaces ----------------------------------------------------


@needs_bwrap
def test_seccomp_denies_namespaces_mounts_tracing_and_keyrings(tmp_path):
    import pyseccomp

    arch = pyseccomp.system_arch()
    nr = {name: pyseccomp.resolve_syscall(arch, name) for name in ("keyctl", "add_key", "bpf", "setns")}
    res = run_script(tmp_path, f"""
        import ctypes, json, os, subprocess, threading
        libc = ctypes.CDLL(None, use_errno=True)
        out = {{}}
        def err(rc):
            return "ok" if rc != -1 else os.strerror(ctypes.get_errno())
        out["unshare"] = err(libc.unshare(0x10000000))  # CLONE_NEWUSER (os.unshare is Python >= 3.12)
        out["ptrace"] = err(libc.ptrace(0, 0, None, None))  # PTRACE_TRACEME
        out["mount"] = err(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
        out["keyctl"] = err(libc.syscall({nr["keyctl"]}, 0, -3, 0))  # KEYCTL_GET_KEYRING_ID of the session
        out["add_key"] = err(libc.syscall({nr["add_key"]}, b"user", b"k", b"v", 1, -3))
        out["bpf"] = err(libc.syscall({nr["bpf"]}, 0, None, 0))
        out["setns"] = err(libc.syscall({nr["setns"]}, 0, 0))
        out["vsock"] = err(libc.socket(40, 1, 0))  # AF_VSOCK: outside the network namespace, reaches the hypervisor
        out["inet"] = err(libc.socket(2, 1, 0))  # loopback buffers: host-wide tcp_mem, outside a v1 memcg
        out["unix"] = err(libc.socket(1, 1, 0))  # other families stay (the network namespace holds them)
        import resource  # RLIMIT_CORE 1: a dump piped to the host's core_pattern helper is aborted; fixed
        out["core"] = list(resource.getrlimit(resource.RLIMIT_CORE))
        out["core0"] = err(libc.setrlimit(4, (ctypes.c_ulong * 2)(0, 0)))
        out["nofile"] = err(libc.setrlimit(7, (ctypes.c_ulong * 2)(512, 512)))  # other limits may still be lowered
        t = threading.Thread(target=lambda: None)  # ordinary threads and processes still work
        t.start()
        t.join()
        out["subprocess"] = subprocess.run(["true"]).returncode
        print(json.dumps(out))
    """)
    assert res.ok, res
    got = json.loads(res.stdout)
    denied = os.strerror(1)  # EPERM
    assert got == {"unshare": denied, "ptrace": denied, "mount": denied, "keyctl": denied, "add_key": denied,
                   "bpf": denied, "setns": denied, "vsock": denied, "inet": denied, "unix": "ok", "core": [1, 1],
                   "core0": denied, "nofile": "ok", "subprocess": 0}


# Writes each value of argv to the run's oom_score_adj: what it was, each write's outcome, a child's and the end value
OOM_PROBE = """
    import json, subprocess, sys
    out = {"adj": open("/proc/self/oom_score_adj").read().strip()}
    for value in sys.argv[1:]:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(value)
            out[value] = "written"
        except OSError as exc:
            out[value] = exc.strerror
    out["child"] = subprocess.run(["cat", "/proc/self/oom_score_adj"], capture_output=True, text=True).stdout
    out["after"] = open("/proc/self/oom_score_adj").read().strip()
    print(json.dumps(out))
"""


@needs_bwrap
def test_a_run_is_the_oom_killers_first_choice_and_cannot_change_that(tmp_path):
    """Every process of a run starts at oom_score_adj 1000 (the evaluator stays at its own), and /proc is read-only
    inside: without it, an unprivileged run wrote its oom_score_adj back to the evaluator's (0), so a host short of
    memory could kill the evaluator, MLflow or another team's run first."""
    res = run_script(tmp_path, OOM_PROBE, "0", "999", "1000")
    assert res.ok, res
    got = json.loads(res.stdout)
    ro = os.strerror(30)  # EROFS
    assert got == {"adj": "1000", "0": ro, "999": ro, "1000": ro, "child": "1000\n", "after": "1000"}, got
    assert open("/proc/self/oom_score_adj").read().strip() != "1000"  # the evaluator's own is untouched


@needs_bwrap
def test_a_gpu_run_keeps_proc_writable_and_how_low_it_can_set_its_oom_score(tmp_path):
    """CUDA fails to initialise under a read-only /proc (error 304 on an H200), so a GPU run has a writable one.
    Under an evaluator with CAP_SYS_RESOURCE the kernel then holds the run at oom_score_adj 1000 (the floor such a
    writer sets); under one without it the run can lower itself to 0, no further (docs/SECURITY.md)."""
    res = run_script(tmp_path, OOM_PROBE, "-1", "0", "1000", gpu=True)
    assert res.ok, res
    got = json.loads(res.stdout)
    assert got.pop("child") == "1000\n", got
    denied = os.strerror(13)  # EACCES
    cap_sys_resource = 24  # linux/capability.h
    effective = int(Path("/proc/self/status").read_text().split("CapEff:")[1].split()[0], 16)
    if effective >> cap_sys_resource & 1:
        assert got == {"adj": "1000", "-1": denied, "0": denied, "1000": "written", "after": "1000"}, got
    else:
        assert got == {"adj": "1000", "-1": denied, "0": "written", "1000": "written", "after": "1000"}, got


@needs_bwrap
def test_the_shim_holds_no_capability_but_dropping_to_the_runs_uid(tmp_path):
    """As root bwrap kept every capability (CapEff 1fffeffffff) for the sandbox's pid 1, the shim that runs the
    command: a bug in it would have been root's. It keeps CAP_SETGID and CAP_SETUID (6, 7: linux/capability.h)
    to drop the command to the run's uid; the command has none."""
    res = run_script(tmp_path, """
        def caps(pid):
            return int(open(f"/proc/{pid}/status").read().split("CapEff:")[1].split()[0], 16)
        print(caps(1), caps("self"))
    """)
    assert res.ok, res
    shim, command = map(int, res.stdout.split())
    assert shim & ~(1 << 6 | 1 << 7) == 0 and command == 0, (hex(shim), hex(command))


@needs_bwrap
def test_system_calls_the_filter_cannot_name_are_absent_inside(tmp_path):
    """A deny-list cannot name calls newer than its libseccomp: open_tree_attr (Linux 6.15) is the mount API's
    open_tree, which the filter denies by name, under a number the library did not know. Every number the library
    cannot name is ENOSYS inside, as on a kernel without it; this test process (no filter) reaches them."""
    import ctypes

    from skybench.harness.sandbox import unnamed_syscalls

    unnamed = unnamed_syscalls()
    known_gap = range(335, 424)  # never assigned on x86_64 (numbers kept in step with the other architectures)
    probe = [nr for nr in unnamed if nr not in known_gap][:16] + [1000]
    assert 1000 in unnamed and len(probe) > 1, unnamed[:20]
    res = run_script(tmp_path, f"""
        import ctypes, json, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        out = {{}}
        for nr in {probe}:
            rc = libc.syscall(ctypes.c_long(nr), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0),
                              ctypes.c_long(0), ctypes.c_long(0))
            out[nr] = "ok" if rc >= 0 else os.strerror(ctypes.get_errno())
        print(json.dumps(out))
    """)
    assert res.ok, res
    enosys = os.strerror(38)
    assert set(json.loads(res.stdout).values()) == {enosys}, res.stdout
    listmount = 458  # x86_64, Linux 6.8: with null arguments it fails EFAULT, and does nothing
    if os.uname().machine != "x86_64" or listmount not in probe:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(listmount), *(ctypes.c_long(0),) * 4)
    if rc < 0 and ctypes.get_errno() == 38:
        pytest.skip("this kernel has no listmount (before 6.8): the outside half shows nothing here")
    assert rc < 0 and ctypes.get_errno() != 38


@needs_bwrap
def test_seccomp_argument_rules_hold_whatever_the_upper_half_of_the_register(tmp_path):
    """The kernel reads an int argument (socket's family, setrlimit's resource) from the low 32 bits of its
    register, seccomp compares all 64: socket(AF_VSOCK | 1 << 32) was a vsock socket, setrlimit(RLIMIT_CORE | 1 << 32)
    set the core limit to 0 (dumps piped to the host's core_pattern helper again)."""
    import pyseccomp

    arch = pyseccomp.system_arch()
    nr = {name: pyseccomp.resolve_syscall(arch, name) for name in ("socket", "setrlimit", "prlimit64")}
    res = run_script(tmp_path, f"""
        import ctypes, json, os, resource
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        def call(*args):
            rc = libc.syscall(*(ctypes.c_long(a) for a in args))
            return "ok" if rc >= 0 else os.strerror(ctypes.get_errno())
        zero = (ctypes.c_ulong * 2)(0, 0)
        high = 1 << 32
        out = {{"vsock": call({nr["socket"]}, high | 40, 1, 0), "inet": call({nr["socket"]}, high | 2, 1, 0),
               "inet6": call({nr["socket"]}, high | 10, 1, 0),
               "setrlimit": call({nr["setrlimit"]}, high | 4, ctypes.addressof(zero)),
               "prlimit": call({nr["prlimit64"]}, 0, high | 4, ctypes.addressof(zero), 0),
               "netlink": call({nr["socket"]}, 16, 3, 2), "unix": call({nr["socket"]}, 1, 1, 0)}}
        out["core"] = list(resource.getrlimit(resource.RLIMIT_CORE))
        import socket
        out["socketpair"] = len(socket.socketpair())  # multiprocessing, DataLoader workers
        print(json.dumps(out))
    """)
    assert res.ok, res
    denied = os.strerror(1)  # EPERM
    assert json.loads(res.stdout) == {"vsock": denied, "inet": denied, "inet6": denied, "setrlimit": denied,
                                      "prlimit": denied, "netlink": denied, "unix": "ok", "core": [1, 1],
                                      "socketpair": 2}


SOCKET_HOGS = {
    # TCP over the sandbox's own loopback: 224 MB queued in a 128 MB run (v1 charges socket buffers to no limit), and
    # counted against the host-wide tcp_mem, past which every TCP socket of the host (Ray, MLflow, the server) stalls
    "tcp": """
        import socket
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        keep, total = [], 0
        for _ in range(60):
            c = socket.create_connection(srv.getsockname())
            keep.append((c, srv.accept()[0]))
            c.setblocking(False)
            try:
                while True:
                    total += c.send(b"x" * 65536)
            except BlockingIOError:
                pass
        print(total >> 20, "MB queued")
    """,
    # netlink receive queues, charged to no cgroup at all: 3 GB queued in a 128 MB run with 400 receivers
    "netlink": """
        import socket, struct
        snd = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 2)  # NETLINK_USERSOCK
        snd.bind((0, 0))
        snd.setblocking(False)
        keep, total, msg = [], 0, struct.pack("=LHHLL", 16 + 16000, 0x10, 0, 0, 0) + bytes(16000)
        for _ in range(40):
            r = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 2)
            r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 30)
            r.bind((0, 0))
            keep.append(r)
            try:
                while True:
                    total += snd.sendto(msg, (r.getsockname()[0], 0))
            except OSError:
                pass
        print(total >> 20, "MB queued")
    """,
}


@needs_bwrap
@needs_cgroups
@pytest.mark.parametrize("kind", sorted(SOCKET_HOGS))
def test_socket_buffers_cannot_hold_memory_outside_the_limit(tmp_path, kind):
    """A run has no network: it gets no socket but AF_UNIX, whose buffers its cgroup is charged for."""
    res = run_script(tmp_path, SOCKET_HOGS[kind],
                     limits=Limits(memory_mb=128, cpu_seconds=20, wall_seconds=30, max_processes=32, scratch_mb=64))
    assert not res.ok and "MB queued" not in res.stdout, (res.reason, res.stdout)
    assert res.reason == "exited with status 1: PermissionError: [Errno 1] Operation not permitted", res.reason
    assert_next_sandbox_works(tmp_path)


@needs_bwrap
def test_host_wide_kernel_counters_are_not_the_sandbox_s_to_use_up(tmp_path):
    """fs.aio-max-nr and the pseudo-terminals of every devpts instance but the host's are counted once for the whole
    host, whatever the namespace: 16 io_setup(4096) calls held all 65,536 AIO events (every other process's io_setup
    failed EAGAIN meanwhile), and a run could open every pty other sandboxes and containers draw on."""
    res = run_script(tmp_path, """
        import ctypes, json, os
        libc = ctypes.CDLL(None, use_errno=True)
        ctx = ctypes.c_ulong(0)
        out = {"io_setup": "ok" if libc.syscall(206, 4096, ctypes.byref(ctx)) == 0 else os.strerror(ctypes.get_errno())}
        try:
            os.openpty()
            out["openpty"] = "ok"
        except OSError:
            out["openpty"] = "refused"
        print(json.dumps(out))
    """)
    assert res.ok, res
    assert json.loads(res.stdout) == {"io_setup": os.strerror(1), "openpty": "refused"}



@needs_bwrap
def test_a_run_cannot_fill_the_hosts_bpf_jit_pool_with_filters_of_its_own(tmp_path):
    """Compiled seccomp and socket filters share one host-wide pool (net.core.bpf_jit_limit), charged to no cgroup: a
    run holding ~9,600 seccomp filters filled it and every unprivileged seccomp() on the host failed meanwhile."""
    res = run_script(tmp_path, """
        import ctypes, json, os, socket, struct
        libc = ctypes.CDLL(None, use_errno=True)
        ret = struct.pack("=HBBI", 6, 0, 0, 0x7FFF0000)  # one instruction: return ALLOW

        class Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

        prog = Prog(1, ret)

        def call(*args):  # every argument a full register: an int would be passed as 32 bits
            args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
            return "ok" if libc.syscall(*args) == 0 else os.strerror(ctypes.get_errno())

        out = {"seccomp": call(317, 1, 0, ctypes.byref(prog)),  # seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog)
               "prctl": call(157, 22, 2, ctypes.byref(prog))}  # prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)
        a, _ = socket.socketpair()
        for name, opt in (("SO_ATTACH_FILTER", 26), ("SO_ATTACH_REUSEPORT_CBPF", 51)):
            try:
                a.setsockopt(socket.SOL_SOCKET, opt, bytes(prog))
                out[name] = "ok"
            except OSError as exc:
                out[name] = os.strerror(exc.errno)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)  # other socket options stay
        out["strict mode query"] = call(317, 2, 0, ctypes.byref(ctypes.c_uint(0x7FFF0000)))  # GET_ACTION_AVAIL
        print(json.dumps(out))
    """)
    assert res.ok, res
    denied = os.strerror(1)
    assert json.loads(res.stdout) == {"seccomp": denied, "prctl": denied, "SO_ATTACH_FILTER": denied,
                                      "SO_ATTACH_REUSEPORT_CBPF": denied, "strict mode query": "ok"}, res.stdout


@needs_bwrap
def test_huge_pages_of_the_hosts_pool_are_denied(tmp_path):
    """Huge pages (vm.nr_hugepages) are one pool for the host, charged to no memory cgroup: with a pool of 128 pages,
    a 64 MB run with 4 processes held 100 of them (200 MB). Ordinary pages of the same calls stay."""
    res = run_script(tmp_path, """
        import ctypes, json, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        failed = ctypes.c_void_p(-1).value
        def err(ok):
            return "ok" if ok else os.strerror(ctypes.get_errno())
        def calls(huge):  # MAP_HUGETLB, MFD_HUGETLB, SHM_HUGETLB
            return [err(libc.mmap(None, 2 << 20, 3, 0x21 | (0x40000 if huge else 0), -1, 0) != failed),
                    err(libc.memfd_create(b"x", 4 if huge else 0) >= 0),
                    err(libc.shmget(0, 2 << 20, 0o1600 | (0x800 if huge else 0)) >= 0)]  # IPC_CREAT | 0600
        print(json.dumps({"huge": calls(True), "plain": calls(False)}))
    """)
    assert res.ok, res
    assert json.loads(res.stdout) == {"huge": [os.strerror(1)] * 3, "plain": ["ok"] * 3}


def _resident_pages(path: Path) -> int:
    """Pages of ``path`` in the host's page cache (mincore of a private mapping)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    vec = (ctypes.c_ubyte * ((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE))()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        buf = ctypes.c_char.from_buffer(m)
        try:
            if libc.mincore(ctypes.c_void_p(ctypes.addressof(buf)), ctypes.c_size_t(size), vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore of {path} failed")
        finally:
            del buf  # the mapping cannot close while exported
    return sum(v & 1 for v in vec)


@needs_bwrap
def test_a_run_cannot_drop_shared_files_from_the_page_cache(tmp_path):
    """The release's inputs and the Python installation are read by every run on the host: a run that drops them
    from the page cache (posix_fadvise DONTNEED needs only a read-only descriptor) makes every other run read them
    from disk again (another run's `import torch` took 1.4 times as long). The advice is ignored."""
    code = tmp_path / "code"
    code.mkdir()
    shared = code / "shared.bin"
    with open(shared, "wb") as f:
        f.write(os.urandom(8 << 20))
        os.fsync(f.fileno())  # clean pages, which the advice would drop at once
    shared.chmod(0o644)
    shared.read_bytes()
    cached = _resident_pages(shared)
    res = run_script(tmp_path, f"""
        import mmap, os
        fd = os.open("{shared}", os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as m:
            for advice in (20, 21):  # MADV_COLD, MADV_PAGEOUT
                m.madvise(advice)
        print("advised")
    """)
    assert res.ok and res.stdout == "advised\n", res  # succeeds, as if taken
    assert cached == (8 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert _resident_pages(shared) == cached


@needs_bwrap
def test_secret_memory_is_not_available(tmp_path):
    """memfd_secret pages are unevictable whatever RLIMIT_MEMLOCK (it bounds only each mapping, and the file keeps
    the pages after munmap: 200 MB held in 64 KiB mappings), and each page splits the kernel's direct map for good
    (the host's 1 GB pages went from 24 GB to 7 GB after one run), which slows every process of the host. The call is
    absent, as on a kernel without secretmem; nothing is mapped here."""
    res = run_script(tmp_path, """
        import ctypes, errno
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        fd = libc.syscall(ctypes.c_long(447), ctypes.c_long(0))  # memfd_secret(0), x86_64 and aarch64
        print(fd, errno.errorcode.get(ctypes.get_errno()) if fd < 0 else "")
    """)
    assert res.ok and res.stdout == "-1 ENOSYS\n", res


@needs_bwrap
def test_per_user_kernel_counters_are_not_the_sandbox_s_to_use_up(tmp_path):
    """Queued signals, POSIX message queues and inotify instances are counted per uid up the user namespaces:
    without root the command is the evaluator's own uid, so one sandbox could use up the evaluator's budget and
    every other sandbox's (timer_create, sigqueue, inotify_init failing in them all). Each is bounded or denied."""
    res = run_script(tmp_path, """
        import ctypes, json, os, signal
        libc = ctypes.CDLL(None, use_errno=True)
        out = {}
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
        class Info(ctypes.Structure):
            _fields_ = [("signo", ctypes.c_int), ("errno", ctypes.c_int), ("code", ctypes.c_int),
                        ("pad", ctypes.c_byte * 116)]
        info = Info(signo=signal.SIGRTMIN, code=-1)  # SI_QUEUE
        n = 0
        while n < 200_000 and libc.syscall(129, os.getpid(), signal.SIGRTMIN, ctypes.byref(info)) == 0:
            n += 1  # rt_sigqueueinfo to itself, blocked: each stays queued
        out["queued"] = n
        out["inotify"] = os.strerror(ctypes.get_errno()) if libc.inotify_init1(0) < 0 else "ok"
        libc.mq_open.restype = ctypes.c_int
        out["mqueue"] = os.strerror(ctypes.get_errno()) if libc.mq_open(b"/q", os.O_CREAT | os.O_RDWR, 0o600,
                                                                        None) < 0 else "ok"
        print(json.dumps(out))
    """)
    assert res.ok, res
    got = json.loads(res.stdout)
    assert got["queued"] <= 1024
    assert got["inotify"] == os.strerror(1)  # EPERM
    assert got["mqueue"] != "ok"


@needs_bwrap
def test_open_files_are_limited(tmp_path):
    res = run_script(tmp_path, """
        import os, resource
        print(resource.getrlimit(resource.RLIMIT_NOFILE))
        fds = []
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as e:
            print(len(fds), e.strerror)
    """, limits=Limits(memory_mb=512, open_files=256))
    assert res.ok, res
    first, second = res.stdout.splitlines()
    assert first == "(256, 256)"
    assert int(second.split()[0]) < 256 and second.endswith("Too many open files")


@needs_bwrap
@needs_cgroups
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to set fs.file-max")
def test_the_hosts_open_file_table_is_out_of_a_runs_reach(tmp_path):
    """Open files are one count for the host (fs.file-max): a file mapped and then closed holds no descriptor, so
    RLIMIT_NOFILE does not bound them. 40 processes of one run held all 2.4 million of the kernel's default table,
    and every other run failed ENFILE. Each sandbox raises the table past what the host's memory can hold."""
    sandbox.FILE_MAX.write_text("2466290\n")  # the kernel's default here (10% of memory in KiB)
    res = run_script(tmp_path, """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        held = 0
        for _ in range(4000):
            fd = os.open("/scratch/f", os.O_RDWR | os.O_CREAT)
            os.ftruncate(fd, 4096)
            held += libc.mmap(None, 4096, 1, 2, fd, 0) not in (None, ctypes.c_void_p(-1).value)  # PROT_READ, PRIVATE
            os.close(fd)
        print(held)
    """, limits=Limits(memory_mb=256, open_files=256, wall_seconds=60, cpu_seconds=60, max_processes=8))
    assert res.ok, res
    assert int(res.stdout) == 4000  # held open past RLIMIT_NOFILE
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert int(sandbox.FILE_MAX.read_text()) >= memory // 256


@needs_bwrap
def test_a_host_whose_open_file_table_cannot_be_raised_refuses_the_challenge_profile(tmp_path, monkeypatch, caplog):
    table = tmp_path / "file-max"
    table.write_text("not a number\n")
    monkeypatch.setattr(sandbox, "FILE_MAX", table)
    res = run_script(tmp_path, "print('ran')", limits=Limits(memory_mb=256, require_cgroups=True))
    assert not res.ok and res.infrastructure and res.reason.startswith("refused: the host's open-file table"), res
    assert "sysctl -w fs.file-max=" in res.reason and str(table) in res.reason
    res = run_script(tmp_path, "print('ran')")  # the demo profile: told, and run
    assert res.ok and res.stdout == "ran\n", res
    assert "open-file table" in caplog.text


def test_the_open_file_table_is_raised_only_below_what_memory_can_hold(tmp_path, monkeypatch):
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    table = tmp_path / "file-max"
    monkeypatch.setattr(sandbox, "FILE_MAX", table)
    for before, after in ((memory // 256 - 1, 2**63 - 1), (memory // 256, memory // 256)):
        table.write_text(f"{before}\n")
        assert sandbox.host_file_table() == ""
        assert int(table.read_text()) == after


def test_bwrap_without_required_options_is_refused():
    with pytest.raises(RuntimeError, match=r"bubblewrap 0\.4\.0.*lacks --size.*--disable-userns.*install"):
        check_bwrap_features("usage: bwrap [OPTIONS...]\n    --seccomp FD   Load rules\n", "bubblewrap 0.4.0")
    check_bwrap_features("--size BYTES\n--disable-userns\n--seccomp FD\n", "bubblewrap 0.8.0")  # no error


def test_an_old_bwrap_first_on_path_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "bubblewrap 0.3.1" && exit 0\n'
                    'echo "usage: bwrap [OPTIONS...] [--] COMMAND"; echo "    --unshare-user"; exit 0\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match=r"bubblewrap 0\.3\.1\) lacks --size"):
        run_sandboxed(["true"], scratch=tmp_path / "scratch")


@needs_bwrap
@pytest.mark.parametrize(("gpu", "expected"), [(True, "unset"), (False, "")])
def test_the_sandbox_does_not_inherit_the_hosts_gpu_index(tiny_space_release, tmp_path, monkeypatch, gpu, expected):
    """A GPU task's sandbox holds only its own /dev/nvidiaN, which CUDA inside numbers 0: the host's index (Ray's
    CUDA_VISIBLE_DEVICES=1, say) must not follow it in, or CUDA would see no GPU and the model run on the CPU. A
    CPU task gets an empty CUDA_VISIBLE_DEVICES (no GPU at all)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    sub = load_submission(python_submission(tmp_path / "subs", "env", """
        import os
        import numpy as np
        def load(d):
            return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        def predict(model, batch):
            return np.full(len(batch), {"unset": 0.25, "": 0.5}.get(model, 0.75), dtype=np.float32)
    """))
    res = sandboxed_predict(sub, tiny_space_release, scratch=tmp_path / "scratch", track=load_track("lens-space"),
                            gpu=gpu, threads=1)
    assert res.ok, res.reason
    assert set(res.predictions.tolist()) == {{"unset": 0.25, "": 0.5}[expected]}


def test_gpu_task_sees_only_its_own_device():
    dev = ["null", "nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset",
           "nvidia-caps"]
    pci = {0: "/sys/devices/pci0000:00/0000:00:04.0", 2: "/sys/devices/pci0000:00/0000:00:06.0"}
    got = gpu_binds(dev, "2", pci, "/sys/module/nvidia")
    assert got == [("--dev-bind", "/dev/nvidia2"), ("--dev-bind", "/dev/nvidiactl"),
                   ("--dev-bind", "/dev/nvidia-uvm"), ("--dev-bind", "/dev/nvidia-uvm-tools"),
                   ("--ro-bind", "/sys/module/nvidia"), ("--ro-bind", "/sys/devices/pci0000:00/0000:00:06.0"),
                   ("--symlink", "/sys/devices/pci0000:00/0000:00:06.0", "/sys/bus/pci/devices/0000:00:06.0")]
    assert not any(p in ("/sys", "/sys/bus", "/sys/class", "/sys/devices") for _, p, *_ in got)
    assert gpu_binds(["nvidia0", "nvidiactl"], None) == [("--dev-bind", "/dev/nvidia0"),
                                                          ("--dev-bind", "/dev/nvidiactl")]
    with pytest.raises(RuntimeError, match="set it to the one GPU index"):
        gpu_binds(dev, "GPU-8f2e", pci)
    with pytest.raises(RuntimeError, match="does not exist"):
        gpu_binds(dev, "7", pci)
    assert gpu_binds(["null", "zero"], "0") == []


# --- infrastructure failures and the challenge profile ---------------------------------------------------


@needs_bwrap
def test_setup_failures_are_the_hosts_and_submission_failures_are_not(tmp_path):
    res = run_script(tmp_path, "print('never')", cwd="/no/such/folder")  # the shim fails before any code runs
    assert not res.ok and res.infrastructure
    assert res.reason.startswith("sandbox setup failed: FileNotFoundError"), res.reason
    code = tmp_path / "code"  # a bind under the read-only /usr: bwrap fails before the shim
    res = run_sandboxed([sys.executable, "-c", "print('never')"], scratch=tmp_path / "scratch2", limits=SMALL,
                        ro_binds=[(code, "/usr/skybench-no-such/x")])
    assert not res.ok and res.infrastructure, res
    assert res.reason.startswith("sandbox setup failed (bubblewrap exited with status 1)"), res.reason
    res = run_script(tmp_path, "raise SystemExit(3)")
    assert not res.ok and not res.infrastructure
    assert res.reason == "exited with status 3"


@pytest.mark.skipif(os.geteuid() != 0, reason="the readability check runs for root, whose sandbox drops to a uid")
@pytest.mark.parametrize("unreadable", ["submission", "release"])
def test_an_unreadable_release_or_submission_is_the_hosts_failure(tmp_path, tiny_space_release, unreadable):
    # blamed on the submission, the host's fault would stay its FAILED record after the files are mended
    release = tmp_path / "rel"
    shutil.copytree(tiny_space_release, release)
    sub = load_submission(python_submission(tmp_path / "subs", "m", "def load(d): return None\n"
                                            "def predict(m, b): return b.sum(axis=(1, 2, 3))\n"))
    closed = sub.model_path if unreadable == "submission" else \
        layout.shard_paths(layout.public_dir(release, "test"), "images")[0]
    closed.chmod(0o600)
    res = sandboxed_predict(sub, layout.public_dir(release, "test"), scratch=tmp_path / "scratch",
                            track=load_track("lens-space"), gpu=False)
    assert not res.ok and "not world-readable" in res.reason and closed.name in res.reason
    # the submission's too: no team sets a mode (a checkout's umask does), and a mode is not in the folder's hash,
    # so its FAILED record would be reused as "unchanged" after the organiser's `chmod -R a+rX`
    assert res.infrastructure


@needs_bwrap
def test_a_sandbox_killed_from_outside_is_the_hosts_failure(tmp_path):
    # the sandboxed code cannot signal bwrap (another pid namespace): a SIGKILL of it came from the host (an
    # operator, the host's OOM killer), and a FAILED record kept for the submission would never be retried
    import threading

    import psutil

    def kill_bwrap():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for p in psutil.Process().children(recursive=True):
                try:
                    if p.name() == "bwrap" and "sleeping" in " ".join(p.cmdline()):
                        time.sleep(1)
                        p.kill()
                        return
                except psutil.Error:
                    pass
            time.sleep(0.1)

    killer = threading.Thread(target=kill_bwrap)
    killer.start()
    res = run_script(tmp_path, "import time\nprint('sleeping', flush=True)\ntime.sleep(30)", "sleeping")
    killer.join()
    assert not res.ok and res.infrastructure, res.reason
    assert res.reason.startswith("sandbox killed from outside by signal SIGKILL"), res.reason
    res = run_script(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")  # its own doing
    assert not res.ok and not res.infrastructure and res.reason == "killed by signal SIGKILL", res.reason


FLOOD = """
import os, time
chunk = b"x" * (1 << 16)
end = time.time() + 5
while time.time() < end:
    os.write(1, chunk)
    os.write(2, chunk)
print("done", flush=True)
"""


@needs_bwrap
def test_an_output_flood_costs_the_evaluator_no_cpu(tmp_path):
    """Reading a sandbox's stdout/stderr as fast as it writes took this process (a Ray worker beside other teams'
    sandboxes) more than half a core outside the sandbox's CPU quota; only a bounded tail is kept anyway."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF)
    res = run_script(tmp_path, FLOOD)
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert res.ok, res.reason
    assert res.stdout.endswith("done\n") and len(res.stderr) <= 20_000
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    assert cpu < 0.2 * res.wall_seconds, (cpu, res.wall_seconds)  # 0.58 when read at full speed


# Two sandboxes at once (Ray slots, several workers on one node) whose limits add up to more than the machine has:
# emulated by a limit on the group above their run groups. The hog holds its memory in /dev/shm (charged to its own
# group, within its limit, but no process's RSS); the honest run then allocates, within its own limit, and the
# kernel's OOM killer picks it (the larger RSS). The kernel counts that kill in the victim's group too.
HOST_SHORT = """
import os, sys, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
host = Path(sys.argv[2])
(host / "cgroup.procs").write_text(str(os.getpid()))  # run groups are made below host/skybench
from skybench.harness.sandbox import Limits, run_sandboxed
code, cache = Path(sys.argv[3]), sys.argv[4] == "cache"
limits = Limits(memory_mb=200 if cache else 400, cpu_seconds=60, wall_seconds=60, max_processes=32, scratch_mb=16)
res = {}
def run(name, src):
    (code / (name + ".py")).write_text(src)
    res[name] = run_sandboxed([sys.executable, str(code / (name + ".py"))], scratch=code.parent / name,
                              ro_binds=[code], limits=limits)
# the hog stays within its limit, its Python and the sandbox's shim included (about 20 MB)
HOG = "import os, time\\nf = os.open('/dev/shm/h', os.O_CREAT | os.O_WRONLY)\\n" \\
      f"for _ in range({180 if cache else 200}): os.write(f, b'x' * (1 << 20))\\ntime.sleep(12)"
HONEST = "bytearray(150 << 20); print('done')"  # 150 MB, within its limit
if cache:  # first fill its own limit with page cache (reclaimed at its limit: v1 counts failcnt, peak = limit)
    big = code / "big.bin"
    with open(big, "wb") as f:
        for _ in range(400):
            f.write(os.urandom(1 << 20))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # not cached: the run's reading charges it
    big.chmod(0o644)
    HONEST = ("import time\\nf = open('" + str(big) + "', 'rb')\\nwhile f.read(1 << 20):\\n    pass\\n"
              "time.sleep(5)\\n" + HONEST)
    honest = threading.Thread(target=run, args=("honest", HONEST))
    honest.start()
    time.sleep(2)
    run("hog", HOG)
    honest.join()
else:
    hog = threading.Thread(target=run, args=("hog", HOG))
    hog.start()
    time.sleep(4)
    run("honest", HONEST)
    hog.join()
print(repr((res["honest"].ok, res["honest"].infrastructure, res["honest"].reason)))
"""


def _remove_group(host: Path) -> None:
    """Remove the test's memory group and the ``skybench`` group in it (a group goes once its tasks have left)."""
    for d in (host / "skybench", host):
        for _ in range(100):
            try:
                d.rmdir()
                break
            except OSError:
                time.sleep(0.05)


def _v1_memory_group() -> Path | None:
    bases = cgroups._v1_bases()[0] if not cgroups._v2_base()[0] else None
    return bases["memory"] if bases else None


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0 or _v1_memory_group() is None, reason="needs root and a cgroup v1 memory group")
@pytest.mark.parametrize("cache", ["", "cache"])
def test_a_run_killed_because_the_host_ran_short_is_the_hosts_failure(tmp_path, cache):
    """Another team's run must not make this one FAILED for 'exceeded the memory limit' (its own fault, not
    retried) when it stayed within its limit and the machine ran out of memory. ``cache``: the run first filled
    its limit with page cache, which v1's counters cannot tell from reaching it (the kernel's report can)."""
    host = _v1_memory_group() / f"test-host-short-{os.getpid()}"
    (host / "skybench").mkdir(parents=True)
    try:
        for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            if (host / "skybench" / name).exists():
                (host / "skybench" / name).write_text(str(300 << 20))  # less than the two runs' 400 + 400 MB
        code = tmp_path / "code"
        code.mkdir()
        for p in (tmp_path, code):
            p.chmod(0o777)
        src = Path(__file__).resolve().parents[1] / "src"
        out = subprocess.run([sys.executable, "-c", HOST_SHORT, str(src), str(host), str(code), cache or "-"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        ok, infrastructure, reason = eval(out.stdout.strip().splitlines()[-1])
        assert not ok and infrastructure, reason
        assert reason.startswith("killed by the host's out-of-memory killer while within its memory limit"), reason
    finally:
        _remove_group(host)


@needs_bwrap
@needs_cgroups
def test_a_run_s_own_oom_kill_is_its_own_whatever_its_process_name(tmp_path):
    """The kernel's OOM report (read on cgroup v1) ends with the victim's name, which the run chooses: one named
    ",oom_memcg=/x" made its own kill read as the host's, an infrastructure failure retried at every evaluate and
    never counted against its quota."""
    res = run_script(tmp_path, """
        import ctypes, os
        ctypes.CDLL(None).prctl(15, b",oom_memcg=/x", 0, 0, 0)  # PR_SET_NAME
        fd, chunk = os.memfd_create("hoard"), b"x" * (1 << 20)
        while True:  # tmpfs pages: past the cgroup's limit, not RLIMIT_AS
            os.write(fd, chunk)
    """)
    assert not res.ok and not res.infrastructure, res
    assert res.reason == f"exceeded the memory limit of {SMALL.memory_mb} MB", res
    assert_next_sandbox_works(tmp_path)


# Two runs at once read the same inputs: the first reader's cgroup is charged for their page cache, which it reclaims
# when it needs the memory. A run that pins those pages (mlock, or splice into pipes) leaves the other run's limit
# holding pages it cannot reclaim. Each run names its processes (PR_SET_NAME) when it is ready: the test orders them.
PIN_VICTIM = """
import ctypes, sys, time
from pathlib import Path
data, flags, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
with open(data, "rb") as f:  # the first reader: the file's 64 MB of page cache are charged to this run
    while f.read(1 << 20):
        pass
ctypes.CDLL(None).prctl(15, f"read-{tag}".encode(), 0, 0, 0)
while not (flags / "go").exists():
    time.sleep(0.05)
x = bytearray(200 << 20)  # within its 256 MB once that page cache is reclaimed
print("done")
"""
PINNER = """
import ctypes, os, sys, time
from pathlib import Path
data, flags, tag, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
i, children = 0, []
for k in range(1, 8):  # 8 processes, each pinning its eighth: mlock is bounded per process
    pid = os.fork()
    if pid == 0:
        i, children = k, []
        break
    children.append(pid)
part, fd, pipes = 8 << 20, os.open(data, os.O_RDONLY), []
at = part * i
try:
    if how == "mlock":
        addr = libc.mmap(None, 64 << 20, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        libc.mlock(ctypes.c_void_p(addr + at), ctypes.c_size_t(part))
    else:
        while len(pipes) * 65536 < part:  # each pipe holds 16 pages of the file, not copies
            r, w = os.pipe()
            pipes.append((r, w))
            os.splice(fd, w, 65536, offset_src=at + 65536 * (len(pipes) - 1))
except OSError:
    pass
libc.prctl(15, f"pin-{tag}".encode(), 0, 0, 0)
while not (flags / "stop").exists():
    time.sleep(0.05)
for pid in children:
    os.waitpid(pid, 0)
"""


def _wait_for_processes(name: str, n: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = 0
        for comm in Path("/proc").glob("[0-9]*/comm"):
            try:
                found += comm.read_text().strip() == name
            except OSError:
                pass
        if found >= n:
            return
        time.sleep(0.05)
    pytest.fail(f"{n} processes named {name} never ran")


@needs_bwrap
@needs_cgroups
@pytest.mark.parametrize("how", ["mlock", "splice"])
def test_a_run_cannot_pin_the_pages_another_run_is_charged_for(tmp_path, how):
    """Before: 8 processes pinning 64 MB of the inputs the other run had read made it fail with "exceeded the memory
    limit of 256 MB" (its own failure, counted in its team's quota) while it stayed within that limit."""
    import secrets
    import threading

    code, flags = tmp_path / "code", tmp_path / "flags"
    for d in (code, flags):
        d.mkdir()
        d.chmod(0o755)
    data = code / "inputs.bin"
    with open(data, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # not cached: the victim is its first reader
    (code / "victim.py").write_text(PIN_VICTIM)
    (code / "pinner.py").write_text(PINNER)
    for f in code.iterdir():
        f.chmod(0o644)
    tag, results = secrets.token_hex(3), {}
    limits = Limits(memory_mb=256, cpu_seconds=60, wall_seconds=120, max_processes=32, scratch_mb=16)

    def run(name: str, *args: str) -> None:
        results[name] = run_sandboxed([sys.executable, str(code / f"{name}.py"), str(data), str(flags), tag, *args],
                                      scratch=tmp_path / name, ro_binds=[code, flags], limits=limits)

    victim = threading.Thread(target=run, args=("victim",))
    pinner = threading.Thread(target=run, args=("pinner", how))
    try:
        victim.start()
        _wait_for_processes(f"read-{tag}", 1)
        pinner.start()
        _wait_for_processes(f"pin-{tag}", 8)
    finally:
        (flags / "go").touch()
        victim.join()
        (flags / "stop").touch()
        if pinner.is_alive() or pinner.ident:
            pinner.join()
    assert results["victim"].ok and results["victim"].stdout == "done\n", results["victim"].reason


# AF_UNIX sockets passed over themselves (SCM_RIGHTS) and closed: cycles only the kernel's unix garbage collector
# frees, which runs when some process closes a unix socket. Their queued data is charged to the run while it runs;
# left after it, it is charged to no live group (Ray has handed that memory to the next sandbox) until some other
# process on the host happens to close a unix socket.
UNIX_CYCLES = """
import array, socket
for _ in range(64):  # 64 x 8 MB queued, each pair in flight in its own queue
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 30)
    a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [a.fileno(), b.fileno()]))])
    a.setblocking(False)
    try:
        while True:
            a.send(bytes(65536))
    except BlockingIOError:
        pass
    a.close()
    b.close()
"""
LEFT_BEHIND = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
host = Path(sys.argv[2])
(host / "cgroup.procs").write_text(str(os.getpid()))  # run groups are made below host/skybench
from skybench.harness.sandbox import Limits, run_sandboxed
code = Path(sys.argv[3])
limits = Limits(memory_mb=1024, cpu_seconds=60, wall_seconds=60, max_processes=32, scratch_mb=16)
def mb():
    return int((host / "memory.usage_in_bytes").read_text()) >> 20
def left(name):  # MB still held after the run, once the kernel had 5 s to free what it will
    res = run_sandboxed([sys.executable, str(code / name)], scratch=code.parent / "scratch", ro_binds=[code],
                        limits=limits)
    assert res.ok, res.reason
    end = time.monotonic() + 5
    while mb() - base > 100 and time.monotonic() < end:
        time.sleep(0.1)
    return mb() - base
base = 0
base = left("honest.py")
print([left("cycles.py") for _ in range(8)])
"""


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0 or _v1_memory_group() is None, reason="needs root and a cgroup v1 memory group")
def test_unix_socket_cycles_do_not_outlive_the_run(tmp_path):
    """What a run leaves in flight on AF_UNIX sockets is freed when it ends, not held (up to its whole memory limit)
    until another process on the host closes a unix socket."""
    host = _v1_memory_group() / f"test-unix-gc-{os.getpid()}"
    (host / "skybench").mkdir(parents=True)
    try:
        code = tmp_path / "code"
        code.mkdir()
        (code / "cycles.py").write_text(UNIX_CYCLES)
        (code / "honest.py").write_text("print('fine')")
        for p in (tmp_path, code):
            p.chmod(0o755)
        src = Path(__file__).resolve().parents[1] / "src"
        out = subprocess.run([sys.executable, "-c", LEFT_BEHIND, str(src), str(host), str(code)],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        left = eval(out.stdout.strip().splitlines()[-1])
        assert max(left) < 100, f"MB held after each run: {left}"  # each run queued about 500 MB
    finally:
        _remove_group(host)


NO_CGROUPS = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from skybench.harness.sandbox import Limits, run_sandboxed
res = run_sandboxed(["true"], scratch=Path(sys.argv[2]), limits=Limits(require_cgroups=bool(int(sys.argv[3]))))
print(res.ok, res.infrastructure, res.reason)
"""


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
@pytest.mark.parametrize("required", [1, 0])
def test_without_cgroups_the_challenge_profile_is_refused(tmp_path, required):
    """In a mount namespace where /sys/fs/cgroup is an empty tmpfs, no cgroup can be created: a run that
    requires cgroups is refused (an infrastructure failure), others warn loudly and fall back to rlimits."""
    src = Path(__file__).resolve().parents[1] / "src"
    script = (f"mount -t tmpfs none /sys/fs/cgroup && exec {sys.executable} -c '{NO_CGROUPS}' "
              f"{src} {tmp_path / 'scratch'} {required}")
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script],
                         capture_output=True, text=True, timeout=120)
    assert "WARNING: cgroups unavailable" in out.stderr and "refuses to run" in out.stderr
    if required:
        assert out.stdout.startswith("False True refused: this profile requires cgroups"), out
    else:
        assert out.stdout.strip() == "True False", out


def test_challenge_releases_require_cgroups(tiny_space_release, tmp_path, monkeypatch):
    import skybench.harness.submission as submission

    release = tmp_path / "challenge"
    shutil.copytree(tiny_space_release, release)
    manifest = read_manifest(release)
    layout.manifest_path(release).write_text(json.dumps(manifest | {"profile": "challenge"}))
    assert submission._challenge(layout.public_dir(release, "test"))
    assert not submission._challenge(layout.public_dir(tiny_space_release, "test"))
    assert not submission._challenge(tmp_path)
    seen = []
    monkeypatch.setattr(submission, "run_sandboxed", lambda argv, **kw: seen.append(kw["limits"]) or
                        SandboxResult(False, None, "refused", "", "", 0.0, infrastructure=True))
    sub = load_submission(python_submission(tmp_path / "subs", "x", "def load(d): pass\ndef predict(m, b): pass\n"))
    track = load_track("lens-space")
    for rel, want in ((release, True), (tiny_space_release, False)):
        res = sandboxed_predict(sub, rel, scratch=tmp_path / "s", track=track)
        assert not res.ok and res.infrastructure  # handed on for a retry
        assert seen[-1].require_cgroups is want
        assert seen[-1].cpus is not None and seen[-1].wall_seconds < 60
    assert len(open_release(release).meta("test")) == 64


KILLED_EVALUATOR = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from skybench.harness.sandbox import Limits, run_sandboxed
run_sandboxed(["sleep", "60"], scratch=Path(sys.argv[2]), limits=Limits(memory_mb=256))
"""


@needs_bwrap
@needs_cgroups
@pytest.mark.skipif(os.geteuid() != 0, reason="the /scratch tmpfs needs root")
def test_leftovers_of_a_killed_evaluator_are_cleaned_by_the_next_run(tmp_path, monkeypatch):
    # a run group is swept once its evaluator's flock is gone and it is over a minute old: the minute, not waited here
    monkeypatch.setattr(cgroups, "_SWEEP_GRACE", 0.0)
    src = Path(__file__).resolve().parents[1] / "src"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EVALUATOR, str(src), str(tmp_path / "dead")])
    try:
        for _ in range(200):
            if f"skybench-scratch-{proc.pid}" in Path("/proc/self/mountinfo").read_text():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the sandbox never started")
        time.sleep(0.5)
    finally:
        proc.kill()  # SIGKILL: no finally blocks run in the evaluator
        proc.wait()
    assert f"skybench-scratch-{proc.pid}" in Path("/proc/self/mountinfo").read_text()
    assert_next_sandbox_works(tmp_path)
    assert f"skybench-scratch-{proc.pid}" not in Path("/proc/self/mountinfo").read_text()
    bases = cgroups._v1_bases()[0] or {}
    assert not [d for b in bases.values() for d in (b / "skybench").glob(f"run-{proc.pid}-*")]


@needs_bwrap
@needs_cgroups
@pytest.mark.slow
def test_attackers_fail_one_by_one_and_the_honest_submission_after_them_scores(tiny_space_release, tmp_path):
    """Through the evaluation path (LocalExecutor, sandboxed_predict): each attacker gets a one-line reason,
    the evaluator survives, and the honest submission that follows gets its predictions."""
    from skybench.harness.executors import Job, LocalExecutor

    track = load_track("lens-space")
    box = track.sandbox.model_copy(update={"memory_mb": 768, "max_processes": 32, "load_seconds": 20,
                                             "scratch_mb": 128})
    track = track.model_copy(update={"sandbox": box, "evaluation": Evaluation(batch_size=32)})
    attacks = {
        "memfd": "import os\nfd = os.memfd_create('x')\nfor _ in range(3000):\n    os.write(fd, b'x' * (1 << 20))\n",
        "forks": "import os, time\nfor _ in range(300):\n    if os.fork() == 0:\n        time.sleep(60)\n",
        "scratch": "for i in range(10_000):\n    open(f'/scratch/f{i}', 'wb').write(b'x' * (1 << 20))\n",
    }
    subs = [load_submission(python_submission(tmp_path / "subs", name, f"""
def load(d):
    return None
def predict(model, batch):
{textwrap.indent(code, '    ')}
""")) for name, code in attacks.items()]
    subs.append(load_submission(python_submission(tmp_path / "subs", "honest", """
        import numpy as np
        def load(d):
            return None
        def predict(model, batch):
            return np.asarray(batch).reshape(len(batch), -1).mean(axis=1)
    """)))
    test_dir = layout.public_dir(tiny_space_release, "test")
    results = list(LocalExecutor().run([Job(s, test_dir, track) for s in subs]))
    reasons = [r.reason for r in results]
    assert reasons[0] == "exceeded the memory limit of 768 MB"
    assert reasons[1].startswith("exceeded the process limit of 32")
    assert reasons[2].startswith("ran out of disk space: /scratch holds 128 MB")
    assert all("\n" not in r for r in reasons)
    assert not any(r.infrastructure for r in results)
    assert results[3].ok and results[3].predictions.shape == (64,)


@needs_bwrap
@pytest.mark.parametrize(("host", "expected"), [("1", 1.0), (None, float(min(4, os.cpu_count() or 1)))])
def test_a_sandboxed_model_gets_the_hosts_thread_count(tiny_space_release, tmp_path, monkeypatch, host, expected):
    """scripts/repro.py sets OMP_NUM_THREADS to the cores per concurrent stage: a model evaluated by one stage must
    not use the cores the other stage runs on (contended threads are slower than fewer ones)."""
    if host is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", host)
    sub = load_submission(python_submission(tmp_path / "subs", "threads", """
        import os
        import numpy as np
        def load(d):
            return float(os.environ["OMP_NUM_THREADS"])
        def predict(model, batch):
            return np.full(len(batch), model / 10, dtype=np.float32)
    """))
    res = sandboxed_predict(sub, tiny_space_release, scratch=tmp_path / "scratch", track=load_track("lens-space"),
                            gpu=False)
    assert res.ok, res.reason
    assert res.predictions.tolist() == pytest.approx([expected / 10] * len(res.predictions))


@needs_bwrap
def test_a_run_cannot_ask_whether_a_shared_page_is_cached(tmp_path):
    """Before: preadv2(RWF_NOWAIT) told a run, without reading it, whether a page of a file every run can read (the
    venv, /usr) was in the host's page cache: a later run read 128 of 128 bits an earlier one had left there by reading
    chosen pages, and a maps track's re-run sandboxes got the first run's per-map state."""
    res = run_script(tmp_path, f"""
        import errno, os
        fd = os.open({sys.executable!r}, os.O_RDONLY)
        try:
            os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
            print("answered")
        except OSError as exc:
            print(errno.errorcode[exc.errno])
        print(os.preadv(fd, [bytearray(1)], 0))  # plain reads (preadv2 without flags) still work
    """)
    assert res.ok, res
    assert res.stdout.split() in (["EOPNOTSUPP", "1"], ["ENOTSUP", "1"]), res.stdout  # one number, two names

    # mincore on a mapping of a file the run's uid owns (without root: the evaluator's venv, inputs, submission)
    res = run_script(tmp_path, f"""
        import ctypes, errno
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        with open({sys.executable!r}, "rb") as f:
            base = libc.mmap(None, 4096, 1, 1, f.fileno(), 0)  # PROT_READ, MAP_SHARED
            vec = (ctypes.c_ubyte * 1)()
            rc = libc.mincore(ctypes.c_void_p(base), ctypes.c_size_t(4096), vec)
            print(rc, errno.errorcode.get(ctypes.get_errno(), "0"))
    """)
    assert res.ok, res
    assert res.stdout.split() == ["-1", "ENOSYS"], res.stdout

    # cachestat(fd, range, stats, 0) (Linux 6.5; number 451 on x86_64 and arm64) answers the same for a file the
    # caller owns: found open, as EPERM only for files of another uid (with root)
    if platform.machine() in ("x86_64", "aarch64"):
        res = run_script(tmp_path, f"""
            import ctypes, errno, os
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open({sys.executable!r}, os.O_RDONLY)
            rng, stats = (ctypes.c_uint64 * 2)(0, 4096), (ctypes.c_uint64 * 5)()
            rc = libc.syscall(451, fd, ctypes.byref(rng), ctypes.byref(stats), 0)
            print(rc, errno.errorcode.get(ctypes.get_errno(), "0"))
        """)
        assert res.ok, res
        assert res.stdout.split() == ["-1", "ENOSYS"], res.stdout
