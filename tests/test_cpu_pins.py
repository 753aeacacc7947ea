"""skybench holds numpy, OpenBLAS and PyTorch to one x86-64 level (skybench.cpu), whatever the CPU offers."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from skybench.cpu import X86_64_V3, cpu_flags

x86_v3 = pytest.mark.skipif(platform.machine() != "x86_64" or not {"avx2", "fma"} <= cpu_flags(),
                            reason="the pins are for x86-64 CPUs with AVX2 and FMA")

PROBE = """
import json, skybench, numpy, torch, threadpoolctl
from numpy._core._multiarray_umath import __cpu_features__
blas = [i.get("architecture") for i in threadpoolctl.threadpool_info() if i.get("internal_api") == "openblas"]
print(json.dumps({"numpy_avx512": __cpu_features__["AVX512_SKX"], "torch": torch.backends.cpu.get_cpu_capability(),
                  "openblas": blas}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in (*X86_64_V3, "NPY_DISABLE_CPU_FEATURES", "SKYBENCH_CPU")}
    r = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@x86_v3
def test_importing_skybench_holds_numpy_openblas_and_torch_to_avx2():
    got = _probe()
    assert got["numpy_avx512"] is False and got["torch"] == "AVX2", got
    assert got["openblas"] and set(got["openblas"]) == {"Haswell"}, got


@x86_v3
def test_the_hosts_settings_are_replaced_and_native_sets_none():
    # a host may set its own (this project's VMs set OPENBLAS_CORETYPE=Haswell): the release bytes then moved with it
    assert set(_probe(OPENBLAS_CORETYPE="Sandybridge", ATEN_CPU_CAPABILITY="default")["openblas"]) == {"Haswell"}
    assert set(_probe(SKYBENCH_CPU="native", OPENBLAS_CORETYPE="Sandybridge")["openblas"]) == {"Sandybridge"}
    native = _probe(SKYBENCH_CPU="native")
    if "avx512f" in cpu_flags():  # this CPU's own paths: AVX-512 where numpy, torch and OpenBLAS have them
        assert native["numpy_avx512"] is True and native["torch"].startswith("AVX512"), native
        assert native["openblas"] != ["Haswell"], native


@pytest.mark.slow
@pytest.mark.skipif("avx512f" not in cpu_flags(), reason="both OpenBLAS kernels must run here: an AVX-512 CPU")
@x86_v3
def test_the_hosts_openblas_kernel_no_longer_changes_a_release(tmp_path):
    """The same seed on hosts that choose different OpenBLAS kernels: other bytes before, the same ones now."""
    from skybench.release import release_digest

    def made(name: str, **env: str) -> str:
        out = tmp_path / name
        clean = {k: v for k, v in os.environ.items() if k not in (*X86_64_V3, "NPY_DISABLE_CPU_FEATURES")}
        r = subprocess.run([sys.executable, "-m", "skybench", "simulate", "lens-tiles", "--size", "4", "--seed", "5",
                            "--backend", "numpy", "--out", str(out)], env={**clean, **env}, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return release_digest(out)

    assert made("a", OPENBLAS_CORETYPE="SkylakeX") == made("b", OPENBLAS_CORETYPE="Haswell")
    # unpinned, the host's choice shows in the bytes (what the lock rounds of two VMs did)
    assert made("c", OPENBLAS_CORETYPE="SkylakeX", SKYBENCH_CPU="native") != \
        made("d", OPENBLAS_CORETYPE="Haswell", SKYBENCH_CPU="native")
