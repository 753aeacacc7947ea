"""Run an untrusted command inside bubblewrap with resource limits, and say how it ended.

The child gets private net/pid/ipc/uts/cgroup namespaces, a minimal read-only filesystem and a writable
/scratch. A tiny init shim (PID 1 of the sandbox) sets RLIMIT_AS/CPU/NPROC/CORE on the command, reaps orphans
and counts survivors; the parent enforces wall time by killing the sandbox's PID 1, which takes the whole
namespace with it. Process count: RLIMIT_NPROC is never enforced for kernel uid 0, even inside a user
namespace, so as root bwrap runs privileged and the shim drops the command to a fresh unprivileged uid
(scratch is chowned to it, then back to the caller); as an ordinary user bwrap makes a user namespace whose
uid is already non-zero. Linux counts threads in RLIMIT_NPROC.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Limits", "SandboxResult", "run_sandboxed"]

TAIL_BYTES = 20_000
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_MEMORY_PATTERNS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "can't allocate memory",
                    "Unable to allocate", "Failed to allocate memory")
_NPROC_PATTERNS = ("Resource temporarily unavailable", "BlockingIOError", "can't start new thread",
                   "pthread_create failed", "fork: retry")


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 4096  # RLIMIT_AS of the command (RLIMIT_DATA with gpu=True); also caps /tmp and /dev/shm
    cpu_seconds: int = 600  # RLIMIT_CPU: per process, summed over its threads
    wall_seconds: float = 900  # enforced by the parent
    max_processes: int = 64  # RLIMIT_NPROC: processes *and threads* of the command


@dataclass
class SandboxResult:
    ok: bool  # exited 0 and left nothing behind
    returncode: int | None  # exit status of the command; -N if killed by signal N; None if never finished
    reason: str  # "" when ok, else one line
    stdout: str  # last TAIL_BYTES of output
    stderr: str
    wall_seconds: float


# Runs as PID 1 inside the sandbox: argv = [status_fd, config_json, *command].
_SHIM = r"""
import json, os, resource, signal, sys, time
fd, cfg, argv = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]
signal.signal(signal.SIGINT, signal.SIG_DFL)
try:  # not dumpable: a same-uid command can neither ptrace us nor open /proc/1/fd
    import ctypes
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
except Exception:
    pass
pid = os.fork()
if pid == 0:
    try:
        for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
            signal.signal(s, signal.SIG_DFL)
        os.closerange(3, 1 << 16)
        if os.getuid() == 0 and cfg["uid"] is not None:
            os.setgroups([])
            os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        for name, value in cfg["rlimits"]:
            res = getattr(resource, name)
            hard = resource.getrlimit(res)[1]
            inf = hard == resource.RLIM_INFINITY
            value = value if inf else min(value, hard)
            # CPU: SIGXCPU at the soft limit, SIGKILL one second later if that signal is ignored.
            grace = 1 if name == "RLIMIT_CPU" and (inf or value + 1 <= hard) else 0
            resource.setrlimit(res, (value, value + grace))
        os.execvp(argv[0], argv)
    except BaseException as e:
        os.write(2, f"sandbox: cannot run {argv[0]!r}: {e}\n".encode())
    os._exit(127)
while True:  # reap everything (we are init) until the command itself exits
    p, status, ru = os.wait4(-1, 0)
    if p == pid:
        break

def survivors():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    alive = 0
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                with open(f"/proc/{d}/stat") as f:
                    alive += f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
            except (OSError, IndexError):
                pass
    return alive

left = survivors()
if left:
    time.sleep(0.3)  # let processes that are already on their way out finish
    left = survivors()
code = os.waitstatus_to_exitcode(status)
os.write(fd, json.dumps({"returncode": code, "cpu": ru.ru_utime + ru.ru_stime, "survivors": left}).encode())
os._exit(code if code >= 0 else 128 - code)
"""


@functools.cache
def _bwrap_help(bwrap: str) -> str:
    # --size and --disable-userns are missing from older bwrap releases: use them only where supported.
    return subprocess.run([bwrap, "--help"], capture_output=True, text=True).stdout


def _fmt(x: float) -> str:
    return f"{x:g}"


def _memfd(name: str, data: str) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, data.encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    # lchown only: the tree may hold symlinks planted by the sandboxed command.
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            try:
                os.lchown(os.path.join(dirpath, name), uid, gid)
            except FileNotFoundError:
                pass


class _Mounts:
    """bwrap filesystem arguments. Parents of each destination are created 0555 first: bwrap would otherwise
    make them 0700 (unusable by a dropped uid), and under the writable /tmp they must not be writable."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self._dirs: set[str] = {"/"}

    def add(self, opt: str, src: str, dest: str, *, perms: str | None = None) -> None:
        for parent in reversed(Path(dest).parents):
            if str(parent) not in self._dirs:
                self._dirs.add(str(parent))
                self.args += ["--perms", "0555", "--dir", str(parent)]
        self.args += (["--perms", perms] if perms else []) + [opt, src, dest]

    def add_existing(self, opt: str, path: str) -> None:
        if os.path.exists(path):
            self.add(opt, path, path)


