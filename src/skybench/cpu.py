"""One set of CPU code paths on every x86-64 machine, so that a seed gives the same release, and a baseline the same
weights, on any of them.

numpy's ufuncs, OpenBLAS's GEMM kernels, PyTorch's vectorised ATen kernels, oneDNN and MKL each pick their code by
the CPU they find (AVX-512 where present) or the host's settings, and those paths round differently. Measured
(2026-12-04): a VM whose environment set ``OPENBLAS_CORETYPE=Haswell`` made other bytes of every demo release than
the committed lock; with OpenBLAS's own choice there (SkylakeX, AVX-512) it made the lock's bytes exactly; numpy
held to AVX2 made yet others. So each library is held to the x86-64-v3 level (AVX2 and FMA: Intel since Haswell,
AMD since Excavator) through the variables it reads when it is first imported (the settings the reproseed project
documents), replacing the host's; ``SKYBENCH_CPU=native`` sets none.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping

# numpy >= 2.4 names its AVX-512 targets X86_V4, AVX512_ICL, AVX512_SPR; before, AVX512F, AVX512_SKX, ...; a name
# a numpy does not know is an ImportWarning (hidden by default); disabling a baseline target would be an error
NUMPY_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512_SKX"
X86_64_V3 = {
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS built with DYNAMIC_ARCH (numpy's wheels)
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's element-wise kernels (SLEEF log, atan: physics.kernels)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # PyTorch's and TensorFlow's convolutions
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility branch
}


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read: not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:  # the first CPU's: every import reads it, on hosts of hundreds of cores
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def pin_cpu_kernels(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the x86-64-v3 variables in ``environ`` (default: this process's, inherited by its children); return those
    changed. Nothing off x86-64, with ``SKYBENCH_CPU=native``, or on a CPU without AVX2 and FMA (the kernels chosen
    would not run there)."""
    env = os.environ if environ is None else environ
    if env.get("SKYBENCH_CPU", "") == "native" or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    flags = cpu_flags()
    if not {"avx2", "fma"} <= flags:
        return {}
    want = dict(X86_64_V3)
    if "avx512f" in flags and "NPY_ENABLE_CPU_FEATURES" not in env:  # numpy refuses both at once
        want["NPY_DISABLE_CPU_FEATURES"] = NUMPY_AVX512
    done = {k: v for k, v in want.items() if env.get(k) != v}
    env.update(done)
    return done
