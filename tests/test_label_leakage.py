"""Hidden labels cannot be read off what participants see of an evaluation.

Each test plays an adversarial team: its submission encodes every object's identity in its output (a distinct
score, a distinct z_phot, an image watermark), the real evaluation pipeline scores it, writes its records and
publishes them to MLflow, and the test then collects everything a participant can see (the record folders,
the published leaderboard files and ROC curves, the participant MLflow experiment's metrics, params, tags and
artifacts) and tries to recover the hidden labels from it. The same attack on the organiser's view must
succeed, so each test can fail.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import csv_submission, mlflow_store, python_submission
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from skybench.cli import app
from skybench.harness.evaluate import evaluate
from skybench.harness.score import public_mask, score
from skybench.harness.visibility import participant_artifacts, write_participant_view
from skybench.release import layout, open_release
from skybench.tracking import experiment_name, organiser_experiment, tracking_uri
from skybench.tracks import load_track

# Sandboxed end-to-end runs of the trust model's attacks: the full suite (`make test`), not the fast lane.
pytestmark = pytest.mark.slow

# Files that hold per-object data or the truth: organiser-only, whatever the task.
ORGANISER_ONLY = {"roc.csv", "roc.png", "completeness.csv", "completeness.png", "predictions.csv", "predictions.npy",
                  "predictions_ids.csv", "real_predictions.csv", "real_predictions.npy", "real_predictions_ids.csv",
                  "zphot.csv", "zphot_vs_zspec.png", "dz_vs_zspec.png", "pit.csv", "pit.png", "per_object.csv",
                  "per_object_real.csv", "gallery.png", "gallery_real.png"}
NUMBER = re.compile(rb"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


@pytest.fixture(scope="module")
def lens_release(tmp_path_factory) -> Path:
    from skybench.simulate import simulate_release

    return simulate_release("lens-space", tmp_path_factory.mktemp("rel") / "lens-space", profile="demo", seed=11,
                            size=800, progress=False)


def _project(tmp_path: Path, monkeypatch, root: Path, track: str, evaluation: dict) -> Path:
    (tmp_path / "benchmarks").mkdir(parents=True)
    for f in (root / "benchmarks").glob("*.yaml"):
        shutil.copy(f, tmp_path / "benchmarks")
    spec = yaml.safe_load((root / "benchmarks" / f"{track}.yaml").read_text())
    spec["evaluation"] = {k: v for k, v in (spec["evaluation"] | {"real_set": None} | evaluation).items()
                          if v is not None}
    (tmp_path / "benchmarks" / f"{track}.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("SKYBENCH_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    return tmp_path


def _run(project: Path, track: str, folder: Path, release: Path) -> None:
    """The pipeline as `dvc repro` runs it: evaluate (publishing to MLflow), then `leaderboard --write`."""
    [outcome] = evaluate([folder], track, release, out=project / "results" / track / "evaluations")
    assert outcome.status == "FINISHED" and not outcome.unpublished, outcome.reason
    res = CliRunner().invoke(app, ["leaderboard", track, "--write", str(project / "results" / track),
                                   "--all-releases", "--format", "csv"])
    assert res.exit_code == 0, res.output


def _view(project: Path, track: str, organiser: bool, dst: Path) -> dict:
    """Everything one side can see: {"files": {path: bytes}, "metrics": {key: value}, "text": [bytes]}."""
    files: dict[str, bytes] = {}
    results = project / "results" / track
    for p in sorted(results.rglob("*")):
        if p.is_file() and (p.relative_to(results).parts[0] == "private") == organiser:
            files[str(p.relative_to(results))] = p.read_bytes()
    c = MlflowClient(tracking_uri())
    exp = c.get_experiment_by_name(organiser_experiment(track) if organiser else experiment_name(track))
    assert exp is not None
    metrics: dict[str, float] = {}
    text: list[bytes] = []
    runs = c.search_runs([exp.experiment_id])
    assert runs
    for run in runs:
        metrics |= run.data.metrics
        text += [f"{k}={v}".encode() for d in (run.data.params, run.data.tags) for k, v in d.items()]
        local = Path(c.download_artifacts(run.info.run_id, "", str(dst / run.info.run_id)))
        for p in sorted(local.rglob("*")):
            if p.is_file():
                files[f"mlflow/{run.info.run_id}/{p.relative_to(local)}"] = p.read_bytes()
    for name, data in files.items():  # the metrics of records (the leaderboard's metrics.json is nested)
        if Path(name).name == "evaluation.json":
            metrics |= json.loads(data)["metrics"]
        elif Path(name).name == "metrics.json":
            m = json.loads(data)
            metrics |= m if all(isinstance(v, float | int) for v in m.values()) else {}
    return {"files": files, "metrics": metrics, "text": text}


def _numbers(view: dict) -> np.ndarray:
    """Every number a side can read: MLflow metrics, params, tags and the text of every non-image file."""
    blobs = [d for n, d in view["files"].items() if not n.endswith(".png")] + view["text"]
    found = [float(x) for b in blobs for x in NUMBER.findall(b)] + list(view["metrics"].values())
    return np.unique(np.asarray(found, dtype=np.float64))


def _matched(values: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """True where a value appears (to 1e-9 relative) among ``numbers``."""
    i = np.clip(np.searchsorted(numbers, values), 1, len(numbers) - 1)
    near = np.minimum(np.abs(numbers[i] - values), np.abs(numbers[i - 1] - values))
    return near <= 1e-9 * np.maximum(1.0, np.abs(values))


def _assert_names(view_p: dict, view_o: dict, expect_organiser: set[str]) -> None:
    seen = {Path(n).name for n in view_p["files"]}
    assert not seen & ORGANISER_ONLY, f"organiser-only files visible to participants: {seen & ORGANISER_ONLY}"
    assert expect_organiser <= {Path(n).name for n in view_o["files"]}  # the organiser does get them


# --------------------------------------------------------------------------- lens: labels off ROC steps


def _roc_attack(fpr: np.ndarray, tpr: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of guessing each object's label from a ROC table, the objects in the order of the
    attacker's (distinct) scores, highest first. Generous: the attacker is told how many lenses there are.
    Each ROC segment covers a known run of objects; guess its majority class."""
    n_pos, n_neg = int(labels.sum()), int(len(labels) - labels.sum())
    cum, pos = fpr * n_neg + tpr * n_pos, tpr * n_pos  # objects, lenses above each ROC point
    k = np.clip(np.searchsorted(cum, np.arange(len(labels)) + 0.5), 1, len(cum) - 1)
    dobj, dpos = cum[k] - cum[k - 1], pos[k] - pos[k - 1]
    purity = np.divide(dpos, dobj, out=np.full(len(k), n_pos / len(labels)), where=dobj > 0)
    return float(np.mean((purity > 0.5) == labels.astype(bool)))


