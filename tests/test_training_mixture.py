"""Training on a mixture of releases (skybench/training/mixture.py): the mixed split's counts, weights and seeded
order, the refusal of a release of another instrument, a tiny ResNet trained on a mixture as a valid submission,
and the before/after comparison of two baselines' records (skybench/tracking/mixture_report.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from helpers import baseline_module, bwrap_works

from skybench.harness.record import RECORD, EvaluationRecord, record_dir
from skybench.harness.visibility import private_dir
from skybench.release.reader import open_release
from skybench.tracking.mixture_report import compare
from skybench.training import load_split, load_training
from skybench.training.mixture import MixPart, load_mixture, mixture_plan, parse_part


@pytest.fixture(scope="module")
def other_space_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny lens-space release (another seed): the same instrument as tiny_space_release."""
    from skybench.simulate import simulate_release

    out = tmp_path_factory.mktemp("mix") / "lens-space-b"
    return simulate_release("lens-space", out, profile="demo", seed=4, size=16, progress=False, workers=1)


def _rows(x: np.ndarray) -> list[bytes]:
    return [a.tobytes() for a in x]


def test_parse_part() -> None:
    assert parse_part("releases/a") == MixPart(Path("releases/a"), 1.0)
    assert parse_part("releases/a:0.5") == MixPart(Path("releases/a"), 0.5)
    assert parse_part("/x:y/a") == MixPart(Path("/x:y/a"), 1.0)  # not a number after the colon: part of the path
    for bad in ("releases/a:0", "releases/a:-1", "releases/a:nan"):
        with pytest.raises(ValueError, match="positive"):
            parse_part(bad)


def test_mixture_plan_counts_and_seeded_order() -> None:
    part, row = mixture_plan([10, 4], [0.5, 2.5], seed=7)
    assert np.count_nonzero(part == 0) == 5 and np.count_nonzero(part == 1) == 4 * 2 + 2
    assert len(set(row[part == 0])) == 5  # a subset, without repeats
    assert sorted(np.bincount(row[part == 1], minlength=4)) == [2, 2, 3, 3]  # two copies plus two rows again
    again = mixture_plan([10, 4], [0.5, 2.5], seed=7)
    assert all(np.array_equal(a, b) for a, b in zip((part, row), again, strict=True))
    other = mixture_plan([10, 4], [0.5, 2.5], seed=8)
    assert not np.array_equal(np.stack([part, row]), np.stack(other))
    assert np.any(np.diff(part) < 0)  # shuffled: the parts are interleaved, not one after the other
    whole = [mixture_plan([10, 4], [1, 1], seed=s) for s in (0, 1)]  # every row once: only the order differs
    assert all(sorted(zip(*w, strict=True)) == [(0, r) for r in range(10)] + [(1, r) for r in range(4)]
               for w in whole)
    assert not np.array_equal(np.stack(whole[0]), np.stack(whole[1]))


def test_load_mixture_concatenates_and_shuffles(tiny_space_release: Path, other_space_release: Path) -> None:
    xa, ya = load_split(tiny_space_release, "train")
    xb, yb = load_split(other_space_release, "train")
    parts = [MixPart(tiny_space_release), MixPart(other_space_release)]
    x, y = load_mixture(parts, "train", seed=0)
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (len(xa) + len(xb), *xa.shape[1:])
    # the same cut-outs with their labels, in another order
    pairs = sorted(zip(_rows(xa) + _rows(xb), ya.tolist() + yb.tolist(), strict=True))
    assert sorted(zip(_rows(x), y.tolist(), strict=True)) == pairs
    assert _rows(x) != _rows(xa) + _rows(xb)
    x2, y2 = load_mixture(parts, "train", seed=0)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = load_mixture(parts, "train", seed=1)
    assert not np.array_equal(x, x3)
    # weights: half of the first release, the second twice; --max-train keeps the first N of the mixture
    xw, _ = load_mixture([MixPart(tiny_space_release, 0.5), MixPart(other_space_release, 2)], "train", seed=0)
    from_b = sum(r in set(_rows(xb)) for r in _rows(xw))
    assert (len(xw), from_b) == (round(len(xa) / 2) + 2 * len(xb), 2 * len(xb))
    xm, ym = load_mixture(parts, "train", max_n=10, seed=0)
    assert np.array_equal(xm, x[:10]) and np.array_equal(ym, y[:10])
    xv, _ = load_mixture(parts, "val", seed=0)
    assert len(xv) == len(load_split(tiny_space_release, "val")[1]) + len(load_split(other_space_release, "val")[1])


def test_load_training_without_also_is_load_split(tiny_space_release: Path, other_space_release: Path) -> None:
    args = argparse.Namespace(release=tiny_space_release, max_train=20, also=[])
    x, y = load_training(args, {"seed": 0}, "train")
    x0, y0 = load_split(tiny_space_release, "train", 20)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)
    args.also = [MixPart(other_space_release)]
    x1, _ = load_training(args, {"seed": 0}, "train")
    assert len(x1) == 20 and _rows(x1) != _rows(x0)


