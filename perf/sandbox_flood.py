"""CPU the evaluating process spends on a sandbox that floods stdout and stderr, against reading it at full speed.

    python perf/sandbox_flood.py --seconds 5 --rounds 3

The sandboxed command writes 64 KiB chunks to both pipes for ``--seconds``. The evaluator keeps only a bounded tail
and, past ``sandbox.FLOOD_BYTES`` on one pipe, reads one chunk per 10 ms, so the sandbox waits on a full pipe. The
reference, in the same run, is the same sandbox read as fast as it writes (``FLOOD_BYTES`` set out of reach), as
before session 19: that CPU is spent outside the sandbox's quota, beside other teams' runs (a Ray worker). Figures:
this process's user + system CPU seconds per wall second of the run (``resource.getrusage``), best of ``--rounds``.
Needs bubblewrap."""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

from skybench.harness import sandbox
from skybench.harness.sandbox import Limits, run_sandboxed

FLOOD = """
import os, sys, time
chunk, end = b"x" * (1 << 16), time.time() + float(sys.argv[1])
while time.time() < end:
    os.write(1, chunk)
    os.write(2, chunk)
"""


def cpu_per_wall(seconds: float) -> float:
    """This process's CPU seconds per wall second while one flooding sandbox runs for ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="skybench-flood-") as tmp:
        code = Path(tmp) / "code"
        code.mkdir()
        (code / "flood.py").write_text(FLOOD)
        code.chmod(0o755)
        Path(tmp).chmod(0o777)
        before = resource.getrusage(resource.RUSAGE_SELF)
        res = run_sandboxed([sys.executable, str(code / "flood.py"), str(seconds)], scratch=Path(tmp) / "scratch",
                            ro_binds=[code], limits=Limits(memory_mb=512, cpu_seconds=60, wall_seconds=60))
        after = resource.getrusage(resource.RUSAGE_SELF)
    if not res.ok:
        raise SystemExit(f"the flooding sandbox failed: {res.reason}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu / res.wall_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    throttled = min(cpu_per_wall(args.seconds) for _ in range(args.rounds))
    kept = sandbox.FLOOD_BYTES
    sandbox.FLOOD_BYTES = 1 << 62  # the reference: read as fast as it comes
    try:
        full = min(cpu_per_wall(args.seconds) for _ in range(args.rounds))
    finally:
        sandbox.FLOOD_BYTES = kept
    print(f"evaluator CPU per wall second, flood of {args.seconds:g} s, best of {args.rounds}:")
    print(f"  read at full speed (reference): {full:.3f}")
    print(f"  throttled past {kept >> 20} MiB:        {throttled:.3f}   ratio {throttled / full:.3f}")


if __name__ == "__main__":
    main()
