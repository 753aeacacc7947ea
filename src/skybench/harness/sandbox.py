"""Run an untrusted command inside bubblewrap with resource limits, and say how it ended.

The child gets private net/pid/ipc/uts/cgroup namespaces, a minimal read-only filesystem, a seccomp filter
(no namespaces, mounts, ptrace, bpf, keyrings...) and a fresh writable /scratch: as root a size- and
inode-limited tmpfs, unmounted after the declared outputs were copied out, so nothing the command wrote
reaches the host otherwise. Memory (with tmpfs, shared memory and memfd pages), processes and CPU are held
by a per-run cgroup (skybench.harness.cgroups) that bwrap joins before it starts; the OOM killer's verdict is read
from it. A tiny init shim (PID 1 of the sandbox) also sets rlimits (AS/DATA, CPU, NPROC, NOFILE, FSIZE,
CORE, MEMLOCK...) on the command, reaps orphans and counts survivors; the parent enforces wall time by killing the
sandbox's PID 1, which takes the whole namespace with it, then kills whatever is left in the cgroup.
RLIMIT_NPROC is never enforced for kernel uid 0, even inside a user namespace, so as root bwrap runs
privileged and the shim drops the command to a fresh unprivileged uid; as an ordinary user bwrap makes a
user namespace whose uid is already non-zero. Linux counts threads in RLIMIT_NPROC and pids.max.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import glob
import json
import os
import secrets
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from skybench.harness import cgroups
from skybench.harness.files import remove_tree

__all__ = ["Limits", "SandboxResult", "check_bwrap_features", "gpu_binds", "gpu_library_path", "remove_tree",
           "run_sandboxed", "seccomp_bpf"]

TAIL_BYTES = 20_000
FLOOD_BYTES = 4 << 20  # output past this on one pipe is read at most a 64 KiB chunk per 10 ms
# the thread caps of the math libraries and frameworks: passed through from the host, set by a submission run
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
_MEMORY_PATTERNS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "can't allocate memory",
                    "Unable to allocate", "Failed to allocate memory")
_DISK_PATTERNS = ("No space left on device", "Disk quota exceeded", "File too large")
_MOUNT_SOURCE = "skybench-scratch"
_SANDBOX_TASKS = 4  # bwrap and the init shim, which share the cgroup's pids.max with the command
_NPROC_PATTERNS = ("Resource temporarily unavailable", "BlockingIOError", "can't start new thread",
                   "pthread_create failed", "fork: retry")


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 4096  # cgroup memory (incl. tmpfs, shm, memfd); RLIMIT_AS (RLIMIT_DATA with gpu) too
    cpu_seconds: int = 600  # RLIMIT_CPU: per process, summed over its threads
    wall_seconds: float = 900  # enforced by the parent
    max_processes: int = 64  # cgroup pids.max and RLIMIT_NPROC: processes *and threads* of the command
    cpus: float | None = None  # CPU quota in cores (cgroup); None: no quota
    scratch_mb: int = 1024  # size of /scratch (a tmpfs when running as root); also RLIMIT_FSIZE
    scratch_files: int = 100_000  # inodes of /scratch
    open_files: int = 1024  # RLIMIT_NOFILE
    require_cgroups: bool = False  # refuse to run (infrastructure failure) where cgroups or tmpfs are missing


@dataclass
class SandboxResult:
    ok: bool  # exited 0 and left nothing behind
    returncode: int | None  # exit status of the command; -N if killed by signal N; None if never finished
    reason: str  # "" when ok, else one line
    stdout: str  # last TAIL_BYTES of output
    stderr: str
    wall_seconds: float
    infrastructure: bool = False  # the failure is the host's (sandbox setup, cgroup, mount, disk): retry it


# The init shim (skybench.harness.shim), PID 1 inside the sandbox: run by path, as the package folder is bound
# read-only there; argv = [status_fd, config_json, *command].
_SHIM = Path(__file__).resolve().with_name("shim.py")


_REQUIRED_BWRAP = {"--size": "a size-limited /tmp", "--disable-userns": "no nested user namespaces",
                   "--seccomp": "the system-call filter"}


@functools.cache
def _bwrap_help(bwrap: str) -> tuple[str, str]:
    help_text = subprocess.run([bwrap, "--help"], capture_output=True, text=True).stdout
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip()
    return help_text, version or "bubblewrap of unknown version"


def check_bwrap_features(help_text: str, version: str, path: str = "bwrap") -> None:
    """Raise RuntimeError when this bubblewrap lacks an option the sandbox relies on."""
    missing = [f"{opt} ({why})" for opt, why in _REQUIRED_BWRAP.items() if opt not in help_text]
    if missing:
        raise RuntimeError(f"{path} ({version}) lacks {', '.join(missing)}; the sandbox needs bubblewrap >= 0.8.0: "
                           "install a newer one (Debian 12 / Ubuntu 24.04 `apt-get install bubblewrap`, or build "
                           "it from https://github.com/containers/bubblewrap) and put it first on PATH")


# System calls no model needs: namespaces and mounts (escape and privilege tools), tracing other processes,
# kernel keyrings, BPF, perf, module loading, handle-based opens (a classic container escape), userfaultfd.
_DENIED_SYSCALLS = ("unshare", "setns", "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen",
                    "fsconfig", "fsmount", "fspick", "mount_setattr", "ptrace", "process_vm_readv",
                    "process_vm_writev", "process_madvise", "bpf", "keyctl", "add_key", "request_key",
                    "perf_event_open", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
                    "open_by_handle_at", "name_to_handle_at", "userfaultfd", "reboot", "swapon", "swapoff",
                    "syslog", "io_uring_setup", "io_uring_enter", "io_uring_register", "acct", "quotactl",
                    # counted per user across user namespaces (fs.inotify.max_user_instances, fanotify's groups):
                    # without root the command is the evaluator's own uid, and would use up the evaluator's
                    "inotify_init", "inotify_init1", "fanotify_init",
                    # host-wide, across every namespace: fs.aio-max-nr (16 io_setup(4096) calls held all 65,536, and
                    # every other process's io_setup failed EAGAIN), as io_uring is above
                    "io_setup")
# The one socket family a run may use: AF_UNIX (multiprocessing, DataLoader workers), whose buffers its memory cgroup
# is charged for. Every other is EPERM: AF_VSOCK (40) reaches the hypervisor (CID 2) and every vsock service of the VM
# whatever --unshare-net; AF_INET/AF_INET6 reach only the run's own loopback, whose TCP/UDP buffers count against the
# host-wide tcp_mem/udp_mem (past tcp_mem[2] every TCP socket of the host, Ray's, MLflow's, the server's, fails to
# send) and, under cgroup v1, against no memory limit; AF_NETLINK receive queues (SO_RCVBUF up to 2 x rmem_max each)
# are charged to no cgroup: 3 GB queued in a 128 MB run; the rest are kernel attack surface (module autoloading).
_SOCKET_FAMILY = 1  # AF_UNIX
# An int argument is compared on its low 32 bits only: the kernel truncates the register (setrlimit's resource), so
# setrlimit(RLIMIT_CORE | 1 << 32, ...) would otherwise pass an EQ rule and still set RLIMIT_CORE.
_INT = 0xFFFF_FFFF
# A core dump piped to the host's core_pattern helper (apport, systemd-coredump) runs that helper as root outside the
# sandbox and its cgroup, whatever RLIMIT_CORE = 0; the kernel aborts such a dump only at RLIMIT_CORE = 1
# (fs/coredump.c). It is set to 1 before bwrap (prlimit) and the command may not change it.
_RLIMIT_CORE = 4  # linux/resource.h
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (linux/sched.h)
_CLONE_NEW = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
# Huge pages come from the host's one pool (vm.nr_hugepages), charged to no memory cgroup: a 64 MB run held 200 MB of
# it, and with more processes all of it, which the host reserved for others. (call, flags argument, its HUGETLB bit)
_HUGETLB = (("mmap", 3, 0x40000), ("memfd_create", 1, 0x4), ("shmget", 2, 0x800))
# Advice that drops pages of a file from the host's page cache, whoever reads it: the release's test inputs and the
# Python installation are shared by every run on the host (another run's `import torch` took 1.4 times as long).
# Ignored (0, as if done): it is only advice, and code that checks the result still runs. (call, advice argument,
# POSIX_FADV_DONTNEED; MADV_COLD, MADV_PAGEOUT)
_DROP_CACHE = (("fadvise64", 3, 4), ("madvise", 2, 20), ("madvise", 2, 21))
# Calls that leave pages of a file in a pipe or socket queue (no copy): a run splicing the inputs another run read first
# held their pages, charged to that run's cgroup and then not reclaimable there, and the other run failed with
# "exceeded the memory limit" (64 MB pinned by 1,024 pipes). ENOSYS, as where absent: libraries copy instead
# (Python's shutil and socket.sendfile do). memfd_secret too: its pages are unevictable whatever RLIMIT_MEMLOCK (which
# bounds only each mapping; the file keeps them after munmap), and each one splits the kernel's direct map for good
# (a 200 MB run took the host's 1 GB pages from 24 GB to 7 GB), which slows every process on the host.
_PIN_PAGES = ("splice", "tee", "vmsplice", "sendfile", "memfd_secret")
# Compiled BPF programs share one host-wide pool (net.core.bpf_jit_limit, 504 MB here), charged to no cgroup: a run
# holding ~9,600 seccomp filters of its own (a listener fd keeps each one alive) filled it, and every unprivileged
# seccomp() on the host failed ENOTSUPP meanwhile (other sandboxes' code, systemd services, containers). Classic
# socket filters fill the same pool. EPERM: seccomp(SECCOMP_SET_MODE_FILTER), prctl(PR_SET_SECCOMP), and
# setsockopt(SOL_SOCKET, SO_ATTACH_FILTER, SO_ATTACH_BPF, SO_ATTACH_REUSEPORT_CBPF, SO_ATTACH_REUSEPORT_EBPF).
_SECCOMP_SET_MODE_FILTER, _PR_SET_SECCOMP, _SOL_SOCKET = 1, 22, 1  # linux/seccomp.h, linux/prctl.h, asm/socket.h
_SO_ATTACH = (26, 50, 51, 52)
# A deny-list cannot deny what it cannot name: every system call number below this that libseccomp has no name for
# (newer than the library: open_tree_attr, a mount-API call of Linux 6.15; listmount, statmount...) is ENOSYS, as on
# a kernel without it (libraries fall back). Linux 6.18 stops at about 470 on x86_64.
_SYSCALL_CEILING = 1024
_RWF_NOWAIT = 0x8  # linux/fs.h


# Open files are one count for the whole host (fs.file-max), in every namespace: RLIMIT_NOFILE bounds a process's
# descriptors, and a file mapped and then closed holds none. 40 processes of one run held all 2.4 million, and every
# other run's sandbox failed ENFILE. At least one file per 256 bytes of the host's memory (a struct file is 256 bytes
# of kernel memory, charged to the run's memory cgroup), no run can fill it; systemd sets the maximum, as done here.
FILE_MAX = Path("/proc/sys/fs/file-max")
_LONG_MAX = 2**63 - 1


def host_file_table() -> str:
    """"" when no run can fill the host's table of open files (raising ``fs.file-max`` to its maximum, as root,
    when it could), else why it can be filled."""
    path = FILE_MAX
    try:
        current, memory = int(path.read_text()), os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if current < memory // 256:
            path.write_text(f"{_LONG_MAX}\n")
        return ""
    except (OSError, ValueError) as exc:
        return (f"the host's open-file table ({path}) can be filled by one run, and raising it failed "
                f"({getattr(exc, 'strerror', None) or exc}); as root: sysctl -w fs.file-max={_LONG_MAX}")


@functools.cache
def seccomp_bpf() -> bytes:
    """The sandbox's seccomp filter as BPF (libseccomp via pyseccomp): allow all but the calls above."""
    import errno

    try:
        import pyseccomp as sc
    except (ImportError, OSError) as exc:
        raise RuntimeError(f"the sandbox's seccomp filter needs libseccomp and its Python binding ({exc}); install "
                           "them with `apt-get install libseccomp2` and `pip install pyseccomp`") from exc

    f = sc.SyscallFilter(sc.ALLOW)  # other architectures (e.g. i386 via int 0x80) are killed by default
    for name in _DENIED_SYSCALLS:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError):  # not a system call on this architecture
            pass
    for flag in _CLONE_NEW:  # clone(flags, ...): any namespace flag -> EPERM
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for call in ("socket", "socketpair"):  # (family, ...): anything but exactly AF_UNIX -> EPERM
        f.add_rule(sc.ERRNO(errno.EPERM), call, sc.Arg(0, sc.NE, _SOCKET_FAMILY))
    f.add_rule(sc.ERRNO(errno.EPERM), "setrlimit", sc.Arg(0, sc.MASKED_EQ, _INT, _RLIMIT_CORE))
    # prlimit64(pid, resource, new, old): setting (new != NULL) is denied, reading stays (glibc's getrlimit)
    f.add_rule(sc.ERRNO(errno.EPERM), "prlimit64", sc.Arg(1, sc.MASKED_EQ, _INT, _RLIMIT_CORE), sc.Arg(2, sc.NE, 0))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # its flags are in memory, unfilterable: glibc falls back to clone
    f.add_rule(sc.ERRNO(errno.EPERM), "seccomp", sc.Arg(0, sc.MASKED_EQ, _INT, _SECCOMP_SET_MODE_FILTER))
    f.add_rule(sc.ERRNO(errno.EPERM), "prctl", sc.Arg(0, sc.MASKED_EQ, _INT, _PR_SET_SECCOMP))
    for opt in _SO_ATTACH:
        f.add_rule(sc.ERRNO(errno.EPERM), "setsockopt", sc.Arg(1, sc.MASKED_EQ, _INT, _SOL_SOCKET),
                   sc.Arg(2, sc.MASKED_EQ, _INT, opt))
    for call, arg, bit in _HUGETLB:
        f.add_rule(sc.ERRNO(errno.EPERM), call, sc.Arg(arg, sc.MASKED_EQ, bit, bit))
    for name in _PIN_PAGES:
        f.add_rule(sc.ERRNO(errno.ENOSYS), name)
    # preadv2/pwritev2(fd, iov, iovcnt, pos_l, pos_h, flags): RWF_NOWAIT answers "is this page of a shared file
    # cached?" without reading it: a noiseless channel between runs through the host's page cache (redteam/)
    for call in ("preadv2", "pwritev2"):
        f.add_rule(sc.ERRNO(errno.EOPNOTSUPP), call, sc.Arg(5, sc.MASKED_EQ, _RWF_NOWAIT, _RWF_NOWAIT))
    # mincore(2) and cachestat(2) (Linux 6.5) show the page cache's state of a file the caller owns: without root
    # the run's uid is the evaluator's, which owns the venv, the inputs and the submission (32 of 32 bits passed
    # between two runs by mincore, 16 of 16 by cachestat)
    for name in ("mincore", "cachestat"):
        with contextlib.suppress(OSError, ValueError):  # unknown to this libseccomp: unnamed_syscalls has it
            f.add_rule(sc.ERRNO(errno.ENOSYS), name)
    for call, arg, advice in _DROP_CACHE:
        f.add_rule(sc.ERRNO(0), call, sc.Arg(arg, sc.MASKED_EQ, _INT, advice))
    for nr in unnamed_syscalls():
        f.add_rule(sc.ERRNO(errno.ENOSYS), nr)
    with contextlib.suppress(Exception):  # libseccomp >= 2.5: a binary tree, so the rules above cost log(n) each
        f.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    fd = os.memfd_create("seccomp", 0)
    try:
        with os.fdopen(os.dup(fd), "wb") as tmp:
            f.export_bpf(tmp)
        os.lseek(fd, 0, os.SEEK_SET)
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def unnamed_syscalls() -> list[int]:
    """The system call numbers of this architecture, below :data:`_SYSCALL_CEILING`, that libseccomp cannot name."""
    import pyseccomp as sc

    arch, out = sc.system_arch(), []
    for nr in range(_SYSCALL_CEILING):
        try:
            sc.resolve_syscall(arch, nr)
        except ValueError:
            out.append(nr)
    return out