def _best_roc_attack(view: dict, ids: np.ndarray, y: np.ndarray, scores: np.ndarray,
                     parts: dict[str, np.ndarray]) -> tuple[float, float]:
    """(highest accuracy, highest margin over chance) of the ROC attack over every fpr/tpr table a side sees
    and every part of the test set the table might cover. Chance: the best constant guess on that part plus
    three binomial standard deviations."""
    best, margin = 0.0, -1.0
    for name, data in view["files"].items():
        if not name.endswith(".csv"):
            continue
        table = pd.read_csv(__import__("io").BytesIO(data))
        if not {"fpr", "tpr"} <= set(table.columns):
            continue
        for mask in parts.values():
            order = np.argsort(-scores[mask], kind="stable")
            acc = _roc_attack(table["fpr"].to_numpy(float), table["tpr"].to_numpy(float), y[mask][order])
            p = max(y[mask].mean(), 1 - y[mask].mean())
            best, margin = max(best, acc), max(margin, acc - (p + 3 * np.sqrt(p * (1 - p) / mask.sum())))
    return best, margin


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["open", "closed", "no split"])
def test_lens_labels_cannot_be_read_off_participant_artifacts(phase, tmp_path, monkeypatch, root, lens_release):
    split = {"public_fraction": None} if phase == "no split" else \
        {"public_fraction": 0.3, "split_seed": 7, "phase": phase}
    project = _project(tmp_path / "p", monkeypatch, root, "lens-space", split)
    hidden = open_release(lens_release).hidden("test").meta()
    ids, y = hidden["id"].to_numpy(), hidden["is_lens"].to_numpy().astype(int)
    scores = np.random.default_rng(5).permutation(len(ids)) / len(ids)  # distinct: a score names an object
    _run(project, "lens-space", csv_submission(tmp_path / "subs" / "spy", "spy", ids, scores, team="eve"),
         lens_release)

    part = {"all": np.ones(len(ids), bool)}
    if phase != "no split":
        pub = public_mask(ids, ids, 0.3, 7)
        part |= {"public": pub, "private": ~pub}
    seen = _view(project, "lens-space", False, tmp_path / "dl-p")
    org = _view(project, "lens-space", True, tmp_path / "dl-o")
    _assert_names(seen, org, {"roc.csv", "predictions.csv", "completeness.csv"})
    assert any(n.startswith("roc/") and n.endswith(".csv") for n in seen["files"])  # dvc's plots: the fixed grid

    keys = set(seen["metrics"])
    if phase == "open":
        assert keys and all(k.startswith("public_") for k in keys), sorted(keys)
    elif phase == "closed":  # the private part is revealed when the phase closes, the whole set never
        assert any(k.startswith("private_") for k in keys)
        assert all(k.startswith(("public_", "private_")) for k in keys), sorted(keys)
    else:
        assert "auroc" in keys and not any(k.startswith(("public_", "private_")) for k in keys)
    assert "auroc" in org["metrics"] and (phase == "no split" or "private_auroc" in org["metrics"])

    acc, margin = _best_roc_attack(seen, ids, y, scores, part)
    assert margin <= 0, f"participant view recovers labels with accuracy {acc:.3f}, beyond chance"
    acc_o, _ = _best_roc_attack(org, ids, y, scores, part)
    assert acc_o == 1.0  # the organiser's full ROC names every label: the attack is real
    for name, data in seen["files"].items():  # the participant ROC has the fixed grid's size, whatever the scores
        if name.endswith(".csv") and b"fpr" in data.splitlines()[0]:
            assert len(data.splitlines()) == 12, name