def test_a_release_of_another_instrument_is_refused(tiny_space_release: Path, tiny_ground_release: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot mix .*lens-ground.* a different instrument: .*image_shape.*bands"):
        load_mixture([MixPart(tiny_space_release), MixPart(tiny_ground_release)], "train")


def test_a_release_without_the_split_is_refused(tiny_space_release: Path, tmp_path: Path) -> None:
    """A test-only release of the same instrument (as a real evaluation set is) has nothing to train on."""
    import pandas as pd

    from skybench.release import read_manifest
    from skybench.release.writer import write_release

    info = {k: v for k, v in read_manifest(tiny_space_release).items()
            if k in ("track", "task", "profile", "seed", "bands", "pixel_scale", "units")}
    shape = tuple(open_release(tiny_space_release).manifest["image_shape"])

    def chunks(split: str, ranges: list[tuple[int, int]]):  # noqa: ANN202
        for a, b in ranges:
            yield np.zeros((b - a, *shape), np.float32), pd.DataFrame({"id": [f"t{i}" for i in range(a, b)],
                                                                         "is_lens": [0] * (b - a)})

    test_only = write_release(tmp_path / "test-only", info=info, counts={"test": 3}, image_shape=shape,
                              make_chunks=chunks, label_columns=("is_lens",), progress=False)
    with pytest.raises(ValueError, match=r"cannot mix .*test-only: it has no train cut-outs"):
        load_mixture([MixPart(tiny_space_release), MixPart(test_only)], "train")


@pytest.mark.slow
def test_tiny_resnet_on_a_mixture_is_a_valid_submission(tiny_space_release: Path, other_space_release: Path,
                                                        tmp_path: Path) -> None:
    from skybench.harness.evaluate import _path_identity
    from skybench.harness.submission import load_submission, sandboxed_predict
    from skybench.tracks import load_track

    argv = ["--track", "lens-space", "--release", str(tiny_space_release), "--also", f"{other_space_release}:2",
            "--name", "resnet-mix", "--out", str(tmp_path / "resnet-mix"), "--no-mlflow", "--epochs", "1",
            "--set", "stem=8", "--set", "widths=[8,16]", "--set", "units=[1,1]"]
    _, folder = baseline_module("resnet").train(argv)
    sub = load_submission(folder)
    assert (sub.spec.team, sub.spec.name, sub.spec.track, sub.spec.format) == (
        "baselines", "resnet-mix", "lens-space", "onnx")
    # the DVC stage's folder files its record as baselines/resnet-mix, as its submission.yaml says
    assert _path_identity(Path("baselines/lens/resnet-mix/lens-space")) == (
        "baselines", "resnet-mix", "lens-space", "")
    if bwrap_works():
        res = sandboxed_predict(sub, tiny_space_release, scratch=tmp_path / "scratch", track=load_track("lens-space"),
                                limit=8)
        assert res.ok, f"{res.reason}\n{res.log}"
        assert res.predictions.shape == (8,)


def _record(out: Path, name: str, status: str = "FINISHED", **metrics: float) -> None:
    rec = EvaluationRecord(team="baselines", name=name, format="onnx", status=status,
                           reason="" if status == "FINISHED" else "it broke", submission_sha256="a" * 64,
                           release_sha256="b" * 64, metrics=metrics)
    folder = private_dir(record_dir(out, "baselines", name))  # the organiser's record: every real object
    folder.mkdir(parents=True)
    (folder / RECORD).write_text(rec.to_json())


def _real(recall: tuple[float, float, float], fpr: tuple[float, float, float]) -> dict[str, float]:
    return {"auroc": 0.98, "real_lens_recall": recall[0], "real_lens_recall_ci_low": recall[1],
            "real_lens_recall_ci_high": recall[2], "real_fpr": fpr[0], "real_fpr_ci_low": fpr[1],
            "real_fpr_ci_high": fpr[2], "real_auroc": 0.7, "real_auroc_ci_low": 0.6, "real_auroc_ci_high": 0.8}


def test_compare_states_the_outcome(tmp_path: Path) -> None:
    ev = tmp_path / "lens-space" / "evaluations"
    _record(ev, "resnet", **_real((0.44, 0.28, 0.62), (0.20, 0.10, 0.35)))
    _record(ev, "resnet-mix", **_real((0.85, 0.67, 0.94), (0.25, 0.12, 0.40)))
    text = compare([ev], "resnet", "resnet-mix")
    assert "real_lens_recall: raised from 0.440 [0.280, 0.620] to 0.850 [0.670, 0.940] (the 95% intervals do not " \
           "overlap)" in text
    assert "real_fpr: raised from 0.200 [0.100, 0.350] to 0.250 [0.120, 0.400] (the 95% intervals overlap" in text
    assert text.rstrip().endswith("the mixture did raise real_lens_recall and did NOT lower real_fpr for resnet.")


def test_compare_says_when_it_cannot_tell(tmp_path: Path) -> None:
    ev, other = tmp_path / "lens-space" / "evaluations", tmp_path / "lens-space-realsrc" / "evaluations"
    _record(ev, "resnet", **_real((0.44, 0.28, 0.62), (0.2, 0.1, 0.35)))
    _record(ev, "resnet-mix", status="FAILED")
    text = compare([ev, other], "resnet", "resnet-mix")
    assert "baselines/resnet-mix FAILED" in text
    assert f"no record of baselines/resnet in {other.parent / 'private'}" in text
    assert text.rstrip().endswith("Outcome on lens-space: not known (a record is missing or failed; see above)")
    nan = _real((float("nan"),) * 3, (0.2, 0.1, 0.35))
    (private_dir(record_dir(ev, "baselines", "resnet-mix")) / RECORD).unlink()
    private_dir(record_dir(ev, "baselines", "resnet-mix")).rmdir()
    _record(ev, "resnet-mix", **nan)
    assert "real_lens_recall: not measured" in compare([ev], "resnet", "resnet-mix")