def _system_mounts(m: _Mounts) -> None:
    m.add("--ro-bind", "/usr", "/usr")
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            m.args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            m.add("--ro-bind", top, top)
    for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
                 "/etc/localtime", "/sys/devices/system/cpu"):
        m.add_existing("--ro-bind", path)


def _python_dirs() -> list[str]:
    # The interpreter installation and the venv; skip what /usr already covers or what nests in another.
    prefixes = (sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix)
    cands = {os.path.realpath(p) for p in prefixes}
    cands.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    dirs: list[str] = []
    for p in sorted(cands):
        if p == "/" or p == "/usr" or p.startswith("/usr/"):
            continue
        if not any(p.startswith(d.rstrip("/") + "/") for d in dirs):
            dirs.append(p)
    return dirs


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()[:300]
    return ""


def _classify(status: dict | None, rc: int | None, timed_out: bool, stderr: str, limits: Limits) -> str:
    if timed_out:
        return f"exceeded the wall-time limit of {_fmt(limits.wall_seconds)} s"
    last = _last_line(stderr)
    if status is None:  # the shim never reported: sandbox setup failed, or it was killed
        return f"sandbox failed (bubblewrap exited with status {rc})" + (f": {last}" if last else "")
    code, left = status["returncode"], status["survivors"]
    extra = f" (and left {left} background process{'es' if left != 1 else ''} running)" if left else ""
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and status["cpu"] >= limits.cpu_seconds - 0.05:
        return f"killed: exceeded the CPU-time limit of {_fmt(limits.cpu_seconds)} s{extra}"
    if code != 0 and any(p in stderr for p in _MEMORY_PATTERNS) and "CUDA out of memory" not in stderr:
        return f"exceeded the memory limit of {limits.memory_mb} MB{extra}"
    if code != 0 and any(p in stderr for p in _NPROC_PATTERNS):
        return f"exceeded the process limit of {limits.max_processes} (processes and threads): {last}{extra}"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"killed by signal {name}" + (f": {last}" if last else "") + extra
    if code != 0:
        return f"exited with status {code}" + (f": {last}" if last else "") + extra
    if left:
        return f"left {left} background process{'es' if left != 1 else ''} running after it returned"
    return ""


