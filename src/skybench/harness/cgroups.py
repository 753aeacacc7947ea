"""A cgroup per sandboxed run: memory (including tmpfs, shared-memory and memfd pages, which rlimits miss),
processes and threads, and CPU, enforced by the kernel on everything the sandbox starts.

cgroup v2 where the host has a v2 memory controller (``memory.max``, ``memory.swap.max``, ``pids.max``,
``cpu.max``), else the v1 ``memory``/``pids``/``cpu`` hierarchies (``memory.limit_in_bytes`` with
``memory.memsw.limit_in_bytes``, ``pids.max``, ``cpu.cfs_quota_us``). Run groups are created below a
``skybench`` group inside this process's own cgroup of each controller. ``create`` returns None (and warns
once) when neither can be used; the caller then falls back to rlimits, or refuses.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

__all__ = ["Cgroup", "CgroupError", "create", "unavailable_reason"]

log = logging.getLogger(__name__)
_V1_CONTROLLERS = ("memory", "pids", "cpu")
_PERIOD_US = 100_000
_warned: set[str] = set()


class CgroupError(RuntimeError):
    """A cgroup could not be created or configured (the host's fault, not the submission's)."""


class Mount(NamedTuple):
    root: str
    point: str
    fstype: str
    source: str
    options: set[str]  # the super options


def _unescape(field: str) -> str:
    # proc(5), /proc/pid/mountinfo: a space, tab, newline or backslash in a path is written as its octal \ooo escape
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a /proc/<pid>/mountinfo text (proc(5): fields 4 and 5, then fstype, source and super options
    after the " - " separator), paths unescaped."""
    out: list[Mount] = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if len(f) >= 5 and len(r) >= 3:
            out.append(Mount(_unescape(f[3]), _unescape(f[4]), r[0], _unescape(r[1]), set(r[2].split(","))))
    return out


def mounts() -> list[Mount]:
    """The mounts this process sees (/proc/self/mountinfo; none if it cannot be read)."""
    try:
        return parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return []


def _mounts() -> list[Mount]:
    """The cgroup mounts."""
    return [m for m in mounts() if m.fstype in ("cgroup", "cgroup2")]


def _own_paths() -> dict[str, str]:
    """{controller: path} of this process from /proc/self/cgroup ("" is the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else [""]:
            paths[c] = path
    return paths


def _join(mount_root: str, mount_point: str, own: str) -> Path:
    rel = os.path.relpath(own, mount_root) if own.startswith(mount_root) else own.lstrip("/")
    return Path(mount_point) / ("" if rel == "." else rel)


def _v2_base() -> tuple[Path | None, str]:
    own = _own_paths()
    if "" not in own:
        return None, "no cgroup v2 hierarchy"
    for root, point, fstype, _, _ in _mounts():
        if fstype == "cgroup2":
            base = _join(root, point, own[""])
            try:
                ctrls = (base / "cgroup.controllers").read_text().split()
            except OSError as exc:
                return None, f"cannot read {base}/cgroup.controllers: {exc}"
            if "memory" not in ctrls or "pids" not in ctrls:
                return None, f"the cgroup v2 hierarchy at {point} has no memory/pids controller"
            return base, ""
    return None, "no cgroup v2 mount"


def _v1_bases() -> tuple[dict[str, Path] | None, str]:
    own = _own_paths()
    bases: dict[str, Path] = {}
    for root, point, fstype, _, opts in _mounts():
        for c in _V1_CONTROLLERS:
            if fstype == "cgroup" and c in opts and c in own and c not in bases:
                bases[c] = _join(root, point, own[c])
    missing = [c for c in ("memory", "pids") if c not in bases]
    if missing:
        return None, f"no cgroup v1 {'/'.join(missing)} controller mounted"
    for base in bases.values():
        if not os.access(base, os.W_OK):
            return None, f"cgroup {base} is not writable (run as root, or delegate it to this user)"
    return bases, ""


def kernel_oom_reports(group: str) -> list[dict[str, str]]:
    """The kernel's OOM kill reports (``oom-kill:constraint=...,oom_memcg=<group whose limit failed, absent when
    the host ran out>,task_memcg=<the victim's group>,...``, kernel 4.19+) whose victim was in a cgroup named
    ``group``, read from /dev/kmsg; [] when it cannot be read (no CAP_SYSLOG) or holds none (rate-limited)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return []
    found: list[dict[str, str]] = []
    try:
        while True:
            try:
                record = os.read(fd, 8192)  # one record per read: "prio,seq,usec,flags;message\n..."
            except BlockingIOError:  # the end of the buffer
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # a record overwritten while reading: the next one follows
                    continue
                break
            if not record:
                break
            message = record.decode("utf-8", "replace").partition(";")[2].partition("\n")[0]
            if message.startswith("oom-kill:"):
                # the kernel's fields end at ",task=<victim's name>,pid=...": a name is the run's to choose (prctl
                # PR_SET_NAME), commas and "=" included (",oom_memcg=/x" made a run's own OOM kill the host's)
                kernel = message[len("oom-kill:"):].partition(",task=")[0]
                fields = dict(kv.partition("=")[::2] for kv in kernel.split(","))
                if fields.get("task_memcg", "").endswith(f"/{group}"):
                    found.append(fields)
    finally:
        os.close(fd)
    return found


