"""The CosmoGAN baseline's pieces without a release: the conditional generator (maps + (Omega_m, sigma8) per map, in
memory) exports to an ONNX file with two inputs (latents, params) and a dynamic batch axis that returns maps
(N, 1, H, W) depending on the parameters; the BatchNorm recalibration; the exported model inverts the pixel
transform."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = {"widths": [16, 8, 8, 4], "disc_widths": [4, 8, 8, 16], "lr": 2e-4, "beta1": 0.5, "batch_size": 8,
        "epochs": 1, "seed": 0, "real_label": 0.9, "select_every": 1}


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_cosmogan", ROOT / "baselines/generate/cosmogan/train.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _maps(n: int, seed: int, scale: np.ndarray | float = 1.0) -> np.ndarray:
    """Skewed periodic maps (a shifted lognormal of white noise smoothed by a periodic filter), (n, 1, 64, 64)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    g = np.stack([ndimage.gaussian_filter(w, 2.0, mode="wrap") for w in rng.standard_normal((n, 64, 64))])
    g *= np.reshape(scale, (-1, 1, 1)) / g.std()
    return (0.02 * np.expm1(0.5 * g))[:, None].astype(np.float32)


def test_conditional_generator_exports_onnx_with_latents_and_params(tmp_path: Path) -> None:
    import onnxruntime as ort

    mod = _module()
    rng = np.random.default_rng(0)
    params = np.stack([rng.uniform(0.2, 0.4, 24), rng.uniform(0.7, 0.9, 24)], axis=1).astype(np.float32)
    maps = _maps(24, 1, scale=params[:, 1] / 0.8)
    model = mod.fit(maps, TINY, 64, size_deg=1.75, cond=params)
    path = mod.export(model, tmp_path / "model.onnx", 64)
    sess = ort.InferenceSession(str(path))
    inputs = sess.get_inputs()
    assert [i.name for i in inputs] == ["latents", "params"] and inputs[1].shape[1] == 2, inputs
    for n in (5, 3):  # a dynamic batch axis
        z = rng.standard_normal((n, 64)).astype(np.float32)
        p = np.repeat(params[:1], n, axis=0)
        out = sess.run(None, {"latents": z, "params": p})[0]
        assert out.shape == (n, 1, 64, 64) and np.isfinite(out).all()
    # the parameters reach the generator: other parameters, other maps for the same latents
    other = sess.run(None, {"latents": z, "params": np.repeat(params[1:2] * 1.2, 3, axis=0)})[0]
    assert np.abs(other - out).max() > 1e-6 * np.abs(out).max()
    # ONNX and torch agree (the parameters are standardised inside the model)
    import torch

    with torch.no_grad():
        ref = model(torch.from_numpy(z), torch.from_numpy(np.repeat(params[:1], 3, axis=0))).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6)


def test_unconditional_export_takes_latents_only_and_stays_above_minus_shift(tmp_path: Path) -> None:
    import onnxruntime as ort

    mod = _module()
    maps = _maps(16, 2)
    model = mod.fit(maps, TINY | {"select_every": 0}, 64, size_deg=1.75)
    sess = ort.InferenceSession(str(mod.export(model, tmp_path / "model.onnx", 64)))
    assert [i.name for i in sess.get_inputs()] == ["latents"]
    out = sess.run(None, {"latents": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32) * 5})[0]
    assert out.shape == (4, 1, 64, 64) and out.min() > -mod.PixelTransform.fit(maps).shift


def test_recalibrated_batchnorm_matches_the_training_mode_output() -> None:
    """After recalibration, eval mode (running statistics) gives maps of the variance the training mode gives;
    stale running statistics (here: reset to mean 0, variance 1) do not."""
    import torch

    mod = _module()
    torch.manual_seed(0)
    gen = mod.Generator(8, 64, [16, 8, 8, 4])
    with torch.no_grad():
        gen.dense[0].weight.mul_(30.0)  # dense activations far from unit variance
        gen.train()
        z = torch.randn(256, 8)
        train_sd = gen(z).std().item()
        gen.eval()
        stale_sd = gen(z).std().item()
        mod.recalibrate(gen, 8, True, None, batch=32)
        assert not gen.training
        fresh_sd = gen(z).std().item()
    assert abs(fresh_sd / train_sd - 1) < 0.1, (train_sd, fresh_sd)
    assert abs(stale_sd / train_sd - 1) > 0.3, (train_sd, stale_sd)


@pytest.mark.parametrize("n", [40])
def test_selection_scores_the_truth_better_than_a_wrong_generator(n: int) -> None:
    """The epoch selector's score (chi^2 per dof against public maps) is small for maps of the reference process
    and large for maps of half the variance."""
    mod = _module()
    sel = mod.Selector.of(_maps(n, 3)[:, 0].astype(np.float64), 1.75)
    assert sel is not None
    from skybench.tasks.generate.metrics import chi2_per_dof

    right = chi2_per_dof(sel.bins.vectors(_maps(n, 4)[:, 0].astype(np.float64)), sel.vectors).per_dof
    wrong = chi2_per_dof(sel.bins.vectors(_maps(n, 5, scale=0.5)[:, 0].astype(np.float64)), sel.vectors).per_dof
    assert right < 5 < 50 < wrong, (right, wrong)
    assert mod.Selector.of(_maps(6, 3)[:, 0].astype(np.float64), 1.75) is None  # too few maps: no selection