def run_sandboxed(argv: Sequence[str], *, scratch: Path, ro_binds: Sequence[Path | tuple[Path, str]] = (),
                  limits: Limits = Limits(), env: Mapping[str, str] | None = None, gpu: bool = False,
                  cwd: str = "/scratch") -> SandboxResult:
    """Run ``argv`` in a bubblewrap sandbox; ``scratch`` is the only writable host path (at /scratch).

    ``ro_binds``: a Path is bound read-only at the same path, a (src, dest) tuple binds src at dest.
    When running as root the command runs as an unprivileged uid, so bound paths must be world-readable.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RuntimeError("bubblewrap (bwrap) is required to run untrusted submissions; install it with "
                           "`apt-get install bubblewrap` (running them unsandboxed is not acceptable)")
    if not argv:
        raise ValueError("argv must not be empty")
    scratch = Path(scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    binds: list[tuple[str, str]] = []
    for b in ro_binds:
        src, dest = (b, b) if isinstance(b, (str, os.PathLike)) else b
        src = os.path.realpath(src)
        if not os.path.exists(src):
            raise FileNotFoundError(f"ro_bind source does not exist: {src}")
        binds.append((src, os.fspath(dest)))

    privileged = os.geteuid() == 0
    uid = gid = 3_000_000 + secrets.randbelow(1_000_000) if privileged else 65534
    pkg_dir = Path(__file__).resolve().parent
    mem = limits.memory_mb * 1024 * 1024
    nproc = limits.max_processes + (0 if privileged else 1)  # unprivileged: the shim shares the uid
    rlimits = [["RLIMIT_DATA" if gpu else "RLIMIT_AS", mem], ["RLIMIT_CPU", int(limits.cpu_seconds)],
               ["RLIMIT_NPROC", nproc], ["RLIMIT_CORE", 0]]
    cfg = {"uid": uid if privileged else None, "gid": gid, "rlimits": rlimits}

    child_env = {k: os.environ[k] for k in _THREAD_VARS if k in os.environ}
    child_env.update(PATH=f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin", HOME="/scratch", LANG="C.UTF-8",
                     LC_ALL="C.UTF-8", PYTHONPATH=str(pkg_dir.parent), PYTHONDONTWRITEBYTECODE="1")
    for k, v in (env or {}).items():
        child_env[k] = f"{v}:{child_env[k]}" if k == "PYTHONPATH" and v else str(v)

    passwd = f"root:x:0:0::/:/usr/sbin/nologin\nsandbox:x:{uid}:{gid}::/scratch:/bin/sh\n"
    fds = {"passwd": _memfd("passwd", passwd), "group": _memfd("group", f"root:x:0:\nsandbox:x:{gid}:\n")}
    info_r, fds["info"] = os.pipe()
    status_r, fds["status"] = os.pipe()
    size = ["--size", str(mem)] if "--size" in _bwrap_help(bwrap) else []
    m = _Mounts()
    m.args += [*size, "--perms", "1777", "--tmpfs", "/tmp"]
    m._dirs.add("/tmp")
    _system_mounts(m)
    m.add("--ro-bind-data", str(fds["passwd"]), "/etc/passwd", perms="0644")
    m.add("--ro-bind-data", str(fds["group"]), "/etc/group", perms="0644")
    for d in _python_dirs():
        m.add("--ro-bind", d, d)
    m.add("--ro-bind", str(pkg_dir), str(pkg_dir))
    for src, dest in binds:
        m.add("--ro-bind", src, dest)
    m.add("--bind", str(scratch), "/scratch")
    m.args += ["--proc", "/proc", "--dev", "/dev", *size, "--perms", "1777", "--tmpfs", "/dev/shm"]
    if gpu:
        for node in sorted(glob.glob("/dev/nvidia*")):
            m.args += ["--dev-bind", node, node]
        for d in ("/sys/bus", "/sys/class", "/sys/devices", "/sys/module"):
            m.add_existing("--ro-bind", d)
    m.args += ["--remount-ro", "/", "--chdir", cwd]
    ns = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
          "--hostname", "sandbox", "--die-with-parent", "--new-session", "--as-pid-1"]
    if not privileged:
        ns += ["--unshare-user", "--uid", str(uid), "--gid", str(gid)]
        ns += ["--disable-userns"] if "--disable-userns" in _bwrap_help(bwrap) else []
    cmd = [bwrap, *ns, *m.args, "--info-fd", str(fds["info"]), "--", sys.executable, "-I", "-S", "-c", _SHIM,
           str(fds["status"]), json.dumps(cfg), *argv]

    start = time.monotonic()
    try:
        if privileged:
            _chown_tree(scratch, uid, gid)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=child_env, pass_fds=tuple(fds.values()),
                                    start_new_session=True)
        finally:
            for fd in fds.values():
                os.close(fd)
        bufs, timed_out = _collect(proc, info_r, status_r, limits.wall_seconds)
    finally:
        os.close(info_r)
        os.close(status_r)
        if privileged:
            _chown_tree(scratch, os.getuid(), os.getgid())
    wall = time.monotonic() - start

    stdout = bytes(bufs["out"][-TAIL_BYTES:]).decode("utf-8", "replace")
    stderr = bytes(bufs["err"][-TAIL_BYTES:]).decode("utf-8", "replace")
    try:
        status = json.loads(bufs["status"]) if bufs["status"] and not timed_out else None
    except ValueError:
        status = None
    reason = _classify(status, proc.returncode, timed_out, stderr, limits)
    returncode = None if timed_out else (status["returncode"] if status else proc.returncode)
    return SandboxResult(ok=not reason, returncode=returncode, reason=reason, stdout=stdout, stderr=stderr,
                         wall_seconds=wall)


def _collect(proc: subprocess.Popen, info_r: int, status_r: int, wall_seconds: float,
             ) -> tuple[dict[str, bytearray], bool]:
    """Read the sandbox's pipes (keeping bounded tails) until it ends or the wall-time limit kills it."""
    assert proc.stdout is not None and proc.stderr is not None
    bufs = {"out": bytearray(), "err": bytearray(), "info": bytearray(), "status": bytearray()}
    sel = selectors.DefaultSelector()
    for fd, key in ((proc.stdout.fileno(), "out"), (proc.stderr.fileno(), "err"), (info_r, "info"),
                    (status_r, "status")):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, key)
    deadline = time.monotonic() + wall_seconds
    timed_out = False
    try:
        while sel.get_map() or proc.poll() is None:
            now = time.monotonic()
            if now >= deadline and not timed_out:
                timed_out = True
                _kill_sandbox(proc, bufs["info"])
                deadline = now + 10  # grace period to drain the pipes after the kill
            elif now >= deadline:
                break
            wait = min(0.5, max(deadline - now, 0.01))
            if not sel.get_map():
                try:
                    proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    pass
                continue
            for key, _ in sel.select(timeout=wait):
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.data]
                buf += chunk
                if len(buf) > 2 * TAIL_BYTES:
                    del buf[: len(buf) - TAIL_BYTES]
    finally:
        if proc.poll() is None:
            _kill_sandbox(proc, bufs["info"])
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
    return bufs, timed_out


def _kill_sandbox(proc: subprocess.Popen, info: bytearray) -> None:
    # SIGKILL the sandbox's PID 1 (the kernel then kills its whole PID namespace), then bwrap itself.
    try:
        child = int(json.loads(bytes(info))["child-pid"])
    except (ValueError, KeyError, TypeError):
        child = None
    if child and proc.poll() is None:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)  # bwrap exits once PID 1, and so the namespace, is gone
        except Exception:
            pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if child:
        _wait_gone(child)


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    return
        except (OSError, IndexError):
            return
        time.sleep(0.02)

