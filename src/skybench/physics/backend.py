"""Choose where the simulator and inference run (numpy on the CPU, torch on a GPU when one is present) and which
random numbers a simulator draws (:data:`GENERATORS`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device


@dataclass(frozen=True)
class Backend:
    name: str  # "numpy" or "torch"
    device: str  # "cpu" or "cuda"
    dtype: Any
    generator: str = "pcg64"  # one of GENERATORS

    @property
    def xp(self) -> Any:
        if self.name == "numpy":
            import array_api_compat.numpy as np_xp

            return np_xp
        import array_api_compat.torch as torch_xp

        return torch_xp

    def asarray(self, a: Any) -> Any:
        """Move a numpy array (or an array already on this backend) to this backend with its working dtype."""
        if self.name == "numpy":
            return np.asarray(a, dtype=self.dtype)
        import torch

        if isinstance(a, torch.Tensor):
            return a.to(device=self.device, dtype=self.dtype)
        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def index(self, idx: np.ndarray) -> Any:
        """An integer index array usable on this backend's arrays."""
        if self.name == "numpy":
            return idx
        import torch

        return torch.as_tensor(idx, dtype=torch.long, device=self.device)

    def to_numpy(self, a: Any, dtype: Any = None) -> np.ndarray:
        """A numpy array of ``a`` (cast to ``dtype`` first, on the device: half the bytes to copy for float64 to
        float32, rounded alike on every backend). From a GPU it lands in page-locked memory from torch's caching host
        allocator, reused once the array is freed: a fresh pageable array took ~0.6 GB/s on a VM (page faults)."""
        if self.name == "numpy":
            return np.asarray(a) if dtype is None else np.asarray(a).astype(dtype, copy=False)
        import torch

        a = a.detach()
        if dtype is not None:
            a = a.to(getattr(torch, np.dtype(dtype).name))
        if a.device.type != "cuda":
            return a.numpy()
        host = torch.empty(a.shape, dtype=a.dtype, pin_memory=True)
        host.copy_(a)
        return host.numpy()


@functools.cache
def cuda_available() -> bool:
    """torch sees a CUDA device. Without an NVIDIA device node, False without importing torch (seconds, in every
    ``skybench simulate`` on a CPU machine); without torch or with a broken CUDA install, False: run on the CPU."""
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


# pcg64: numpy's PCG64 per object, seeded by the object's seed, drawn on the host (every simulator; the CPU path).
# philox: Philox4x32-10 keyed by the object's seed (physics/philox.py), computed where the images are, the same
# bits on every backend (the lens simulator; the default on a GPU).
GENERATORS = ("pcg64", "philox")


def get_backend(name: str = "auto", generator: str = "pcg64") -> Backend:
    """``auto`` picks torch on CUDA when a GPU is visible and numpy otherwise."""
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}: use one of {', '.join(GENERATORS)}")
    if name == "auto":
        name = "torch-cuda" if cuda_available() else "numpy"
    if name == "numpy":
        return Backend("numpy", "cpu", np.float32, generator)
    if name in ("torch", "torch-cpu", "torch-cuda"):
        import torch

        device = "cuda" if name == "torch-cuda" or (name == "torch" and torch.cuda.is_available()) else "cpu"
        return Backend("torch", device, torch.float32, generator)
    raise ValueError(f"unknown backend {name!r}: use auto, numpy, torch-cpu or torch-cuda")


def param(value: Any, like: Any) -> Any:
    """A per-object numpy parameter (shape (B, 1, 1) or scalar) as an array beside ``like``."""
    xp = array_namespace(like)
    return xp.asarray(np.asarray(value), dtype=like.dtype, device=device(like))
