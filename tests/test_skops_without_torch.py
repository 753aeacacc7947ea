"""skops (the sklearn format) is loaded and saved without importing torch: skops lists the trusted sklearn types by
walking sklearn's packages, which imports sklearn's torch shim, and torch, when torch is installed (seconds of
CPU in every sandboxed sklearn evaluation and every sklearn baseline's training)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TRUSTED = ("import hashlib, skops.io._trusted_types as t; "
           "print(hashlib.sha256(repr(sorted(t.SKLEARN_ESTIMATOR_TYPE_NAMES)).encode()).hexdigest())")


def _run(code: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()


@pytest.mark.slow
def test_the_runner_and_save_skops_do_not_import_torch_and_trust_the_same_types(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # without torch there is nothing to avoid
    plain = _run(TRUSTED)
    runner = _run("import sys; from skybench.harness.runner import import_skops; sio = import_skops(); "
                  f"{TRUSTED}; print('torch' in sys.modules)")
    assert runner == [*plain, "False"]  # the same allow-list, no torch
    saved = _run("import sys; from sklearn.neighbors import KNeighborsClassifier; "
                 "from skybench.training.serialise import save_skops; "
                 "from skybench.harness.runner import load_sklearn; "
                 f"p = save_skops(KNeighborsClassifier(1).fit([[0.0], [1.0]], [0, 1]), {str(tmp_path / 'm.skops')!r}); "
                 "predict, _ = load_sklearn(p, 'cpu'); print(list(predict(__import__('numpy').array([[0.9]])))); "
                 "print('torch' in sys.modules)")
    assert saved == ["[np.float64(1.0)]", "False"]