def gpu_binds(dev_names: Sequence[str], visible: str | None,
              pci_dirs: Mapping[int, str] | None = None, sys_module: str | None = None) -> list[tuple[str, ...]]:
    """(bwrap option, path[, destination]) for one GPU task: its own /dev/nvidiaN, the control and UVM nodes,
    and in /sys only the nvidia module and that GPU's PCI folder (``pci_dirs``: device minor -> folder).

    ``dev_names``: the entries of /dev; ``visible``: $CUDA_VISIBLE_DEVICES. The GPU is the index in
    ``visible`` when it is one number, else the only GPU; several GPUs and no index is an error."""
    gpus = sorted(int(n[6:]) for n in dev_names if n.startswith("nvidia") and n[6:].isdigit())
    if not gpus:
        return []
    v = (visible or "").strip()
    if v.isdigit():
        if int(v) not in gpus:
            raise RuntimeError(f"CUDA_VISIBLE_DEVICES={v} but /dev/nvidia{v} does not exist")
        gpu = int(v)
    elif len(gpus) == 1:
        gpu = gpus[0]
    else:
        raise RuntimeError(f"{len(gpus)} GPUs and CUDA_VISIBLE_DEVICES={visible!r}: set it to the one GPU index "
                           "this task may use (Ray does so for GPU tasks)")
    out: list[tuple[str, ...]] = [("--dev-bind", f"/dev/nvidia{gpu}")]
    out += [("--dev-bind", f"/dev/{n}") for n in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools") if n in dev_names]
    if sys_module:
        out.append(("--ro-bind", sys_module))
    if pci_dirs and gpu in pci_dirs:  # NVML looks the GPU up by bus id under /sys/bus/pci/devices
        out.append(("--ro-bind", pci_dirs[gpu]))
        out.append(("--symlink", pci_dirs[gpu], f"/sys/bus/pci/devices/{Path(pci_dirs[gpu]).name}"))
    return out


def gpu_library_path(value: str | None, visible: Sequence[str], hidden: Sequence[str] = ()) -> str:
    """The host's $LD_LIBRARY_PATH (``value``) for a GPU task: its entries inside a folder the sandbox binds
    (``visible``) and not under one it hides (``hidden``), in order. A driver mounted at /usr/local/nvidia is found
    by the host through it, not through /etc/ld.so.cache; without it CUDA inside the sandbox would find no
    libcuda.so.1 and the model would run on the CPU."""
    keep = []
    for entry in (value or "").split(":"):
        path = os.path.normpath(entry) if entry.startswith("/") else ""
        if path and entry not in keep and any(_inside(path, v) for v in visible) \
                and not any(_inside(path, h) for h in hidden):
            keep.append(entry)
    return ":".join(keep)


def _nvidia_pci_dirs() -> dict[int, str]:
    """{device minor: /sys/devices/... PCI folder} from /proc/driver/nvidia/gpus/<bus id>/information."""
    out: dict[int, str] = {}
    for info in glob.glob("/proc/driver/nvidia/gpus/*/information"):
        try:
            text = Path(info).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Device Minor" and value.strip().isdigit():
                bus = Path(info).parent.name.lower()
                path = os.path.realpath(f"/sys/bus/pci/devices/{bus}")
                if path.startswith("/sys/devices/"):
                    out[int(value)] = path
    return out


def _fmt(x: float) -> str:
    return f"{x:g}"


def _memfd(name: str, data: str | bytes) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, data.encode() if isinstance(data, str) else data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# /proc entries a run sees as the host's: static facts. Every other global entry counts something host-wide that a run
# can move and a later run read (fs/dentry-state's negative dentries outlive a run, its cgroup and any timing noise:
# 10 bits from one run to the next, session 34's red team), so it is masked: a file by an empty one, a folder by an
# empty tmpfs; meminfo and stat are the run's own (its memory limit, its CPUs at zero time), sys holds settings only.
_PROC_SHOWN = frozenset({"acpi", "bus", "cmdline", "config.gz", "consoles", "cpuinfo", "crypto", "devices", "dma",
                         "driver", "execdomains", "filesystems", "iomem", "ioports", "kallsyms", "keys", "misc", "mtrr",
                         "partitions", "sysvipc", "tty", "version"})  # sysvipc, keys: the run's own namespace, keys
_SYSCTLS_SHOWN = ("kernel/cap_last_cap", "kernel/ngroups_max", "kernel/osrelease", "kernel/pid_max",
                  "vm/max_map_count", "vm/overcommit_memory")


def _proc_masks(m: _Mounts, fds: dict[str, int], mem_bytes: int) -> None:
    """Mask the host-wide counters of the run's /proc (after ``--proc``): see :data:`_PROC_SHOWN`."""
    for name in sorted(os.listdir("/proc")):
        path = f"/proc/{name}"
        if name.isdigit() or name in _PROC_SHOWN or os.path.islink(path) or not os.stat(path).st_mode & stat.S_IROTH:
            continue  # the run's own processes, static facts, links into self/, what only root reads
        if name == "sys":
            m.args += ["--perms", "0555", "--tmpfs", path]
            for key in _SYSCTLS_SHOWN:  # the host's own files, bound: settings, not counters
                if os.path.exists(f"{path}/{key}"):
                    m.args += ["--perms", "0555", "--dir", str(Path(f"{path}/{key}").parent),
                               "--ro-bind", f"{path}/{key}", f"{path}/{key}"]
            m.args += ["--remount-ro", path]
        elif name in ("meminfo", "stat"):
            kb, cpus = mem_bytes >> 10, os.cpu_count() or 1
            text = (f"MemTotal: {kb} kB\nMemFree: {kb} kB\nMemAvailable: {kb} kB\n" + "".join(
                f"{k}: 0 kB\n" for k in ("Buffers", "Cached", "SwapCached", "SwapTotal", "SwapFree", "Shmem", "Slab",
                                         "SReclaimable", "SUnreclaim")) if name == "meminfo" else
                    "".join(f"cpu{c} 0 0 0 0 0 0 0 0 0 0\n" for c in ["", *range(cpus)])
                    + "intr 0\nctxt 0\nbtime 0\nprocesses 0\nprocs_running 1\nprocs_blocked 0\nsoftirq 0\n")
            fds[name] = _memfd(name, text)
            m.args += ["--perms", "0444", "--ro-bind-data", str(fds[name]), path]
        elif os.path.isdir(path):
            m.args += ["--perms", "0555", "--size", "4096", "--tmpfs", path, "--remount-ro", path]
        else:  # an empty file (a device node would be refused on /proc, which is nodev)
            fds[name] = _memfd(name, b"")
            m.args += ["--perms", "0444", "--ro-bind-data", str(fds[name]), path]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount_scratch(target: Path, limits: Limits, uid: int, gid: int) -> None:
    opts = f"size={limits.scratch_mb}m,nr_inodes={limits.scratch_files},mode=0700,uid={uid},gid={gid}"
    source = f"{_MOUNT_SOURCE}-{os.getpid()}".encode()  # the pid lets a later run unmount it if we die
    if _libc().mount(source, os.fsencode(target), b"tmpfs", 0x2 | 0x4,  # MS_NOSUID | MS_NODEV
                     opts.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount a tmpfs on {target}: {os.strerror(err)}")


def _sweep_scratch_mounts() -> None:
    """Unmount /scratch tmpfs left by evaluators that were killed before they could clean up."""
    for m in cgroups.mounts():
        if m.fstype != "tmpfs" or not m.source.startswith(_MOUNT_SOURCE + "-"):
            continue
        pid = m.source.rsplit("-", 1)[1]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        target = Path(m.point)
        try:
            _umount(target)
            target.rmdir()
            if target.parent.name.startswith(f"{_MOUNT_SOURCE}-"):  # the executor's mkdtemp, empty once swept
                target.parent.rmdir()
        except OSError:
            pass


def _umount(target: Path) -> None:
    if _libc().umount2(os.fsencode(target), 2) != 0:  # MNT_DETACH
        err = ctypes.get_errno()
        raise OSError(err, f"cannot unmount {target}: {os.strerror(err)}")


def _copy_outputs(box: Path, names: Sequence[str] | Mapping[str, int], dest: Path, max_bytes: int) -> None:
    """Copy the regular files ``names`` of the sandbox's scratch to ``dest`` (symlinks, FIFOs and folders
    are skipped; a missing file is the caller's to report). A mapping gives the bytes of data copied of each
    name at most: the rest of a larger file is left a hole, so its reader sees its size and refuses it, and N
    sandboxes at once cost the evaluator's disk what their outputs can be, not N times ``max_bytes``."""
    caps = names if isinstance(names, Mapping) else dict.fromkeys(names, max_bytes)
    for name, cap in caps.items():
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"outputs must be plain file names, got {name!r}")
        (dest / name).unlink(missing_ok=True)
        try:
            fd = os.open(box / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as src:
            st = os.fstat(src.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
                continue
            tmp = dest / f".{name}.part"
            with open(tmp, "wb") as out:
                _copy_sparse(src.fileno(), out.fileno(), st.st_size, min(cap, max_bytes))
            os.replace(tmp, dest / name)


def _copy_sparse(src: int, dst: int, size: int, data_max: int | None = None, chunk: int = 1 << 20) -> None:
    """Copy the first ``size`` bytes of ``src`` to ``dst`` (its data below ``data_max`` only), holes as holes: a
    sparse file costs the sandbox's tmpfs nothing, and written out in full it would fill the evaluator's disk
    (SEEK_DATA: Linux >= 3.8; a file system without it reports the whole file as data)."""
    pos, size_of_data = 0, size if data_max is None else min(size, data_max)
    while pos < size_of_data:
        try:
            pos = os.lseek(src, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            raise
        end = min(os.lseek(src, pos, os.SEEK_HOLE), size_of_data)
        while pos < end:
            data = os.pread(src, min(chunk, end - pos), pos)
            if not data:  # cannot happen to a dead sandbox's file; never loop on it
                return
            os.pwrite(dst, data, pos)
            pos += len(data)
    os.ftruncate(dst, size)  # a trailing hole


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


_TOP_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime",
                 "/sys/devices/system/cpu")


def _system_mounts(m: _Mounts) -> None:
    m.add("--ro-bind", "/usr", "/usr")
    for top in _TOP_DIRS:
        if os.path.islink(top):
            m.args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            m.add("--ro-bind", top, top)
    for path in _SYSTEM_FILES:
        m.add_existing("--ro-bind", path)


def _system_sources() -> list[str]:
    """The host folders and files :func:`_system_mounts` binds, resolved."""
    tops = [t for t in _TOP_DIRS if os.path.isdir(t) and not os.path.islink(t)]
    return [os.path.realpath(p) for p in ["/usr", *tops, *(p for p in _SYSTEM_FILES if os.path.exists(p))]]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _python_dirs(masks: Sequence[str] = ()) -> list[str]:
    # The interpreter installation and the venv; skip what /usr already covers (unless a mask hides it: a venv in
    # /usr/src/app) or what nests in another.
    prefixes = (sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix)
    cands = {os.path.realpath(p) for p in prefixes}
    cands.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    dirs: list[str] = []
    for p in sorted(cands):
        if p == "/" or (_inside(p, "/usr") and not any(_inside(p, m) for m in masks)):
            continue
        if not any(p.startswith(d.rstrip("/") + "/") for d in dirs):
            dirs.append(p)
    return dirs


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()[:300]
    return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _classify(status: dict | None, rc: int | None, timed_out: bool, stderr: str, limits: Limits, *,
              started: bool = True, oom: bool = False, pids_hit: bool = False, host_oom: bool = False,
              ) -> tuple[str, bool]:
    """(one-line reason, whether the host is to blame) for how the sandbox ended; reason "" when it succeeded."""
    if timed_out:
        return f"exceeded the wall-time limit of {_fmt(limits.wall_seconds)} s", False
    if oom:
        return f"exceeded the memory limit of {limits.memory_mb} MB", False
    if host_oom:  # within its own limit: the machine ran short (other sandboxes at once), not the submission
        return (f"killed by the host's out-of-memory killer while within its memory limit of {limits.memory_mb} MB "
                "(the machine ran out of memory, not the submission)"), True
    last = _last_line(stderr)
    if status is None:  # the shim never reported
        if not started:  # bwrap (or joining the cgroup) failed before any submitted code ran
            return f"sandbox setup failed (bubblewrap exited with status {rc})" + (f": {last}" if last else ""), True
        if rc is not None and rc < 0:  # bwrap itself was signalled: from outside, where the sandbox cannot reach
            return (f"sandbox killed from outside by signal {_signal_name(-rc)} (by the host, not the submission)"
                    + (f": {last}" if last else "")), True
        return f"sandbox killed (status {rc})" + (f": {last}" if last else ""), False
    if status.get("setup"):  # the shim could not set up the command: the evaluator's uid, folder or limits
        return f"sandbox setup failed: {status['setup']}", True
    code, left = status["returncode"], status["survivors"]
    extra = f" (and left {left} background process{'es' if left != 1 else ''} running)" if left else ""
    # rusage can read a little under the kernel's RLIMIT_CPU clock; SIGXCPU comes only from that limit
    if code == -signal.SIGXCPU or (code == -signal.SIGKILL and status["cpu"] >= 0.8 * limits.cpu_seconds - 0.05):
        return f"killed: exceeded the CPU-time limit of {_fmt(limits.cpu_seconds)} s{extra}", False
    if code != 0 and any(p in stderr for p in _MEMORY_PATTERNS) and "CUDA out of memory" not in stderr:
        return f"exceeded the memory limit of {limits.memory_mb} MB{extra}", False
    if code != 0 and (pids_hit or any(p in stderr for p in _NPROC_PATTERNS)):
        return f"exceeded the process limit of {limits.max_processes} (processes and threads): {last}{extra}", False
    if code == -signal.SIGXFSZ or (code != 0 and any(p in stderr for p in _DISK_PATTERNS)):
        return (f"ran out of disk space: /scratch holds {limits.scratch_mb} MB and {limits.scratch_files} files, "
                f"/tmp and /dev/shm count against the memory limit{extra}"), False
    if code < 0:
        return f"killed by signal {_signal_name(-code)}" + (f": {last}" if last else "") + extra, False
    if code != 0:
        return f"exited with status {code}" + (f": {last}" if last else "") + extra, False
    if left:
        return f"left {left} background process{'es' if left != 1 else ''} running after it returned", False
    return "", False


# Runs bwrap inside the run's cgroup: the shell joins every controller's cgroup.procs, then execs bwrap, so
# everything the sandbox starts is charged there from its first instruction.
_JOIN_CGROUP = ('for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f" || '
                '{ echo "skybench: cannot join cgroup $f" >&2; exit 125; }; shift; done; shift; exec "$@"')


@functools.cache
def _prlimit() -> str:
    """util-linux's prlimit, which sets RLIMIT_CORE to 1 byte for bwrap and all it starts (see _RLIMIT_CORE)."""
    found = shutil.which("prlimit")
    if found is None:
        raise RuntimeError("the sandbox needs util-linux's prlimit (apt-get install util-linux)")
    return found


def run_sandboxed(argv: Sequence[str], *, scratch: Path, ro_binds: Sequence[Path | tuple[Path, str]] = (),
                  limits: Limits = Limits(), env: Mapping[str, str] | None = None, gpu: bool = False,
                  cwd: str = "/scratch", outputs: Sequence[str] | Mapping[str, int] = (),
                  private: Sequence[Path] = ()) -> SandboxResult:
    """Run ``argv`` in a bubblewrap sandbox with a fresh, size-limited, writable /scratch.

    ``outputs``: plain file names in /scratch copied to the host folder ``scratch`` after the run (regular
    files only; a mapping also gives each one's most bytes, see ``_copy_outputs``); everything else the command
    wrote is discarded. ``ro_binds``: a Path is bound read-only at
    the same path, a (src, dest) tuple binds src at dest. When running as root the command runs as an
    unprivileged uid, so bound paths must be world-readable. Memory, processes and CPU are enforced by a
    cgroup where the host has one (see skybench.harness.cgroups), else by rlimits only (refused with
    ``limits.require_cgroups``). ``private``: folders the command must never see (the release, the project):
    hidden under an empty tmpfs when a system folder (/usr) holds one, refused (an infrastructure failure) when the
    Python installation, the package or a bound folder does.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RuntimeError("bubblewrap (bwrap) is required to run untrusted submissions; install it with "
                           "`apt-get install bubblewrap` (running them unsandboxed is not acceptable)")
    if not argv:
        raise ValueError("argv must not be empty")
    help_text, version = _bwrap_help(bwrap)
    check_bwrap_features(help_text, version, bwrap)
    scratch = Path(scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    binds: list[tuple[str, str]] = []
    for b in ro_binds:
        src, dest = (b, b) if isinstance(b, (str, os.PathLike)) else b
        real = os.path.realpath(src)
        if not os.path.exists(real):
            raise FileNotFoundError(f"ro_bind source does not exist: {real}")
        binds.append((real, os.fspath(dest)))
    gpu_args = gpu_binds(os.listdir("/dev"), os.environ.get("CUDA_VISIBLE_DEVICES"), _nvidia_pci_dirs(),
                         "/sys/module/nvidia" if os.path.isdir("/sys/module/nvidia") else None) if gpu else []

    start = time.monotonic()

    def host_failure(reason: str) -> SandboxResult:
        return SandboxResult(ok=False, returncode=None, reason=reason, stdout="", stderr="",
                             wall_seconds=time.monotonic() - start, infrastructure=True)

    # A private folder under a system folder (a project in /usr/src/app, the python image's WORKDIR) is hidden
    # under an empty tmpfs; what the run needs of it (its inputs, the package) is bound again on top. One inside
    # the Python installation, the package or a bound folder would show through: refused.
    masks, system = [], _system_sources()
    later = [*_python_dirs(), str(Path(__file__).resolve().parents[1]), *(src for src, _ in binds)]
    for path in private:
        real = os.path.realpath(path)
        if cover := next((f for f in later if _inside(real, os.path.realpath(f))), None):
            return host_failure(f"refused: {path} is inside {cover}, which the sandbox binds read-only; keep "
                                "releases and the project outside the Python installation and bound folders")
        if any(_inside(real, f) for f in system):
            masks.append(real)
    privileged = os.geteuid() == 0
    if limits.require_cgroups and not privileged:
        return host_failure("refused: this profile needs a size-limited /scratch, which only root can mount")
    try:
        cg = cgroups.create(memory_mb=limits.memory_mb, max_processes=limits.max_processes + _SANDBOX_TASKS,
                            cpus=limits.cpus)
    except (cgroups.CgroupError, OSError) as exc:
        return host_failure(f"sandbox setup failed: {exc}")
    if cg is None and limits.require_cgroups:
        return host_failure("refused: this profile requires cgroups to contain memory, processes and CPU, and "
                            f"none can be used here ({cgroups.unavailable_reason()})")
    if (table := host_file_table()) and limits.require_cgroups:  # as a host without cgroups: refused, else told
        if cg is not None:
            cg.remove()
        return host_failure(f"refused: {table}")
    if table:
        cgroups.warn_once(table)
    uid = gid = 3_000_000 + secrets.randbelow(1_000_000) if privileged else 65534
    try:
        box = Path(tempfile.mkdtemp(prefix=".sandbox-", dir=scratch))  # the sandbox's /scratch
    except OSError as exc:  # e.g. ENOSPC on the host
        if cg is not None:
            cg.remove()
        return host_failure(f"sandbox setup failed: cannot create a folder in {scratch}: {exc.strerror}")
    mounted = False
    try:
        if privileged:
            _sweep_scratch_mounts()
            try:
                _mount_scratch(box, limits, uid, gid)
                mounted = True
            except OSError as exc:
                return host_failure(f"sandbox setup failed: {exc.strerror}")
        return _run(argv, bwrap, box, scratch, binds, masks, gpu_args, limits, env, gpu, cwd, outputs, cg, uid, gid,
                    start)
    finally:
        try:
            if mounted:
                _umount(box)
                box.rmdir()
            else:
                remove_tree(box)
        finally:
            if cg is not None:
                cg.remove()
            _collect_unix_garbage()


def _collect_unix_garbage() -> None:
    """Close a unix socket pair, which has the kernel collect the AF_UNIX sockets left in flight (SCM_RIGHTS cycles)
    now that the run's processes are gone. It collects only on a close while no collection is under way, and the run's
    own last closes may have come during one: what they left (up to the run's memory limit of queued data) was then
    held, charged to no live cgroup, until some other process on the host closed a unix socket."""
    try:
        a, b = socket.socketpair()
    except OSError:  # out of descriptors: nothing to nudge with, the next close anywhere does it
        return
    a.close()
    b.close()


def _run(argv: Sequence[str], bwrap: str, box: Path, scratch: Path, binds: list[tuple[str, str]], masks: list[str],
         gpu_args: list[tuple[str, ...]], limits: Limits, env: Mapping[str, str] | None, gpu: bool, cwd: str,
         outputs: Sequence[str] | Mapping[str, int], cg: cgroups.Cgroup | None, uid: int, gid: int, start: float,
         ) -> SandboxResult:
    privileged = os.geteuid() == 0
    pkg_dir = Path(__file__).resolve().parents[1]  # skybench/
    mem = limits.memory_mb * 1024 * 1024
    nproc = limits.max_processes + (0 if privileged else 1)  # unprivileged: the shim shares the uid
    # RLIMIT_AS is a second line of defence that CUDA cannot live with (it maps huge virtual ranges).
    rlimits = [["RLIMIT_DATA" if gpu else "RLIMIT_AS", mem], ["RLIMIT_CPU", int(limits.cpu_seconds)],
               ["RLIMIT_NPROC", nproc], ["RLIMIT_NOFILE", limits.open_files],  # RLIMIT_CORE: prlimit below
               # queued signals (timer_create, sigqueue) and POSIX message queues are counted per uid up the user
               # namespaces: without root, the evaluator's own (and every other sandbox's) budget
               ["RLIMIT_SIGPENDING", 1024], ["RLIMIT_MSGQUEUE", 0],
               # whatever the host grants (limits.conf rtprio, docker --ulimit rtprio): no real-time or raised
               # priority, which a CPU quota does not hold (SCHED_FIFO escapes cpu.max / cfs_quota_us)
               ["RLIMIT_RTPRIO", 0], ["RLIMIT_NICE", 0],
               # mlock pins pages of shared files too, charged to whichever run read them first, which then cannot
               # reclaim them (see _PIN_PAGES); 64 KiB, the kernel's default before 5.16, not the host's (often
               # unlimited on GPU and InfiniBand nodes). CUDA pins host memory through its driver, not mlock.
               ["RLIMIT_MEMLOCK", 64 << 10]]
    if not privileged:  # /scratch is a host folder, not a size-limited tmpfs: bound each file at least
        rlimits.append(["RLIMIT_FSIZE", limits.scratch_mb * 1024 * 1024])
    cfg = {"uid": uid if privileged else None, "gid": gid, "rlimits": rlimits, "cwd": cwd}

    child_env = {k: os.environ[k] for k in THREAD_VARS if k in os.environ}
    child_env.update(PATH=f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin", HOME="/scratch", LANG="C.UTF-8",
                     LC_ALL="C.UTF-8", PYTHONPATH=str(pkg_dir.parent), PYTHONDONTWRITEBYTECODE="1")
    if gpu and (lib := gpu_library_path(os.environ.get("LD_LIBRARY_PATH"),
                                        ["/usr", *_TOP_DIRS, *_python_dirs(masks)], masks)):
        child_env["LD_LIBRARY_PATH"] = lib
    for k, v in (env or {}).items():
        child_env[k] = f"{v}:{child_env[k]}" if k == "PYTHONPATH" and v else str(v)

    passwd = f"root:x:0:0::/:/usr/sbin/nologin\nsandbox:x:{uid}:{gid}::/scratch:/bin/sh\n"
    fds = {"passwd": _memfd("passwd", passwd), "group": _memfd("group", f"root:x:0:\nsandbox:x:{gid}:\n"),
           "seccomp": _memfd("seccomp", seccomp_bpf())}
    info_r, fds["info"] = os.pipe()
    status_r, fds["status"] = os.pipe()
    size = ["--size", str(mem)]
    m = _Mounts()
    m.args += [*size, "--perms", "1777", "--tmpfs", "/tmp"]
    m._dirs.add("/tmp")
    _system_mounts(m)
    for path in masks:  # before every bind that may lie under it
        m.args += ["--perms", "0555", "--size", "65536", "--tmpfs", path]
        m._dirs.add(path)
    m.add("--ro-bind-data", str(fds["passwd"]), "/etc/passwd", perms="0644")
    m.add("--ro-bind-data", str(fds["group"]), "/etc/group", perms="0644")
    for d in _python_dirs(masks):
        m.add("--ro-bind", d, d)
    m.add("--ro-bind", str(pkg_dir), str(pkg_dir))
    for src, dest in binds:
        m.add("--ro-bind", src, dest)
    m.add("--bind", str(box), "/scratch")
    # /proc read-only: the run cannot lower the oom_score_adj it starts with (cmd below), nor write any of it. Not
    # for a GPU run: CUDA cannot initialise under a read-only /proc (error 304, on an H200); there a privileged
    # evaluator's write of 1000 (CAP_SYS_RESOURCE) is also the run's floor (the kernel's oom_score_adj_min)
    m.args += ["--proc", "/proc"]
    if not gpu:  # CUDA reads its driver's entries and more under /proc: a GPU run sees them (docs/SECURITY.md)
        _proc_masks(m, fds, mem)
    m.args += [*([] if gpu else ["--remount-ro", "/proc"]), "--dev", "/dev", *size,
               "--perms", "1777", "--tmpfs", "/dev/shm",
               # no pseudo-terminals: every devpts instance but the host's draws on one host-wide count
               # (kernel.pty.max - kernel.pty.reserve), which one run could hold all of
               "--dev-bind", "/dev/null", "/dev/pts/ptmx"]
    for opt, src, *to in gpu_args:
        m.add(opt, src, to[0] if to else src)
    m.args += ["--remount-ro", "/", "--chdir", "/"]  # the shim enters ``cwd`` as the run's uid
    ns = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
          "--hostname", "sandbox", "--die-with-parent", "--new-session", "--as-pid-1",
          "--seccomp", str(fds["seccomp"])]
    if not privileged:  # as root bwrap cannot --disable-userns; the seccomp filter denies new namespaces then
        ns += ["--unshare-user", "--uid", str(uid), "--gid", str(gid), "--disable-userns"]
    else:  # as root bwrap keeps every capability for the shim (pid 1): it needs only to drop to the run's uid
        ns += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    # the whole sandbox is the OOM killer's first choice (oom_score_adj 1000, inherited; raising it needs no
    # privilege), before the evaluator, MLflow or another run; among its own processes, the largest goes first
    cmd = ["/bin/sh", "-c", '{ echo 1000 >/proc/self/oom_score_adj; } 2>/dev/null; exec "$@"', "sh",
           _prlimit(), "--core=1:1", "--", bwrap, *ns, *m.args, "--info-fd", str(fds["info"]), "--",
           sys.executable, "-I", "-S", str(_SHIM),
           str(fds["status"]), json.dumps(cfg), *argv]
    if cg is not None:
        cmd = ["/bin/sh", "-c", _JOIN_CGROUP, "sh", *map(str, cg.procs_files), "--", *cmd]

    oom = pids_hit = host_oom = False
    host_error = ""
    try:
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
        if cg is not None:
            cg.kill()
            oom_kind, pids_hit = cg.oom_kind(), cg.pids_limit_hit()
            oom, host_oom = oom_kind == "own", oom_kind == "host"
    wall = time.monotonic() - start
    try:
        _copy_outputs(box, outputs, scratch, limits.scratch_mb * 1024 * 1024)
    except OSError as exc:  # e.g. ENOSPC on the host
        host_error = f"could not copy the outputs to {scratch}: {exc.strerror or exc}"

    stdout = bytes(bufs["out"][-TAIL_BYTES:]).decode("utf-8", "replace")
    stderr = bytes(bufs["err"][-TAIL_BYTES:]).decode("utf-8", "replace")
    raw = bytes(bufs["status"])
    started = raw.startswith(b"S")
    try:
        status = json.loads(raw[1:]) if started and len(raw) > 1 and not timed_out else None
    except ValueError:
        status = None
    reason, infrastructure = _classify(status, proc.returncode, timed_out, stderr, limits, started=started,
                                       oom=oom, pids_hit=pids_hit, host_oom=host_oom)
    if host_error and not reason:
        reason, infrastructure = host_error, True
    returncode = None if timed_out else (status["returncode"] if status else proc.returncode)
    return SandboxResult(ok=not reason, returncode=returncode, reason=reason, stdout=stdout, stderr=stderr,
                         wall_seconds=wall, infrastructure=infrastructure)


def _collect(proc: subprocess.Popen, info_r: int, status_r: int, wall_seconds: float,
             ) -> tuple[dict[str, bytearray], bool]:
    """Read the sandbox's pipes (keeping bounded tails) until it ends or the wall-time limit kills it."""
    assert proc.stdout is not None and proc.stderr is not None
    bufs = {"out": bytearray(), "err": bytearray(), "info": bytearray(), "status": bytearray()}
    seen: dict[str, int] = {}
    # poll, not epoll: epoll watches are counted per uid (fs.epoll.max_user_watches), and without root a sandbox
    # is this process's uid and can use them all up, failing every sandbox started meanwhile
    sel = selectors.PollSelector()
    deadline = time.monotonic() + wall_seconds
    timed_out = False
    try:  # from here on, whatever fails kills the sandbox (never left running unwatched)
        for fd, name in ((proc.stdout.fileno(), "out"), (proc.stderr.fileno(), "err"), (info_r, "info"),
                         (status_r, "status")):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, name)
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
                seen[key.data] = seen.get(key.data, 0) + len(chunk)
                if len(buf) > 2 * TAIL_BYTES:
                    del buf[: len(buf) - TAIL_BYTES]
                if seen[key.data] > FLOOD_BYTES:
                    # a flood (only its tail is kept): read it slowly, so the sandbox waits on a full pipe instead
                    # of this process spending a CPU its quota does not count, taken from the runs beside it
                    time.sleep(0.01)
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