# --------------------------------------------------------------------------- photo-z: z_spec off tables and plots


def test_photoz_redshifts_cannot_be_read_off_participant_artifacts(tmp_path, monkeypatch, root):
    from skybench.simulate import simulate_release

    project = _project(tmp_path / "p", monkeypatch, root, "photoz-catalog", {})
    release = simulate_release("photoz-catalog", tmp_path / "rel" / "photoz-catalog", profile="demo", seed=2,
                               size=300, progress=False)
    ids = open_release(release).meta("test")["id"].to_numpy()
    z_spec = open_release(release).hidden("test").meta().set_index("id").loc[ids, "z"].to_numpy()
    z_phot = 0.05 + 0.001 * np.random.default_rng(1).permutation(len(ids))  # distinct: a z_phot names an object
    sub = tmp_path / "subs" / "spy"
    sub.mkdir(parents=True)
    pd.DataFrame({"id": ids, "score": z_phot}).to_csv(sub / "zp.csv", index=False)
    (sub / "submission.yaml").write_text("team: eve\nname: spy\ntrack: photoz-catalog\nformat: predictions\n"
                                         "model: zp.csv\n")
    _run(project, "photoz-catalog", sub, release)

    seen = _view(project, "photoz-catalog", False, tmp_path / "dl-p")
    org = _view(project, "photoz-catalog", True, tmp_path / "dl-o")
    _assert_names(seen, org, {"zphot.csv", "zphot_vs_zspec.png", "dz_vs_zspec.png", "predictions.csv"})
    assert not [n for n in seen["files"] if n.endswith(".png")]  # photo-z plots are all built from z_spec
    # Any z_spec written anywhere (a table, a metric, a tag) would be matched here; aggregates never match.
    leaked = _matched(z_spec, _numbers(seen))
    assert leaked.sum() <= 1, f"{leaked.sum()} of {len(z_spec)} spectroscopic redshifts visible to participants"
    assert _matched(z_spec, _numbers(org)).all()  # the organiser's zphot.csv has them all: the attack is real
    assert "public_sigma_mad" in seen["metrics"] and "sigma_mad" not in seen["metrics"]  # open phase: public part


