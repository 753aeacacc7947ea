"""Public/private leaderboard: a seeded split of the hidden test ids, public scores while open, private when closed."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import csv_submission, mlflow_store
from typer.testing import CliRunner

from skybench.cli import app
from skybench.harness.evaluate import evaluate
from skybench.harness.score import public_mask
from skybench.harness.visibility import SHOWN_DECIMALS, participant_view
from skybench.release import open_release
from skybench.tasks.lens.metrics import lens_metrics
from skybench.tracking import client, experiment_name, organiser_experiment
from skybench.tracking import leaderboard as lb
from skybench.tracks import load_track


@pytest.fixture
def project(tmp_path, monkeypatch, root):
    """A project root whose lens-space track has a 30% public part (seed 7), phase open."""
    (tmp_path / "benchmarks").mkdir()
    for f in (root / "benchmarks").glob("*.yaml"):
        shutil.copy(f, tmp_path / "benchmarks")
    spec = yaml.safe_load((root / "benchmarks/lens-space.yaml").read_text())
    spec["evaluation"] |= {"public_fraction": 0.3, "split_seed": 7, "phase": "open", "real_set": None}
    (tmp_path / "benchmarks/lens-space.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("SKYBENCH_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    return tmp_path


def test_split_is_seeded_and_the_phase_decides_what_ranks(project, tiny_space_release):
    track = load_track("lens-space")
    hidden = open_release(tiny_space_release).hidden("test").meta()
    ids, y = hidden["id"].to_numpy(), hidden["is_lens"].to_numpy()
    # The split, recomputed by hand: 30% of the sorted ids, drawn by a seed-7 permutation.
    chosen = np.sort(ids)[np.random.default_rng(7).permutation(len(ids))[:round(0.3 * len(ids))]]
    pub = np.isin(ids, chosen)
    assert pub.sum() == 19 and (public_mask(ids, ids, 0.3, 7) == pub).all()
    assert (public_mask(ids[::-1], ids, 0.3, 7) == pub[::-1]).all()  # order does not matter
    assert not (public_mask(ids, ids, 0.3, 8) == pub).all()  # the seed does

    noise = np.random.default_rng(0).random(len(ids))
    # "public-fit" is right on the public part only, "private-fit" on the private part only.
    subs = [csv_submission(project / "submissions" / "t" / "public-fit", "public-fit", ids, np.where(pub, y, noise),
                           team="t"),
            csv_submission(project / "submissions" / "t" / "private-fit", "private-fit", ids, np.where(pub, noise, y),
                           team="t")]
    outcomes = evaluate(subs, track, tiny_space_release, out=project / "evals")
    m = {o.name: o.metrics for o in outcomes}
    assert m["public-fit"]["public_auroc"] == 1.0 and m["private-fit"]["private_auroc"] == 1.0
    expect = lens_metrics(y[~pub], noise[~pub], seed=0)["auroc"]
    assert m["public-fit"]["private_auroc"] == pytest.approx(expect, abs=1e-12)
    # an interval of the public part is the public objects' own bootstrap: nothing of the private part in it
    want = lens_metrics(y[pub], noise[pub], seed=0)
    for k in ("auroc", "tpr0", "tpr10", "tpr_fpr1e-3"):
        got = (m["private-fit"][f"public_{k}_ci_low"], m["private-fit"][f"public_{k}_ci_high"])
        assert got == (want[f"{k}_ci_low"], want[f"{k}_ci_high"]), k

    board = lb.leaderboard(track)  # open: the public part ranks, and it is all that is shown
    assert list(board["name"]) == ["public-fit", "private-fit"]
    assert list(board["auroc"]) == [1.0, m["private-fit"]["public_auroc"]]
    result = CliRunner().invoke(app, ["leaderboard", "lens-space", "--format", "csv", "--all-releases"])
    assert result.exit_code == 0, result.output
    shown = pd.read_csv(__import__("io").StringIO(result.output))
    cols = [c for c in shown.columns if c in m["public-fit"]]
    assert "auroc" in cols and "auroc_ci_low" in cols and not any(c.startswith("private") for c in shown.columns)
    assert {"tpr0_ci_low", "tpr0_ci_high", "tpr10_ci_low", "tpr_fpr1e-3_ci_high"} <= set(cols)
    for _, row in shown.iterrows():  # every number shown is the public part's, none private or whole-set
        view = participant_view(track, m[row["name"]])  # ... and none of a stratum bin too small to show
        pub_m = {c: view.get(f"public_{c}", float("nan")) for c in cols}
        full = row[cols].astype(float).to_dict()  # the organiser's CSV: full precision; the view: rounded
        assert {k: round(v, SHOWN_DECIMALS) for k, v in full.items()} == pytest.approx(pub_m, nan_ok=True, abs=1e-12)
        assert row["auroc"] != m[row["name"]]["auroc"] and row["auroc"] != m[row["name"]]["private_auroc"]
    # both parts are in the organiser's MLflow experiment; participants' has the public part only while open
    exp = client().get_experiment_by_name(organiser_experiment("lens-space"))
    run = client().search_runs([exp.experiment_id])[0]
    assert {"public_auroc", "private_auroc", "private_auroc_ci_low", "auroc"} <= set(run.data.metrics)
    assert {"public_tpr0_ci_low", "private_tpr0_ci_high", "tpr10_ci_low"} <= set(run.data.metrics)
    exp = client().get_experiment_by_name(experiment_name("lens-space"))
    for run in client().search_runs([exp.experiment_id]):
        assert run.data.metrics and all(k.startswith("public_") for k in run.data.metrics)
        assert {"public_tpr0_ci_low", "public_tpr0_ci_high"} <= set(run.data.metrics)

    closed = track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"phase": "closed"})})
    final = lb.leaderboard(closed)
    assert list(final["name"]) == ["private-fit", "public-fit"] and final["auroc"].iloc[0] == 1.0
    lb.write_results(closed, project / "results")
    assert "private 70%" in (project / "results/leaderboard.md").read_text()
    # the final scores in full once closed; while open, every published number to SHOWN_DECIMALS
    assert participant_view(closed, m["public-fit"])["private_auroc"] == m["public-fit"]["private_auroc"]
    lb.write_results(track, project / "open")
    published = json.loads((project / "open/metrics.json").read_text())
    record = json.loads((outcomes[1].record / "metrics.json").read_text())
    mlflow_runs = client().search_runs([exp.experiment_id])
    for values in [*published.values(), record, *(r.data.metrics for r in mlflow_runs)]:
        floats = [v for v in values.values() if isinstance(v, float) and math.isfinite(v)]
        assert floats and all(v == round(v, SHOWN_DECIMALS) for v in floats), values
    assert any(v != round(v, SHOWN_DECIMALS) for v in m["private-fit"].values() if math.isfinite(v))


def test_real_set_metrics_are_split_too(project, tiny_space_release):
    """The real set has public and private parts of its own: no public metric depends on a private real object
    (else probing the open board with one real object's score at a time would give its label)."""
    from skybench.harness.score import score_real
    from skybench.release.reader import open_release
    from skybench.tasks.lens.score import real_lens_recall

    track = load_track("lens-space")
    hidden = open_release(tiny_space_release).hidden("test").meta()
    ids, y = hidden["id"].to_numpy(), hidden["is_lens"].to_numpy()
    scores = np.random.default_rng(1).random(len(ids)) + y
    split = open_release(tiny_space_release).hidden()
    real_ids = ids[:20]
    real = np.linspace(0.5, 1.5, 20)
    m = score_real(track, ids, scores, split, real_ids, real, split, project)
    pub = public_mask(ids, ids, 0.3, 7)
    real_pub = public_mask(real_ids, ids, 0.3, 7)  # the real set's own split (here: the same hidden ids)
    assert 0 < real_pub.sum() < len(real_ids)
    lens = split.truth(real_ids)["is_lens"].to_numpy() == 1  # the real set's lenses give the recall
    assert m["public_real_lens_recall"] == real_lens_recall(hidden[pub], scores[pub], real[lens & real_pub])
    assert m["private_real_lens_recall"] == real_lens_recall(hidden[~pub], scores[~pub], real[lens & ~real_pub])
    assert m["real_lens_recall"] == real_lens_recall(hidden, scores, real[lens])  # organiser only

    for j in np.flatnonzero(~real_pub):  # a private real object's score moves no public metric
        probe = real.copy()
        probe[j] = 100.0 if probe[j] < 1 else -100.0
        moved = score_real(track, ids, scores, split, real_ids, probe, split, project)
        assert {k: v for k, v in moved.items() if k.startswith("public_")} == pytest.approx(
            {k: v for k, v in m.items() if k.startswith("public_")}, nan_ok=True)


def test_tracks_that_share_test_objects_share_their_split(root, monkeypatch):
    """Tracks with the same test objects (one keyed population: photoz-images and photoz-catalog) or the same real
    set split them the same way; else an object private on one track would be public on the other's open board."""
    from skybench.simulate import object_domain
    from skybench.tracks import list_tracks

    monkeypatch.setenv("SKYBENCH_ROOT", str(root))
    seen: dict[str, tuple[str, tuple[object, ...]]] = {}
    shared = 0
    for name in list_tracks():
        track = load_track(name)
        split: tuple[object, ...] = (track.evaluation.public_fraction, track.evaluation.split_seed)
        try:
            domain = f"domain {object_domain(track)}"
        except ValueError:  # a real catalogue (photoz-sdss-mgs): imported, not simulated
            domain = f"domain {name} None"
        # the split draws from the whole test set: the same objects only if each profile has as many test objects
        sizes = tuple(sorted((p, v.test) for p, v in track.profiles.items()))
        for objects, split_here in ((domain, (*split, sizes)), (f"real set {track.evaluation.real_set}", split)):
            if objects.endswith(" None"):
                continue
            if objects in seen:
                shared += 1
                other, other_split = seen[objects]
                assert split_here == other_split, f"{name} and {other} share the {objects} but not its split"
            seen.setdefault(objects, (name, split_here))
    assert shared >= 3  # photoz-images/catalog, and two real sets shared by a track and its realsrc twin


def test_every_shipped_track_has_a_public_and_a_private_part(root, monkeypatch):
    """Without a split the open board shows the metrics the final board ranks on, so probing it acts on the final
    ranking (photo-z, enhance, injected and generate tracks had none before session 16)."""
    from skybench.tracks import list_tracks

    monkeypatch.setenv("SKYBENCH_ROOT", str(root))
    missing = [name for name in list_tracks() if load_track(name).evaluation.public_fraction is None]
    assert not missing, f"tracks without evaluation.public_fraction: {missing}"


def test_tracks_sharing_test_objects_refuse_releases_of_other_sizes(tmp_path, monkeypatch, root):
    """photoz-images and photoz-catalog draw the same galaxies (one key, seed and object domain), but the split
    is drawn from the whole test set: released with another --size, a galaxy public on one board is private on the
    other, so probing one open board names the other's private redshifts. Evaluating either then refuses to run;
    with the same size (or another seed: no shared galaxies) both evaluate, and their splits agree."""
    from skybench.harness.score import part_mask
    from skybench.release import ReleaseError
    from skybench.simulate import simulate_release

    (tmp_path / "benchmarks").mkdir()
    for f in (root / "benchmarks").glob("*.yaml"):
        shutil.copy(f, tmp_path / "benchmarks")
    monkeypatch.setenv("SKYBENCH_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    releases, key = tmp_path / "releases", {"profile": "challenge", "key_file": tmp_path / "test.key"}
    catalog = simulate_release("photoz-catalog", releases / "photoz-catalog", seed=5, size=40, progress=False, **key)
    images = simulate_release("photoz-images", releases / "photoz-images", seed=5, size=24, progress=False, **key)
    for track, release in (("photoz-catalog", catalog), ("photoz-images", images)):
        with pytest.raises(ReleaseError, match="same --size"):
            evaluate([], track, release, out=tmp_path / "out" / track)
    # A release sharing nothing (another seed) is no twin: evaluated as before.
    elsewhere = simulate_release("photoz-catalog", tmp_path / "other", seed=6, size=40, progress=False, **key)
    evaluate([], "photoz-catalog", elsewhere, out=tmp_path / "out" / "other")
    shutil.rmtree(images)
    images = simulate_release("photoz-images", releases / "photoz-images", seed=5, size=40, progress=False, **key)
    masks = {}
    for track, release in (("photoz-catalog", catalog), ("photoz-images", images)):
        evaluate([], track, release, out=tmp_path / "out" / track)
        hidden = open_release(release).hidden("test")
        masks[track] = pd.Series(part_mask(load_track(track), hidden, hidden.ids()), index=hidden.ids())
    pd.testing.assert_series_equal(masks["photoz-catalog"], masks["photoz-images"])


@pytest.mark.parametrize(("closed", "evaluated"), [
    ("lens-space-injected", "lens-space-injected"),  # evaluates lens-space's submissions, still coming in
    ("lens-space", "lens-space-realsrc"),  # one real set: lens-space's board shows its private real_* labels
    ("photoz-images", "photoz-catalog")])  # the same galaxies
def test_linked_tracks_must_share_their_yaml_phase(closed, evaluated, tmp_path, monkeypatch, root):
    """The git flow's phases are per track YAML: a closed track shows every submission's private scores, so a
    track linked to an open one (sharing its test objects or real set, or evaluating its submissions: also_from)
    would show private labels while submissions scored on them still come in. Evaluating is refused; an open
    lens-space beside a closed lens-space-injected it feeds is not (only the closed side's board reveals)."""
    from skybench.twins import check_linked_phases

    (tmp_path / "benchmarks").mkdir()
    for f in (root / "benchmarks").glob("*.yaml"):
        shutil.copy(f, tmp_path / "benchmarks")
    spec = yaml.safe_load((root / f"benchmarks/{closed}.yaml").read_text())
    spec["evaluation"]["phase"] = "closed"
    (tmp_path / f"benchmarks/{closed}.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("SKYBENCH_ROOT", str(tmp_path))
    with pytest.raises(ValueError, match="set `evaluation.phase` alike"):
        evaluate([], evaluated, tmp_path / "no-release", out=tmp_path / "out")
    for name in {closed, evaluated}:  # nor is its board printed (closing a phase is a leaderboard run alone)
        shown = CliRunner().invoke(app, ["leaderboard", name])
        assert shown.exit_code == 1 and "alike in both YAMLs" in shown.output, shown.output
    if closed == "lens-space-injected":
        check_linked_phases(load_track("lens-space"))  # the feeding track's own board is unaffected


def test_the_linked_phase_check_imports_no_simulator_while_every_track_is_in_one_phase(root):
    """Every track in one phase: nothing can be refused, so the check does not import the tasks' simulators
    (seconds of every `skybench evaluate` and `leaderboard`) to find which tracks are linked."""
    code = ("import sys\nfrom skybench.tracks import list_tracks, load_track\nfrom skybench.twins import "
            "check_linked_phases\nassert len({load_track(t).evaluation.phase for t in list_tracks()}) == 1\n"
            "check_linked_phases(load_track('photoz-images'))\n"
            "print(sorted(m for m in sys.modules if m.startswith('skybench.tasks.') and m.endswith('.simulator')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SKYBENCH_ROOT": str(root),
                               "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout


def test_a_track_yaml_that_is_not_yaml_stops_no_other_track(tmp_path, monkeypatch, root):
    """The linked-phase check loads every track YAML; one that does not parse (a draft being edited) is a track of
    its own objects, as one that does not validate, not a YAML error stopping every other track's evaluation."""
    from skybench.twins import check_linked_phases

    (tmp_path / "benchmarks").mkdir()
    for f in (root / "benchmarks").glob("*.yaml"):
        shutil.copy(f, tmp_path / "benchmarks")
    (tmp_path / "benchmarks/draft.yaml").write_text("task: lens\nname: draft\n  oops: [\n")
    monkeypatch.setenv("SKYBENCH_ROOT", str(tmp_path))
    check_linked_phases(load_track("lens-space"))
    with pytest.raises(ValueError, match="draft.yaml: not valid YAML"):
        load_track("draft")
