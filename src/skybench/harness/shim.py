"""The init shim: PID 1 inside the bubblewrap sandbox, run by path by :mod:`skybench.harness.sandbox` as
``python -I -S shim.py STATUS_FD CONFIG_JSON COMMAND...``.

It writes ``S`` to STATUS_FD once the sandbox is set up (a failure before that is the host's), forks the
command (default signal dispositions, no inherited descriptors, first choice of the OOM killer, dropped to the
configured uid and gid when run as root, in the configured folder, with the configured rlimits), reaps every
process as init does until the command exits, counts the processes still alive, and writes
``{"returncode", "cpu", "survivors", "setup"}`` as JSON to STATUS_FD before exiting with the command's status
("setup": why the command's set-up failed, the host's failure, or ""). CONFIG_JSON: ``{"uid": int | null,
"gid": int, "rlimits": [["RLIMIT_...", value], ...], "cwd": str}``.

Standard library only, never skybench: it runs isolated (``-I -S``) before the command, and nothing the
command can reach may change what it does.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from typing import Any, NoReturn


def main() -> NoReturn:
    fd, cfg, argv = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]
    os.write(fd, b"S")  # started: the sandbox was set up (a failure before this is the host's)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:  # not dumpable: a same-uid command can neither ptrace us nor open /proc/1/fd
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
    except Exception:
        pass
    setup_r, setup_w = os.pipe()  # close-on-exec: the child's set-up error, or nothing once it execs
    pid = os.fork()
    if pid == 0:
        _command(argv, cfg, setup_w)
    os.close(setup_w)
    setup = b""
    while chunk := os.read(setup_r, 4096):
        setup += chunk
    os.close(setup_r)
    while True:  # reap everything (we are init) until the command itself exits
        p, status, ru = os.wait4(-1, 0)
        if p == pid:
            break
    left = _survivors()
    if left:
        time.sleep(0.3)  # let processes that are already on their way out finish
        left = _survivors()
    code = os.waitstatus_to_exitcode(status)
    os.write(fd, json.dumps({"returncode": code, "cpu": ru.ru_utime + ru.ru_stime, "survivors": left,
                             "setup": setup.decode("utf-8", "replace")}).encode())
    os._exit(code if code >= 0 else 128 - code)


def _command(argv: list[str], cfg: dict[str, Any], setup_w: int) -> NoReturn:
    """In the forked child: set up the command's process and exec it. A set-up step that fails (the uid, the
    folder, a limit: the evaluator's choices) is written to ``setup_w``, the host's failure; a command that cannot
    run exits 127."""
    try:
        for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
            signal.signal(s, signal.SIG_DFL)
        os.closerange(3, setup_w)
        os.closerange(setup_w + 1, 1 << 16)
        if os.getuid() == 0 and cfg["uid"] is not None:
            os.setgroups([])
            os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        os.chdir(cfg["cwd"])  # as the run's uid: the shim holds no CAP_DAC_OVERRIDE (sandbox.py)
        for name, value in cfg["rlimits"]:
            res = getattr(resource, name)
            hard = resource.getrlimit(res)[1]
            inf = hard == resource.RLIM_INFINITY
            value = value if inf else min(value, hard)
            # CPU: SIGXCPU at the soft limit, SIGKILL one second later if that signal is ignored.
            grace = 1 if name == "RLIMIT_CPU" and (inf or value + 1 <= hard) else 0
            resource.setrlimit(res, (value, value + grace))
    except BaseException as e:
        os.write(setup_w, f"{type(e).__name__}: {e}".encode()[:1000])
        os._exit(127)
    try:
        os.execvp(argv[0], argv)
    except BaseException as e:
        os.write(2, f"sandbox: cannot run {argv[0]!r}: {e}\n".encode())
    os._exit(127)


def _survivors() -> int:
    """Reap what has exited, then count the processes of the sandbox, other than this one, still alive."""
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


if __name__ == "__main__":
    main()