# --------------------------------------------------------------------------- enhance: truth off galleries and tables

WATERMARK = """
import numpy as np
def load(d):
    return None
def predict(m, batch):
    out = np.array(batch, dtype="float32")
    # a watermark naming the object: its input's total flux, written into a corner pixel of every band
    out[:, :, 0, 0] = batch.sum(axis=(1, 2, 3))[:, None]
    return out
"""


@pytest.mark.slow
def test_enhance_truth_cannot_be_read_off_participant_artifacts(tmp_path, monkeypatch, root):
    from matplotlib.image import imread

    from skybench.simulate import simulate_release

    project = _project(tmp_path / "p", monkeypatch, root, "enhance", {})
    # 40 test objects: a public part of 12, whose averages are no single object's value
    release = simulate_release("enhance", tmp_path / "rel" / "enhance", profile="demo", seed=2, size=40,
                               progress=False)
    _run(project, "enhance", python_submission(tmp_path / "subs", "spy", WATERMARK, team="eve", track="enhance"),
         release)
    seen = _view(project, "enhance", False, tmp_path / "dl-p")
    org = _view(project, "enhance", True, tmp_path / "dl-o")
    _assert_names(seen, org, {"gallery.png", "per_object.csv", "predictions.npy"})
    assert any(n.endswith("outputs.png") for n in seen["files"])  # a gallery, of the submission's own outputs

    # Per-object truth statistics: none of the organiser's per-object values is a number participants see.
    per = pd.read_csv(project / "results/enhance/private/eve+spy/per_object.csv").drop(columns="id")
    values = per.to_numpy(np.float64).ravel()
    values = values[np.isfinite(values) & (values != np.round(values))]
    assert values.size > 20 and not _matched(values, _numbers(seen)).any()
    assert _matched(values, _numbers(org)).all()

    # Images: the participant's files do not change when the truth does (same predictions, another truth),
    # so they carry nothing of it; the organiser's gallery does change.
    track = load_track("enhance")
    priv = project / "results/enhance/private/eve+spy"
    pred, ids = np.load(priv / "predictions.npy"), pd.read_csv(priv / "predictions_ids.csv")["id"].to_numpy()
    other = tmp_path / "other"
    shutil.copytree(release, other)
    for p in layout.shard_paths(layout.hidden_dir(other, "test"), "truth"):  # changed on purpose
        t = np.load(p)
        np.save(p, (np.roll(t, 1, axis=0) * 1.7 + 0.3).astype(t.dtype))
    meta = open_release(other).hidden("test").meta()
    meta[[c for c in meta.columns if c.startswith("sigma_truth_")]] *= 3.0
    meta.to_parquet(layout.meta_path(layout.hidden_dir(other, "test")))
    views = []
    for i, rel in enumerate((release, other)):
        full, shown = tmp_path / f"full{i}", tmp_path / f"shown{i}"
        metrics = score(track, ids, pred, open_release(rel).hidden(), full)
        write_participant_view(track, full, shown, metrics)
        views.append((full, shown))
    (full0, shown0), (full1, shown1) = views
    names = sorted(p.name for p in shown0.iterdir())
    assert names == sorted(p.name for p in shown1.iterdir()) and set(names) <= set(participant_artifacts(track))
    for name in names:
        if name.endswith(".png"):
            np.testing.assert_array_equal(imread(shown0 / name), imread(shown1 / name), err_msg=name)
        elif name != "metrics.json":
            assert (shown0 / name).read_bytes() == (shown1 / name).read_bytes(), name
    assert not np.array_equal(imread(full0 / "gallery.png"), imread(full1 / "gallery.png"))


