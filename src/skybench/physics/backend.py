"""Choose where the simulator and inference run: numpy on the CPU, torch on a GPU when one is present."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device


@dataclass(frozen=True)
class Backend:
    name: str  # "numpy" or "torch"
    device: str  # "cpu" or "cuda"
    dtype: Any

    @property
    def xp(self) -> Any:
        if self.name == "numpy":
            import array_api_compat.numpy as np_xp

            return np_xp
        import array_api_compat.torch as torch_xp

        return torch_xp

    def asarray(self, a: np.ndarray) -> Any:
        """Move a numpy array to this backend with its working dtype."""
        if self.name == "numpy":
            return np.asarray(a, dtype=self.dtype)
        import torch

        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def index(self, idx: np.ndarray) -> Any:
        """An integer index array usable on this backend's arrays."""
        if self.name == "numpy":
            return idx
        import torch

        return torch.as_tensor(idx, dtype=torch.long, device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        if self.name == "numpy":
            return np.asarray(a)
        return a.detach().cpu().numpy()


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def get_backend(name: str = "auto") -> Backend:
    """``auto`` picks torch on CUDA when a GPU is visible and numpy otherwise."""
    if name == "auto":
        name = "torch-cuda" if cuda_available() else "numpy"
    if name == "numpy":
        return Backend("numpy", "cpu", np.float32)
    if name in ("torch", "torch-cpu", "torch-cuda"):
        import torch

        device = "cuda" if name == "torch-cuda" or (name == "torch" and torch.cuda.is_available()) else "cpu"
        return Backend("torch", device, torch.float32)
    raise ValueError(f"unknown backend {name!r}: use auto, numpy, torch-cpu or torch-cuda")


def param(value: Any, like: Any) -> Any:
    """A per-object numpy parameter (shape (B, 1, 1) or scalar) as an array beside ``like``."""
    xp = array_namespace(like)
    return xp.asarray(np.asarray(value), dtype=like.dtype, device=device(like))
