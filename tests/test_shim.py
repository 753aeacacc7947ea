"""The sandbox's init shim is an ordinary file (harness/shim.py) that runs by itself: standard library only,
isolated from site-packages and from skybench; the sandbox runs that very file (test_sandbox.py,
test_containment.py and test_faults.py check what it does inside bubblewrap)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

from skybench.harness import sandbox, shim


def test_the_shim_imports_the_standard_library_only():
    tree = ast.parse(open(shim.__file__).read())
    imported = {alias.name.partition(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").partition(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module != "__future__"}
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level], "no relative imports"
    assert imported and imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
    assert sandbox._SHIM.samefile(shim.__file__)  # the file the sandbox runs by path


def test_the_shim_runs_isolated_and_reports_the_command():
    """``python -I -S shim.py``, as in the sandbox (no skybench, no site-packages on its path): it reports
    ``S``, applies the rlimits to the command and reports the command's exit status, which it exits with."""
    cfg = {"uid": None, "gid": os.getgid(), "rlimits": [["RLIMIT_NOFILE", 77], ["RLIMIT_CORE", 0]], "cwd": "/"}
    r, w = os.pipe()
    try:
        done = subprocess.run([sys.executable, "-I", "-S", str(sandbox._SHIM), str(w), json.dumps(cfg),
                               "sh", "-c", "ulimit -n; ulimit -c; exit 3"], pass_fds=(w,), capture_output=True,
                              text=True, timeout=60, env={"PATH": os.environ["PATH"]})
        os.close(w)
        w = -1
        with os.fdopen(r, "rb") as f:
            status = f.read()
    finally:
        if w != -1:
            os.close(w)
    assert done.stdout.split() == ["77", "0"], done.stderr
    assert done.returncode == 3 and status.startswith(b"S"), (done.returncode, status, done.stderr)
    report = json.loads(status[1:])
    assert report["returncode"] == 3 and report["cpu"] >= 0 and isinstance(report["survivors"], int)
    assert report["setup"] == "", report
