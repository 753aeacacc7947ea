"""The GPU check of issue 21 (perf/gpu_check.sh, perf/gpu_eval.py) on whatever machine runs the tests: its CPU half
without a GPU, the same assertions on CUDA with one; and that a GPU task's sandbox never sees another GPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import bwrap_works
from hypothesis import given, settings
from hypothesis import strategies as st

from skybench.harness.sandbox import gpu_binds
from skybench.harness.submission import cuda_available

ROOT = Path(__file__).resolve().parent.parent
needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap missing or cannot create namespaces")
OTHER_NODES = ["null", "zero", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "nvidia-caps",
               "nvidia-cap1", "nvidia-nvswitch0", "nvidia-nvlink"]


@settings(max_examples=300, deadline=None)
@given(minors=st.sets(st.integers(0, 15), min_size=1, max_size=8),
       others=st.sets(st.sampled_from(OTHER_NODES)),
       visible=st.one_of(st.none(), st.just(""), st.integers(0, 17).map(str), st.just("GPU-8f2e"), st.just("0,1"),
                         st.just("-1"), st.integers(0, 17).map(lambda i: f" {i} ")))
def test_gpu_binds_never_expose_another_gpu(minors, others, visible):
    """Whatever /dev holds and $CUDA_VISIBLE_DEVICES says: one numbered /dev/nvidiaN is bound (the index asked for,
    or the only GPU), with that GPU's PCI folder and nothing of the others; or it is refused."""
    dev = [f"nvidia{m}" for m in minors] + sorted(others)
    pci = {m: f"/sys/devices/pci0000:00/0000:00:{m + 4:02x}.0" for m in minors}
    try:
        got = gpu_binds(dev, visible, pci, "/sys/module/nvidia")
    except RuntimeError:
        v = (visible or "").strip()
        assert (v.isdigit() and int(v) not in minors) or (not v.isdigit() and len(minors) > 1)
        return
    paths = [p for _, *ps in got for p in ps]
    numbered = {int(p[len("/dev/nvidia"):]) for p in paths if re.fullmatch(r"/dev/nvidia\d+", p)}
    v = (visible or "").strip()
    want = int(v) if v.isdigit() else next(iter(minors))
    assert numbered == {want}, (dev, visible, got)
    assert all(p.startswith(("/dev/nvidia", "/sys/module/nvidia", pci[want], "/sys/bus/pci/devices/"))
               for p in paths), got
    assert not set(paths) & {pci[m] for m in minors if m != want}
    assert [p for p in paths if p.startswith("/sys/bus/pci/devices/")] == [
        f"/sys/bus/pci/devices/{Path(pci[want]).name}"]
    assert not set(paths) & {"/dev", "/sys", "/sys/bus", "/sys/devices", "/dev/nvidia-caps", "/dev/nvidia-modeset"}


@needs_bwrap
def test_a_sandboxed_task_sees_only_its_own_gpu_node(tmp_path):
    """From inside a real sandbox, as a GPU task when this machine has one: /dev holds its own /dev/nvidiaN only
    (none without a GPU), and /sys/bus/pci/devices at most its GPU's folder."""
    sys.path.insert(0, str(ROOT / "perf"))
    from gpu_eval import sandbox_devices

    tmp_path.chmod(0o755)
    cuda = cuda_available()
    devs, pci = sandbox_devices(tmp_path, cuda)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    want = [f"nvidia{int(visible) if visible.isdigit() else 0}"] if cuda else []
    assert [d for d in devs if d[6:].isdigit()] == want, devs
    assert len(pci) <= (1 if cuda else 0), pci


@pytest.mark.slow
@needs_bwrap
def test_gpu_eval_cpu_half_prints_ratios_and_equal_predictions(tmp_path):
    """perf/gpu_eval.py on a tiny set: every format evaluated through `skybench evaluate` on the harness's device,
    a bare-runtime rate and ratio for each, and the sandboxed predictions equal to the bare CPU ones to 1e-4."""
    md = tmp_path / "figures.md"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = subprocess.run([sys.executable, str(ROOT / "perf/gpu_eval.py"), "--size", "40", "--formats", "onnx", "torch",
                          "--no-ray", "--compare", "40", "--md", str(md), "--tmp", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "FAIL" not in run.stdout
    device = "cuda" if cuda_available() else "cpu"
    table = [line for line in md.read_text().splitlines() if line.startswith(("| onnx ", "| torch "))]
    rows = {r[0]: r for r in ([c.strip() for c in line.strip().strip("|").split("|")] for line in table)}
    assert set(rows) == {"onnx", "torch"}, md.read_text()
    for fmt, (_, dev, rate, bare, ratio, _box, _box_ratio, _rss, _gpu, diff) in rows.items():
        assert dev == device, (fmt, dev)
        assert float(rate) > 0 and float(bare) > 0
        assert float(ratio) == pytest.approx(float(rate) / float(bare), rel=0.05, abs=0.01)
        assert float(diff.split()[0]) <= 1e-4 and diff.split()[1] == "(40)", (fmt, diff)
    assert re.search(r"onnx +bare .* ratio evaluate / bare \d+\.\d\d", run.stdout)


def test_gpu_check_exits_non_zero_with_one_reason_when_a_check_fails(tmp_path):
    """A check that fails (here: every Python command exits 1) makes perf/gpu_check.sh exit 1 with one line."""
    run = subprocess.run(["bash", str(ROOT / "perf/gpu_check.sh"), "--no-install", "--out", str(tmp_path / "out.md")],
                         capture_output=True, text=True, env={**os.environ, "PYTHON": "false"}, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("gpu_check: FAILED: sim: exit 1"), last
    assert "FAILED: eval: exit 1" in (tmp_path / "out.md").read_text()


def test_gpu_library_path_keeps_only_entries_the_sandbox_can_see():
    """The host's $LD_LIBRARY_PATH reaches a GPU task (the driver at /usr/local/nvidia is found only through it),
    less the entries outside the bound folders or under a hidden one, and relative or climbing ones."""
    from skybench.harness.sandbox import gpu_library_path

    visible = ["/usr", "/lib", "/opt/venv"]
    value = ("/usr/local/nvidia/lib64::/usr/local/nvidia/lib64:relative/lib:/usr/../work/secret:/work/project/lib:"
             "/opt/venv/lib/python3.12/site-packages/nvidia/cublas/lib:/usr/src/app/lib:/usrx/lib")
    assert gpu_library_path(value, visible, ["/usr/src/app"]) == (
        "/usr/local/nvidia/lib64:/opt/venv/lib/python3.12/site-packages/nvidia/cublas/lib")
    assert gpu_library_path(None, visible) == gpu_library_path("", visible) == ""