def unavailable_reason() -> str:
    """Why no cgroup can be created here ("" when one can)."""
    if _v2_base()[0] is not None:
        return ""
    return _v1_bases()[1]


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)
        print(f"skybench: WARNING: {message}", file=sys.stderr)


@dataclass
class Cgroup:
    """One run's cgroup: ``dirs`` are its folders (one per v1 controller, or the single v2 folder)."""

    version: int
    dirs: dict[str, Path]
    memory_mb: int
    _removed: bool = field(default=False, repr=False)
    _locks: list[int] = field(default_factory=list, repr=False)  # flocked descriptors of ``dirs``: ours while alive

    def claim(self, d: Path) -> None:
        """Hold the flock of folder ``d`` of this cgroup until :meth:`remove`: :func:`_sweep` of other evaluators
        (in other pid namespaces too, where this process's pid means nothing) then leaves it alone."""
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise CgroupError(f"cannot open cgroup {d}: {exc.strerror or exc}") from exc
        self._locks.append(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:  # cgroupfs always has flock: a run this evaluator cannot hold is not started
            held = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
            raise CgroupError(f"cannot lock cgroup {d}: " + ("another evaluator holds it" if held else
                                                             (exc.strerror or str(exc)))) from exc

    @property
    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files a process writes its pid to, to join this cgroup."""
        return [d / "cgroup.procs" for d in self.dirs.values()]

    def _read(self, ctrl: str, name: str) -> dict[str, int]:
        try:
            text = (self.dirs[ctrl] / name).read_text()
        except (OSError, KeyError):
            return {}
        out = {}
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if v.strip().lstrip("-").isdigit():
                out[k] = int(v)
        return out

    def oom_kind(self) -> Literal["own", "host"] | None:
        """Whether the kernel's OOM killer killed a process of this cgroup: ``"own"`` when the run reached its own
        memory limit, ``"host"`` when it was within it (the host, or a group above this one, ran out of memory:
        e.g. several sandboxes at once whose limits add up to more than the machine has; the kernel counts such
        a kill in the victim's cgroup too), None when it was not."""
        kills = self._oom_kills()
        if kills is None:  # kernels < 4.13 count no kills: a failed charge against the run's own limit
            try:
                return "own" if int((self.dirs["memory"] / "memory.memsw.failcnt").read_text()) > 0 else None
            except (OSError, ValueError):
                return None
        if not kills:
            return None
        if self.version == 1 and (reports := kernel_oom_reports(self.dirs["memory"].name)):
            # the kernel's own words: the group whose limit started the kill (none: the host's memory ran out)
            own = any(r.get("oom_memcg") == r.get("task_memcg") for r in reports)
            return "own" if own else "host"
        return "own" if self._limit_hit() else "host"

    def _oom_kills(self) -> int | None:
        """Processes of this cgroup killed by any OOM killer (None: a kernel < 4.13 does not count them)."""
        if self.version == 2:
            return self._read("unified", "memory.events").get("oom_kill", 0)
        return self._read("memory", "memory.oom_control").get("oom_kill")

    def _limit_hit(self) -> bool:
        """Whether the run's own memory limit started an OOM kill (an ancestor's or the host's shortage does not
        count: v2 counts ``oom`` in the group whose limit failed and its ancestors, never in a child; not ``max``,
        which page cache reclaimed at the limit raises too). v1 has no such count (:meth:`oom_kind` reads the
        kernel's report first): ``failcnt`` or a peak usage at the limit, which an honest run that filled its limit
        with page cache also shows (docs/SCALE.md)."""
        if self.version == 2:
            return self._read("unified", "memory.events").get("oom", 0) > 0
        d = self.dirs.get("memory")
        for prefix in ("memory.", "memory.memsw."):
            try:
                if d is None or int((d / f"{prefix}failcnt").read_text()) > 0:
                    return True
                peak, limit = (int((d / f"{prefix}{n}").read_text()) for n in ("max_usage_in_bytes", "limit_in_bytes"))
            except (OSError, ValueError):
                continue
            if peak >= limit - max(limit // 100, 1 << 20):  # within a charge batch of the limit
                return True
        return False

    def pids_limit_hit(self) -> bool:
        ctrl = "unified" if self.version == 2 else "pids"
        return self._read(ctrl, "pids.events").get("max", 0) > 0

    def pids(self) -> list[int]:
        out: set[int] = set()
        for f in self.procs_files:
            try:
                out.update(int(x) for x in f.read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(out)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL everything in the cgroup until it is empty (v2: ``cgroup.kill``)."""
        if self.version == 2:
            try:
                (self.dirs["unified"] / "cgroup.kill").write_text("1")
            except OSError:
                pass
        end = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < end:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left, then remove the cgroup's folders."""
        if self._removed:
            return
        self.kill()
        for d in self.dirs.values():
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last tasks exit
                    time.sleep(0.05)
            else:
                warn_once(f"could not remove cgroup {d}")
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()
        self._removed = True


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror or exc}") from exc


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise CgroupError(f"cannot create cgroup {path}: {exc.strerror or exc}") from exc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


_SWEEP_GRACE = 60.0  # seconds a new run group may stay unlocked (between mkdir and flock)


def _held(d: Path) -> bool | None:
    """Whether an evaluator holds run group ``d``'s flock (:meth:`Cgroup.claim`); None where flock is unsupported.
    Never the pid in its name alone: evaluators in containers or other pid namespaces share the hierarchy, and a
    pid alive there may be dead or another process here."""
    try:
        if time.time() - d.lstat().st_mtime < _SWEEP_GRACE:
            return True
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return True  # gone, or not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return True if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
    finally:
        os.close(fd)
    return False


def _sweep(parents: dict[str, Path], version: int) -> None:
    """Remove run groups left by evaluators that were killed (SIGKILL, OOM) before they could clean up: those whose
    flock nobody holds (the kernel drops it when its evaluator dies), in every controller (v1)."""
    groups: dict[str, dict[str, Path]] = {}
    for ctrl, parent in parents.items():
        try:
            entries = list(parent.glob("run-*-*"))
        except OSError:
            continue
        for d in entries:
            groups.setdefault(d.name, {})[ctrl] = d
    for name, dirs in groups.items():
        held = [_held(d) for d in dirs.values()]
        if any(held):
            continue
        pid = name.split("-")[1]
        if None in held and (not pid.isdigit() or _alive(int(pid))):  # no flock here: the pid, as before
            continue
        Cgroup(version, dirs, 0).remove()


def _run_name() -> str:
    return f"run-{os.getpid()}-{secrets.token_hex(4)}"


def create(*, memory_mb: int, max_processes: int, cpus: float | None = None) -> Cgroup | None:
    """A new run cgroup with these limits, or None (after a loud warning) when the host offers none.

    Raises CgroupError when cgroups exist but creating or configuring this one failed."""
    mem = str(memory_mb * 1024 * 1024)
    name = _run_name()
    base, why2 = _v2_base()
    if base is not None:
        parent = base / "skybench"
        try:
            _enable(base)
            _mkdir(parent)
            _enable(parent)
            _sweep({"unified": parent}, 2)
            run = parent / name
            _mkdir(run)
            cg = Cgroup(2, {"unified": run}, memory_mb)
            try:
                cg.claim(run)
            except CgroupError:
                cg.remove()
                raise
        except CgroupError as exc:
            why2 = str(exc)
        else:
            try:
                _write(run / "memory.max", mem)
                if (run / "memory.swap.max").exists():
                    _write(run / "memory.swap.max", "0")
                _write(run / "pids.max", str(max_processes))
                if cpus and (run / "cpu.max").exists():
                    _write(run / "cpu.max", f"{int(cpus * _PERIOD_US)} {_PERIOD_US}")
            except CgroupError:
                cg.remove()
                raise
            return cg
    bases, why1 = _v1_bases()
    if bases is None:
        warn_once(f"cgroups unavailable (v2: {why2}; v1: {why1}): memory, process and CPU limits fall back to "
                  "rlimits, which do not count tmpfs, shared memory or memfd pages; the challenge profile "
                  "refuses to run like this")
        return None
    dirs: dict[str, Path] = {}
    cg = Cgroup(1, dirs, memory_mb)
    try:
        for b in bases.values():
            _mkdir(b / "skybench")
        _sweep({ctrl: b / "skybench" for ctrl, b in bases.items()}, 1)
        for ctrl, b in bases.items():
            dirs[ctrl] = b / "skybench" / name
            _mkdir(dirs[ctrl])
            cg.claim(dirs[ctrl])
        m = dirs["memory"]
        _write(m / "memory.limit_in_bytes", mem)  # before memsw, which must stay >= it
        if (m / "memory.memsw.limit_in_bytes").exists():
            _write(m / "memory.memsw.limit_in_bytes", mem)  # no swap beyond the limit
        else:
            warn_once("memory.memsw.limit_in_bytes is missing (boot with swapaccount=1): sandboxes may swap "
                      "beyond their memory limit")
            try:
                (m / "memory.swappiness").write_text("0")
            except OSError:
                pass
        _write(dirs["pids"] / "pids.max", str(max_processes))
        if cpus and "cpu" in dirs:
            _write(dirs["cpu"] / "cpu.cfs_period_us", str(_PERIOD_US))
            _write(dirs["cpu"] / "cpu.cfs_quota_us", str(int(cpus * _PERIOD_US)))
    except CgroupError:
        cg.remove()
        raise
    return cg


def _enable(group: Path) -> None:
    """Enable memory, pids (and cpu) for the children of a v2 group."""
    ctrls = (group / "cgroup.controllers").read_text().split() if (group / "cgroup.controllers").exists() else []
    want = [c for c in ("memory", "pids", "cpu") if c in ctrls]
    have = (group / "cgroup.subtree_control").read_text().split()
    missing = [c for c in want if c not in have]
    if missing:
        _write(group / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
