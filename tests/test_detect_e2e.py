"""The detect task end to end: a small lens-tiles release, a truth-free ``python`` detector (local maxima of the tile,
numpy only) and a ``predictions`` CSV run through ``skybench.harness.evaluate`` in the real sandbox, scored against
the hidden truth table and recorded; hostile outputs (coordinates outside the tile, more than K candidates for a
tile, from a model or from a CSV) become FAILED records with a one-line reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import bwrap_works

from skybench.harness.evaluate import evaluate
from skybench.harness.record import RUN_FILE
from skybench.harness.visibility import participant_artifacts, private_dir
from skybench.release.reader import open_release
from skybench.simulate import simulate_release
from skybench.tracks import benchmarks_dir, load_track

# Local maxima of the tile above a noise threshold, the brightest K: knows nothing of where the lenses are.
LOCAL_MAX = """import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

K, HALF = 100, 3

def load(model_dir):
    return None

def peaks(img):
    pad = np.pad(img, HALF, mode="constant", constant_values=-np.inf)
    local = sliding_window_view(pad, (2 * HALF + 1, 2 * HALF + 1)).max(axis=(-1, -2))
    med = np.median(img)
    mad = 1.4826 * np.median(np.abs(img - med))
    y, x = np.nonzero((img == local) & (img > med + 5 * mad))
    best = np.argsort(-img[y, x], kind="stable")[:K]
    out = np.full((K, 3), np.nan, np.float32)
    out[:len(best)] = np.stack([x[best], y[best], np.log10(img[y[best], x[best]] - med)], axis=1)
    return out

def predict(model, batch):
    return np.stack([peaks(tile.sum(axis=0)) for tile in batch])
"""
# A model whose candidates leave the tile (x = 600 on a 512-pixel tile).
OUTSIDE = """import numpy as np
def load(model_dir):
    return None
def predict(model, batch):
    out = np.full((len(batch), 100, 3), np.nan, np.float32)
    out[:, 0] = (600.0, 10.0, 1.0)
    return out
"""


def _submission(folder: Path, name: str, fmt: str, model: str, text: str) -> Path:
    folder.mkdir(parents=True)
    (folder / model).write_text(text)
    spec = {"team": "tests", "name": name, "track": "lens-tiles", "format": fmt, "model": model}
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec))
    for p in (folder, *folder.iterdir()):  # the sandbox runs as an unprivileged uid
        p.chmod(0o755)
    return folder


def _csv(rows: list[tuple[int, float, float, float]]) -> str:
    return pd.DataFrame(rows, columns=["tile_id", "x", "y", "score"]).to_csv(index=False)


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
def test_a_truth_free_detector_is_scored_and_hostile_outputs_fail_with_one_line(tmp_path: Path,
                                                                                monkeypatch) -> None:
    project = tmp_path / "project"
    (project / "benchmarks").mkdir(parents=True)
    for name in ("lens-tiles", "lens-space"):  # lens-tiles draws its lenses from lens-space
        shutil.copy(benchmarks_dir() / f"{name}.yaml", project / "benchmarks" / f"{name}.yaml")
    monkeypatch.setenv("SKYBENCH_ROOT", str(project))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")  # never used: publish=False
    track = load_track("lens-tiles")
    release = simulate_release(track, project / "releases" / "lens-tiles", seed=5, size=12, progress=False,
                               workers=1, backend="numpy")
    ids = open_release(release).meta("test")["id"].to_numpy()
    k = track.output.max_candidates
    subs = project / "submissions" / "tests"
    local_max = _submission(subs / "local-max", "local-max", "python", "predict.py", LOCAL_MAX)
    outside = _submission(subs / "outside", "outside", "python", "predict.py", OUTSIDE)
    csv_ok = _submission(subs / "csv-ok", "csv-ok", "predictions", "candidates.csv",
                         _csv([(int(t), 100.0 + i, 200.0, 0.5) for i, t in enumerate(ids)]))
    # equal scores too large for numpy to cut their range into histogram bins (the participant's plot failed them)
    csv_huge = _submission(subs / "csv-huge", "csv-huge", "predictions", "candidates.csv",
                           _csv([(int(t), 100.0 + i, 200.0, 1e17) for i, t in enumerate(ids)]))
    csv_outside = _submission(subs / "csv-outside", "csv-outside", "predictions", "candidates.csv",
                              _csv([(int(ids[0]), 10.0, 512.0, 0.5)]))
    csv_too_many = _submission(subs / "csv-too-many", "csv-too-many", "predictions", "candidates.csv",
                               _csv([(int(ids[1]), float(i), 3.0, 0.1) for i in range(k + 1)]))
    subs.chmod(0o755)

    out = project / "results" / "lens-tiles" / "evaluations"
    outcomes = {o.name: o for o in evaluate([local_max, outside, csv_ok, csv_huge, csv_outside, csv_too_many], track,
                                            release, out=out, publish=False, force=True)}
    failed = {"outside": "outside the tile", "csv-outside": "outside the tile",
              "csv-too-many": f"tile {int(ids[1])} has {k + 1} candidates, more than the track's K = {k}"}
    for name, words in failed.items():
        o = outcomes[name]
        assert o.status == "FAILED" and words in o.reason and "\n" not in o.reason, (name, o.reason)
        assert json.loads((o.record / "evaluation.json").read_text())["status"] == "FAILED"

    for name in ("local-max", "csv-ok", "csv-huge"):
        o = outcomes[name]
        assert o.status == "FINISHED", f"{name}: {o.reason}"
        assert 0 <= o.metrics["average_precision"] <= 1 and o.metrics["n_tiles"] == len(ids), o.metrics
        # participants get aggregates of the public part only; the lenses with their matched scores stay in the
        # organiser's folder
        shown = json.loads((o.record / "evaluation.json").read_text())["metrics"]
        assert shown and all(key.startswith("public_") for key in shown), sorted(shown)
        assert {p.name for p in o.record.iterdir()} <= {*participant_artifacts(track), RUN_FILE}, \
            sorted(p.name for p in o.record.iterdir())
        assert (private_dir(o.record) / "lenses.csv").is_file()
    m = outcomes["local-max"].metrics
    # lens galaxies are bright peaks: the detector finds most of them among its 100 candidates, with purity < 1
    assert m["completeness"] > 0.5 and 0 < m["average_precision"] < 1, m
    assert (outcomes["local-max"].record / "completeness_public.csv").is_file()
