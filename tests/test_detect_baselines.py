"""The lens-tiles baselines: the sliding window's grid and non-maximum suppression on known answers, CenterNet's
targets, loss and in-graph peak extraction, and both trained (tiny) into submissions that the real sandbox runs
and the detect scorer ranks; the pipeline's stage deps follow the detect simulator into the lens task."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml
from helpers import ROOT, baseline_module, bwrap_works, tiles_project

from skybench.stagedeps import stage_usage


def _predict_module() -> ModuleType:
    path = ROOT / "baselines" / "detect" / "sliding-resnet" / "predict.py"
    spec = importlib.util.spec_from_file_location("sliding_predict", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_nms_keeps_the_best_points_at_least_a_radius_apart() -> None:
    nms = _predict_module().nms
    x = np.array([0.0, 5.0, 20.0, 26.0, 100.0])
    y = np.zeros(5)
    score = np.array([0.9, 0.8, 0.7, 0.95, 0.1])
    # 26 (best) kept; 0 is 26 away: kept; 5 is 5 from 0 and 20 is 6 from 26: dropped; 100 kept
    assert nms(x, y, score, 10.0, 10).tolist() == [3, 0, 4]
    assert nms(x, y, score, 10.0, 2).tolist() == [3, 0]  # at most k
    assert nms(x, y, score, 5.0, 10).tolist() == [3, 0, 1, 2, 4]  # 5 apart is not closer than 5
    assert nms(x, np.array([0.0, 0, 0, 30, 0]), score, 10.0, 10).tolist() == [3, 0, 2, 4]  # 2-D distances


def test_the_window_grid_covers_the_tile_and_peaks_move_to_the_weighted_centre() -> None:
    mod = _predict_module()
    g = mod.grid(512, 101, 20)
    assert g[0] == 0 and g[-1] == 411 and np.all(np.diff(g) <= 20)
    assert mod.grid(101, 101, 20).tolist() == [0]
    with pytest.raises(ValueError, match="smaller than"):
        mod.grid(64, 101, 20)
    centres = np.arange(5) * 20.0 + 50
    scores = np.zeros((5, 5))
    scores[2, 1], scores[2, 2] = 0.5, 0.5  # a lens between two windows of row 2
    out = mod.detect(scores, centres, centres, 20, 200.0, 4)
    assert out.shape == (4, 3)
    assert out[0].tolist() == pytest.approx([80.0, 90.0, 0.5])  # x halfway between the windows at 70 and 90
    assert np.isnan(out[1:]).all()  # NMS wider than the grid: one candidate, NaN-padded to K
    out = mod.detect(scores, centres, centres, 20, 30.0, 30)
    assert 4 <= np.isfinite(out[:, 2]).sum() < 25 and out[0, 2] == 0.5  # NMS dropped the near neighbours


def test_centernet_targets_loss_and_peaks() -> None:
    torch = pytest.importorskip("torch")
    cn = baseline_module("centernet")
    heat = cn.heatmaps((32, 32), [np.array([[21.0, 13.0]]), np.zeros((0, 2))], 4, 1.0)
    assert heat.shape == (2, 1, 8, 8) and heat[0, 0, 3, 5] == 1.0 and heat[0].sum() > 1 and heat[1].max() == 0
    target = torch.from_numpy(heat)
    good = torch.where(target == 1, 10.0, -10.0)
    assert cn.focal_loss(good, target) < 1e-3 < cn.focal_loss(-good, target)

    class Fixed(torch.nn.Module):  # stands in for the U-Net: logits with two peaks
        stride = 4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.full((x.shape[0], 1, 8, 8), -5.0)
            logits[:, 0, 3, 5], logits[:, 0, 3, 6], logits[:, 0, 6, 1] = 3.0, 2.0, 1.0  # (3, 6) is not a peak
            return logits

    out = cn.Detector(Fixed(), 3)(torch.zeros(2, 1, 32, 32)).numpy()
    assert out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == pytest.approx([5 * 4 + 1.5, 3 * 4 + 1.5, 1 / (1 + np.exp(-3.0))])
    assert out[0, 1, :2].tolist() == [1 * 4 + 1.5, 6 * 4 + 1.5]  # the 3x3 max-pool dropped its neighbour (3, 6)
    assert out[0, 2, 2] == pytest.approx(1 / (1 + np.exp(5.0)))


def test_the_detect_simulator_stage_depends_on_the_lens_task_it_takes_from_the_registry() -> None:
    sim = stage_usage("skybench simulate lens-tiles --profile demo --seed 1 --out releases/lens-tiles", ROOT).files
    assert {"src/skybench/tasks/lens/simulator.py", "src/skybench/tasks/lens/__init__.py",
            "benchmarks/lens-space.yaml", "src/skybench/tasks/detect/simulator.py"} <= sim
    lens = stage_usage("skybench simulate lens-space --profile demo --seed 1 --out releases/lens-space", ROOT).files
    assert not any("tasks/detect" in f for f in lens)
    train = stage_usage("python baselines/detect/centernet/train.py --track lens-tiles --release releases/lens-tiles "
                        "--out baselines/detect/centernet/lens-tiles", ROOT).files
    assert not any("tasks/lens" in f for f in train) and "benchmarks/lens-space.yaml" not in train


def _tiny_classifier(folder: Path) -> Path:
    """A stand-in for the lens-space ResNet: an ONNX model (N, 1, 101, 101) -> (N,) of the central flux."""
    import torch

    from skybench.training import export_onnx, write_submission

    class Central(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(x[:, :, 40:61, 40:61].mean(dim=(1, 2, 3)) * 100.0)

    folder.mkdir(parents=True)
    export_onnx(Central(), folder / "model.onnx", (1, 101, 101), "score")
    return write_submission(folder, "resnet", "lens-space", "onnx", "model.onnx", "test stand-in")


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
def test_both_baselines_train_into_submissions_the_sandbox_runs(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("torch")
    from skybench.harness.evaluate import evaluate
    from skybench.simulate import simulate_release
    from skybench.tracks import load_track

    project = tiles_project(tmp_path, monkeypatch)
    track = load_track("lens-tiles")
    release = simulate_release(track, project / "releases" / "lens-tiles", seed=3, size=12, progress=False,
                               workers=1, backend="numpy")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    classifier = _tiny_classifier(tmp_path / "classifier")
    params["train"]["sliding-resnet"].update(resnet=str(classifier), stride=40)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subs = project / "baselines" / "detect"  # where the pipeline writes them (team baselines)
    common = ["--track", "lens-tiles", "--release", str(release), "--params", str(tmp_path / "params.yaml"),
              "--no-mlflow"]
    baseline_module("sliding-resnet").train([*common, "--out", str(subs / "sliding-resnet" / "lens-tiles")])
    baseline_module("centernet").train([*common, "--out", str(subs / "centernet" / "lens-tiles"), "--set", "steps=20",
                                        "--set", "crop=64", "--set", "batch_size=4"])
    for p in (tmp_path, project, *project.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    outcomes = {o.name: o for o in evaluate([subs / "sliding-resnet" / "lens-tiles", subs / "centernet" / "lens-tiles"],
                                            track, release,
                                            out=project / "results" / "evaluations", publish=False, force=True)}
    assert sorted(outcomes) == ["centernet", "sliding-resnet"], [(o.folder, o.status) for o in outcomes.values()]
    for name in ("sliding-resnet", "centernet"):
        o = outcomes[name]
        assert o.status == "FINISHED", f"{name}: {o.reason}"
        assert 0 <= o.metrics["average_precision"] <= 1 and o.metrics["n_candidates"] > 0, o.metrics
