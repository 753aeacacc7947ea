"""The faster-rcnn baseline of lens-tiles: Fast NMS against its definition, the box encoding, RoI pooling of a known
feature map, anchor labels and sampling, the augmentation moving boxes with the pixels, and a tiny training run
exported as a torch.export program that the real sandbox runs and the detect scorer scores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT, baseline_module, bwrap_works, tiles_project

torch = pytest.importorskip("torch")
fr = baseline_module("faster-rcnn")


def _random_boxes(rng: np.random.Generator, shape: tuple[int, ...], size: float = 100.0) -> torch.Tensor:
    xy = rng.uniform(0, size, (*shape, 2))
    wh = rng.uniform(5, 40, (*shape, 2))
    return torch.as_tensor(np.concatenate([xy, xy + wh], -1), dtype=torch.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_fast_nms_drops_exactly_the_boxes_a_higher_scoring_box_overlaps() -> None:
    rng = np.random.default_rng(0)
    boxes = _random_boxes(rng, (3, 40), size=12.0)  # crowded; sorted by decreasing score: box i outranks j > i
    for thr in (0.1, 0.3, 0.7):
        keep = fr.fast_nms(boxes, thr).numpy()
        b = boxes.numpy()
        ref = np.array([[all(_iou(b[n, i], b[n, j]) <= thr for i in range(j)) for j in range(40)]
                        for n in range(3)])
        assert keep.shape == (3, 40) and keep.dtype == bool
        assert (keep == ref).all(), thr
        assert 0 < keep.sum() < keep.size
    # unlike greedy NMS, a box dropped itself still drops the boxes it overlaps: A > B > C, A~B, B~C, not A~C
    chain = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]])
    assert fr.fast_nms(chain, 0.3).tolist() == [True, False, False]


def test_box_encoding_round_trips_and_follows_ren_et_al() -> None:
    rng = np.random.default_rng(1)
    boxes, anchors = _random_boxes(rng, (50,)), _random_boxes(rng, (50,))
    for weights in ((1.0, 1.0, 1.0, 1.0), fr.HEAD_WEIGHTS):
        back = fr.decode(fr.encode(boxes, anchors, weights), anchors, weights)
        assert torch.allclose(back, boxes, atol=1e-3)
    # a box twice as wide, its centre half an anchor width to the right: tx = 0.5, tw = log 2
    d = fr.encode(torch.tensor([[5.0, 0, 25, 10]]), torch.tensor([[0.0, 0, 10, 10]]))
    assert d[0].tolist() == pytest.approx([0.5 * 1 + 0.5, 0.0, np.log(2), 0.0])


def test_anchors_sit_on_the_cell_centres_in_the_rpn_order() -> None:
    a = fr.make_anchors(2, 3, 8, torch.tensor([10.0, 20.0]))
    assert a.shape == (2 * 3 * 2, 4)
    centres = ((a[:, :2] + a[:, 2:]) / 2).numpy()
    # cell (row 1, col 2), second side: index (1 * 3 + 2) * 2 + 1; its centre at pixel 2 * 8 + 3.5, 1 * 8 + 3.5
    assert centres[11].tolist() == [19.5, 11.5] and (a[11, 2] - a[11, 0]).item() == 20.0
    assert centres[0].tolist() == [3.5, 3.5] and (a[0, 2] - a[0, 0]).item() == 10.0


def test_roi_pooling_of_a_linear_ramp_gives_the_bin_centres() -> None:
    stride, h, w = 8, 16, 20
    px = torch.arange(w, dtype=torch.float32) * stride + (stride - 1) / 2  # pixel x of each feature column
    py = torch.arange(h, dtype=torch.float32) * stride + (stride - 1) / 2
    feat = torch.stack([px[None, :].expand(h, w), 2 * py[:, None].expand(h, w) + 1])[None]  # (1, 2, h, w)
    rois = torch.tensor([[[20.0, 30.0, 62.0, 58.0], [40.0, 12.0, 110.0, 100.0]]])
    out = fr.roi_pool(torch.cat([feat, feat]), torch.cat([rois, rois.flip(1)]), stride, size=7, sampling=2)
    assert out.shape == (4, 2, 7, 7)
    for k, (x1, y1, x2, y2) in enumerate(rois[0].tolist()):
        cx = x1 + (np.arange(7) + 0.5) * (x2 - x1) / 7
        cy = y1 + (np.arange(7) + 0.5) * (y2 - y1) / 7
        np.testing.assert_allclose(out[k, 0].numpy(), np.broadcast_to(cx[None, :], (7, 7)), atol=1e-3)
        np.testing.assert_allclose(out[k, 1].numpy(), np.broadcast_to(2 * cy[:, None] + 1, (7, 7)), atol=1e-3)
    assert torch.equal(out[2], out[1]) and torch.equal(out[3], out[0])  # second image: the RoIs swapped


def test_anchor_labels_and_sampling() -> None:
    anchors = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [4, 0, 14, 10], [50, 50, 60, 60], [0, 0, 30, 30]])
    gt = torch.tensor([[0.0, 0, 10, 10], [100, 100, 120, 120]])
    labels, matched = fr.assign(anchors, gt, 0.7, 0.3, best=True)
    # 0 and 1 overlap the first lens >= 0.7; 2 (IoU 0.43) ignored; 3 background; 4 (IoU 1/9) the best the
    # second lens has (IoU 0): nothing positive for it, background
    assert labels.tolist() == [1, 1, -1, 0, 0] and matched[:2].tolist() == [0, 0]
    labels, _ = fr.assign(anchors[2:], gt[:1], 0.7, 0.3, best=True)
    assert labels.tolist() == [1, 0, 0]  # the best anchor of a lens is positive although its IoU < 0.7
    many = torch.tensor([1] * 300 + [0] * 1000 + [-1] * 50)
    gen = torch.Generator().manual_seed(0)
    pos, neg = fr.sample(many, 256, 0.5, gen)
    assert len(pos) == 128 and len(neg) == 128 and (many[pos] == 1).all() and (many[neg] == 0).all()
    pos, neg = fr.sample(torch.tensor([1] * 3 + [0] * 1000), 256, 0.5, gen)
    assert len(pos) == 3 and len(neg) == 253 and len(set(neg.tolist())) == 253


def test_the_augmentation_moves_the_boxes_with_the_pixels() -> None:
    rng = np.random.default_rng(2)
    x = np.zeros((16, 1, 32, 32), np.float32)
    x[:, 0, 5, 20] = 1.0  # a lens at (x, y) = (20, 5), box of side 6 around it
    boxes = [np.array([[17.0, 2.0, 23.0, 8.0]])] * 16
    out, moved = fr.dihedral(x, boxes, rng)
    seen = set()
    for img, b in zip(out, moved, strict=True):
        r, c = np.argwhere(img[0] == 1.0)[0]
        assert ((b[0, 0] + b[0, 2]) / 2, (b[0, 1] + b[0, 3]) / 2) == (c, r)
        assert b[0, 2] - b[0, 0] == 6 and b[0, 3] - b[0, 1] == 6
        seen.add((int(r), int(c)))
    assert len(seen) >= 4  # several of the 8 transforms drawn


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
def test_a_tiny_faster_rcnn_exports_and_runs_in_the_sandbox(tmp_path: Path, monkeypatch) -> None:
    from skybench.common import validate_detections
    from skybench.harness.evaluate import evaluate
    from skybench.harness.submission import load_submission, sandboxed_predict
    from skybench.release.reader import open_release
    from skybench.simulate import simulate_release
    from skybench.tracks import for_release, load_track

    project = tiles_project(tmp_path, monkeypatch)
    track = load_track("lens-tiles")
    release = simulate_release(track, project / "releases" / "lens-tiles", seed=4, size=6, progress=False,
                               workers=1, backend="numpy")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    folder = project / "baselines" / "detect" / "faster-rcnn" / "lens-tiles"
    model, out = fr.train(["--track", "lens-tiles", "--release", str(release), "--params",
                           str(tmp_path / "params.yaml"), "--no-mlflow", "--out", str(folder), "--set", "steps=4",
                           "--set", "crop=96", "--set", "batch_size=2"])
    spec = yaml.safe_load((out / "submission.yaml").read_text())
    assert spec["format"] == "torch" and spec["model"] == "model.pt2" and spec["team"] == "baselines"
    for p in (tmp_path, project, *project.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    res = sandboxed_predict(load_submission(out), release, scratch=tmp_path / "run", track=track, batch_size=4)
    assert res.ok, res.reason
    k = int(track.output.max_candidates)
    assert res.predictions is not None and res.predictions.shape == (len(res.ids), k, 3)
    validate_detections(res.predictions, len(res.ids), k, for_release(track, release).tile_size)
    # the sandbox's output is the trained model's, candidates sorted by score and NaN only as whole padding rows
    rel = open_release(release)
    assert res.ids.tolist() == rel.meta("test")["id"].tolist()  # the runner streams the release order
    mine = fr.detect(model, np.ascontiguousarray(rel.array("test", "images"), dtype=np.float32))
    np.testing.assert_allclose(res.predictions, mine, atol=1e-3, rtol=1e-3)
    pred = res.predictions
    assert (np.isnan(pred).all(axis=2) | np.isfinite(pred).all(axis=2)).all()
    s = pred[..., 2]
    assert np.all((s[np.isfinite(s)] >= 0) & (s[np.isfinite(s)] <= 1))  # sigmoid scores; Fast NMS drops are NaN
    assert np.all(np.diff(np.where(np.isnan(s), -1.0, s), axis=1) <= 1e-6)
    program = torch.export.load(str(out / "model.pt2")).module()  # batch 1 too: the batch axis is dynamic
    one = torch.from_numpy(np.ascontiguousarray(rel.array("test", "images")[:1], np.float32))
    assert program(one).shape == (1, k, 3)
    (tmp_path / "again").mkdir()  # the archive names its members after the file stem
    again = fr.export(model, tmp_path / "again" / "model.pt2", tuple(one.shape[1:]))  # same weights, same bytes
    assert again.read_bytes() == (out / "model.pt2").read_bytes()
    assert str(ROOT).encode() not in again.read_bytes()  # no checkout path: a clone writes the same file
    (outcome,) = evaluate([out], track, release, out=project / "results" / "evaluations", publish=False, force=True)
    assert outcome.status == "FINISHED", outcome.reason
    assert 0 <= outcome.metrics["average_precision"] <= 1 and outcome.metrics["n_candidates"] > 0, outcome.metrics