def test_participant_roc_has_a_fixed_size_and_interpolates_the_curve():
    from skybench.tasks.lens.metrics import ROC_FPR_GRID, roc_curve, roc_on_grid

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    for scores in (rng.random(500), np.round(rng.random(500), 1), y + rng.random(500)):
        fpr, tpr = roc_on_grid(y, scores)
        assert len(fpr) == len(tpr) == len(ROC_FPR_GRID) and list(fpr) == list(ROC_FPR_GRID)
        assert np.all(np.diff(tpr) >= 0) and tpr[-1] == 1.0
        full_fpr, full_tpr, _ = roc_curve(y, scores)
        for f, t in zip(fpr, tpr, strict=True):  # between the curve's TPRs just left and right of f
            left = full_tpr[full_fpr <= f].max()
            right = full_tpr[full_fpr >= f].min()
            assert left - 1e-12 <= t <= max(left, right) + 1e-12
    fpr, tpr = roc_on_grid([0, 0, 1, 1], [0.1, 0.3, 0.2, 0.4])  # (0,.5) (.5,.5) (.5,1) (1,1)
    assert tpr[list(ROC_FPR_GRID).index(0.0)] == 0.5 and tpr[list(ROC_FPR_GRID).index(0.5)] == 1.0
    assert tpr[list(ROC_FPR_GRID).index(0.2)] == pytest.approx(0.5)


def test_organiser_experiment_keeps_its_artifacts_apart(tmp_path, monkeypatch):
    from skybench.tracking import ensure_experiment, ensure_organiser_experiment

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    c = MlflowClient(tracking_uri())
    part = c.get_experiment(ensure_experiment(experiment_name("lens-space"))).artifact_location
    org = c.get_experiment(ensure_organiser_experiment("lens-space")).artifact_location
    assert org != part and not org.startswith(part.rstrip("/") + "/") and org.endswith("-organiser")
    monkeypatch.setenv("SKYBENCH_ORGANISER_ARTIFACTS", str(tmp_path / "vault"))  # an organiser-only path
    org = c.get_experiment(ensure_organiser_experiment("lens-ground")).artifact_location
    assert org == (tmp_path / "vault" / "skybench-lens-ground-organiser").as_uri()


def test_publication_filters_a_record_folder_whatever_it_holds(tmp_path, monkeypatch, root):
    """A record folder written by an older skybench (full metrics, full ROC, predictions beside the record):
    the participant experiment still gets only the participant view."""
    from skybench.tracking.log import publish_record

    project = _project(tmp_path / "p", monkeypatch, root, "lens-space",
                       {"public_fraction": 0.3, "split_seed": 7, "phase": "open"})
    rdir = project / "results/lens-space/evaluations/eve+old"
    rdir.mkdir(parents=True)
    rec = {"team": "eve", "name": "old", "format": "predictions", "status": "FINISHED", "reason": "",
           "submission_sha256": "a" * 64, "release_sha256": "b" * 64, "real_release_sha256": "",
           "metrics": {"auroc": 0.9, "public_auroc": 0.8, "private_auroc": 0.95}}
    (rdir / "evaluation.json").write_text(json.dumps(rec))
    (rdir / "metrics.json").write_text(json.dumps(rec["metrics"]))
    for name in ("roc.csv", "predictions.csv"):
        (rdir / name).write_text("fpr,tpr\n0,0\n0,0.5\n1,1\n")
    assert publish_record(rdir)
    seen = _view(project, "lens-space", False, tmp_path / "dl")
    assert {Path(n).name for n in seen["files"] if n.startswith("mlflow/")} == {"evaluation.json", "metrics.json"}
    assert set(seen["metrics"]) - {"auroc", "private_auroc"} == {"public_auroc"}  # the disk copy is as it was
    c = MlflowClient(tracking_uri())
    [run] = c.search_runs([c.get_experiment_by_name(experiment_name("lens-space")).experiment_id])
    assert set(run.data.metrics) == {"public_auroc"}
    published = [json.loads(d) for n, d in seen["files"].items() if n.startswith("mlflow/")]
    assert all(set(p.get("metrics", p)) == {"public_auroc"} for p in published)
    [org] = c.search_runs([c.get_experiment_by_name(organiser_experiment("lens-space")).experiment_id])
    assert {"auroc", "private_auroc"} <= set(org.data.metrics)
