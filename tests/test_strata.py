"""Stratified scoring (the track YAML's ``strata:``): per-bin metrics against hand-computed values, the YAML's
validation, ``skybench leaderboard TRACK --by COLUMN``, the small-multiples plot, and what participants see."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from scipy.stats import binomtest
from typer.testing import CliRunner

from skybench import tracking
from skybench.cli import app
from skybench.common import stratum_labels, stratum_masks
from skybench.harness.score import public_mask, score
from skybench.harness.visibility import MIN_STRATUM_OBJECTS, participant_view, without_small_strata
from skybench.release import layout
from skybench.release.reader import HiddenSplit
from skybench.tasks.enhance.score import stratified_images
from skybench.tasks.lens.score import score_lens, stratified_lens
from skybench.tasks.photoz.metrics import pdf_grid
from skybench.tasks.photoz.score import stratified_photoz
from skybench.tracking import leaderboard as lb
from skybench.tracks import Stratum, Track, load_track

THETA = Stratum(column="lens_theta_E", edges=[0.4, 0.8, 1.2], metric="tpr_fpr1")
CONTAMINANT = Stratum(column="contaminant", values=["ring", "arclet", "companion", "several", "none"],
                      metric="fpr_fpr1")


def _lens_table() -> tuple[pd.DataFrame, np.ndarray]:
    """100 non-lenses (scores 0 .. 0.5, one ring galaxy at 0.95) and 6 lenses in two theta_E bins.

    At FPR <= 1% one false positive is allowed, so the threshold is the lowest score above 0.5 (0.6); before the
    first false positive it is the lowest lens score above 0.95 (0.96)."""
    non = np.linspace(0.0, 0.5, 100)
    non[0] = 0.95
    lens = np.array([0.99, 0.9, 0.6, 0.2, 0.96, 0.4])
    n = len(non) + len(lens)
    truth = pd.DataFrame({
        "is_lens": np.r_[np.zeros(100, int), np.ones(6, int)],
        "lens_theta_E": np.r_[np.full(100, np.nan), [0.5, 0.6, 0.7, 0.8 - 1e-9, 1.2, 0.9]],  # 1.2: the closed end
        "arc_snr": np.r_[np.full(100, np.nan), [5.0, 15, 25, 50, 100, 200]],
        "has_ring": np.zeros(n, bool), "has_arclet": np.zeros(n, bool), "has_companion": np.zeros(n, bool),
    })
    truth.loc[[0, 10, 20, 30, 60], "has_ring"] = True  # the 0.95 non-lens and four low-scored ones
    truth.loc[[60], "has_companion"] = True  # with its ring: in neither bin, in "several"
    truth.loc[[40, 50], "has_arclet"] = True
    return truth, np.r_[non, lens]


def test_lens_strata_equal_hand_computed_values() -> None:
    truth, scores = _lens_table()
    m = stratified_lens(truth, truth["is_lens"].to_numpy(), scores, [THETA, CONTAMINANT])
    # theta_E in [0.4, 0.8): lenses 0.99, 0.9, 0.6, 0.2 -> 3 of 4 at >= 0.6, 1 of 4 at >= 0.96
    assert m["by_lens_theta_E_0.4-0.8_tpr_fpr1"] == 0.75
    assert m["by_lens_theta_E_0.4-0.8_tpr0"] == 0.25
    assert m["by_lens_theta_E_0.4-0.8_n_lens"] == 4
    # [0.8, 1.2], closed: 0.96 and 0.4 -> 1 of 2 at both thresholds
    assert m["by_lens_theta_E_0.8-1.2_tpr_fpr1"] == 0.5
    assert m["by_lens_theta_E_0.8-1.2_tpr0"] == 0.5
    assert m["by_lens_theta_E_0.8-1.2_n_lens"] == 2
    assert m["by_lens_theta_E_0.4-0.8_n_nonlens"] == 0 and "by_lens_theta_E_0.4-0.8_fpr_fpr1" not in m  # NaN theta
    # contaminants among non-lenses (exclusive bins): ring alone 1 of 4 above 0.6, ring and companion (several) 0 of
    # 1, companion alone none, arclet 0 of 2, none: the other 93, none above
    assert m["by_contaminant_ring_fpr_fpr1"] == 0.25 and m["by_contaminant_ring_n_nonlens"] == 4
    assert m["by_contaminant_several_fpr_fpr1"] == 0.0 and m["by_contaminant_several_n_nonlens"] == 1
    assert m.get("by_contaminant_companion_n_nonlens", 0) == 0 and "by_contaminant_companion_fpr_fpr1" not in m
    assert m["by_contaminant_arclet_fpr_fpr1"] == 0.0 and m["by_contaminant_arclet_n_nonlens"] == 2
    assert m["by_contaminant_none_fpr_fpr1"] == 0.0 and m["by_contaminant_none_n_nonlens"] == 93
    assert m["by_contaminant_none_tpr_fpr1"] == pytest.approx(4 / 6)  # every lens is clean
    for key in ("by_lens_theta_E_0.4-0.8_tpr_fpr1", "by_lens_theta_E_0.8-1.2_tpr_fpr1",
                "by_contaminant_ring_fpr_fpr1"):
        assert 0 <= m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"] <= 1
        assert m[f"{key}_ci_low"] < m[f"{key}_ci_high"]  # a bin of a few objects: a wide interval
    # 0 of 93 and 0 of 2: the Wilson interval [0, high] (a bootstrap of a 0/1 mean was [0, 0] whatever n)
    for key, n in (("by_contaminant_none_fpr_fpr1", 93), ("by_contaminant_arclet_fpr_fpr1", 2)):
        want = binomtest(0, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert m[f"{key}_ci_low"] == 0.0 and m[f"{key}_ci_high"] == pytest.approx(want.high, abs=1e-12)
        assert m[f"{key}_ci_high"] > 0.03


def test_lens_scorer_reports_the_track_strata(tmp_path: Path) -> None:
    truth, scores = _lens_table()
    m = score_lens(truth, scores, tmp_path, strata=[THETA])
    assert m["by_lens_theta_E_0.4-0.8_tpr_fpr1"] == 0.75 and "auroc" in m
    assert not any(k.startswith("by_contaminant") for k in m)


def test_numeric_bins_are_half_open_and_the_last_closed() -> None:
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, np.nan])
    bins = dict(stratum_masks([0.0, 1.0, 2.0], None, x))
    assert list(bins) == ["0-1", "1-2"]
    assert bins["0-1"].tolist() == [True, True, False, False, False, False, False]
    assert bins["1-2"].tolist() == [False, False, True, True, True, False, False]


def test_photoz_strata_and_local_pit_equal_hand_computed_values(tmp_path: Path) -> None:
    track = load_track("photoz-catalog")
    centres, edges = pdf_grid(track.output.grid)
    # bright bin [10, 15.5): dz = 0, +0.01, -0.01 -> sigma_MAD = 1.4826 * 0.01; faint [15.5, 16.5): one outlier of 4
    z = np.array([0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2])
    dz = np.array([0.0, 0.01, -0.01, 0.1, 0.0, 0.0, 0.0])
    z_phot = z + dz * (1 + z)
    table = pd.DataFrame({"mag_r": [12.0, 14.0, 15.0, 15.5, 16.0, 16.0, 16.5]})
    strata = [Stratum(column="mag_r", edges=[10.0, 15.5, 16.5], metric="sigma_mad")]
    m = stratified_photoz(track.model_copy(update={"strata": strata}), table, z, z_phot, tmp_path)
    assert m["by_mag_r_10-15.5_sigma_mad"] == pytest.approx(1.4826 * 0.01)
    assert m["by_mag_r_10-15.5_n_objects"] == 3 and m["by_mag_r_15.5-16.5_n_objects"] == 4
    assert m["by_mag_r_15.5-16.5_outlier_frac"] == 0.25
    assert m["by_mag_r_15.5-16.5_bias_mean"] == pytest.approx(0.1 / 4)
    assert m["by_mag_r_10-15.5_sigma_mad_ci_low"] <= m["by_mag_r_10-15.5_sigma_mad"]

    # PDFs: the bright galaxies' PDFs put all mass below z_spec (PIT 1: KS 1); the faint ones' straddle it
    # (z_spec at the middle of a bin holding all the mass: PIT 0.5, KS 0.5)
    pdf = np.zeros((len(z), len(centres)))
    k = np.searchsorted(edges, 0.2) - 1  # the bin holding z = 0.2
    pdf[:3, 0] = 1.0
    pdf[3:, k] = 1.0
    z_pdf = np.r_[z[:3], np.full(4, (edges[k] + edges[k + 1]) / 2)]
    strata = [Stratum(column="z", edges=[0.0, 0.15, 0.4], metric="pit_ks")]
    m = stratified_photoz(track.model_copy(update={"strata": strata}), pd.DataFrame(index=range(7)), z_pdf, pdf,
                          tmp_path)
    assert m["by_z_0-0.15_pit_ks"] == pytest.approx(1.0)
    assert m["by_z_0.15-0.4_pit_ks"] == pytest.approx(0.5)
    hist = pd.read_csv(tmp_path / "pit_strata.csv")
    assert hist.groupby("bin")["count"].sum().to_dict() == {"0-0.15": 3, "0.15-0.4": 4}
    assert (tmp_path / "pit_strata.png").stat().st_size > 0


def test_enhance_strata_are_means_per_bin() -> None:
    track = load_track("enhance")
    meta = pd.DataFrame({"mag_r": [14.0, 14.2, 16.5, 15.0], "type": ["spiral", "elliptical", "spiral", "irregular"]})
    per = {"psnr": np.array([30.0, 20.0, 10.0, 40.0])}
    strata = [Stratum(column="mag_r", edges=[14.0, 15.0, 16.5], metric="psnr"),
              Stratum(column="type", values=["elliptical", "spiral", "irregular"], metric="psnr")]
    m = stratified_images(track.model_copy(update={"strata": strata}), meta, per)
    assert m["by_mag_r_14-15_psnr"] == 25.0 and m["by_mag_r_15-16.5_psnr"] == 25.0  # 15.0 and the closed end 16.5
    assert m["by_type_spiral_psnr"] == 20.0 and m["by_type_spiral_n_objects"] == 2
    assert m["by_type_elliptical_psnr"] == 20.0
    assert m["by_mag_r_14-15_psnr_ci_low"] <= 25.0 <= m["by_mag_r_14-15_psnr_ci_high"]


# --------------------------------------------------------------------------- YAML validation


def _track_file(tmp_path: Path, root: Path, strata: list[dict]) -> Path:
    raw = yaml.safe_load((root / "benchmarks" / "lens-space.yaml").read_text())
    raw["strata"] = strata
    path = tmp_path / "lens-custom.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("strata", "says"), [
    ([{"column": "lens_theta_e", "edges": [0.4, 1.0], "metric": "tpr_fpr1"}],
     ["strata[0]", "unknown column 'lens_theta_e'", "lens_theta_E"]),
    ([{"column": "lens_theta_E", "edges": [0.4, 1.2, 0.8], "metric": "tpr_fpr1"}],
     ["strata", "'lens_theta_E'", "strictly increasing", "edge 2 = 0.8 after 1.2"]),
    ([{"column": "arc_snr", "edges": [0, 10], "metric": "auroc"}], ["strata[0]", "unknown metric 'auroc'"]),
    ([{"column": "contaminant", "values": ["ring", "spiral"], "metric": "fpr_fpr1"}],
     ["strata[0]", "'contaminant'", "arclet"]),
    ([{"column": "arc_snr", "metric": "tpr_fpr1"}], ["'arc_snr'", "either edges"]),
    ([{"column": "contaminant", "values": ["ring", "ring/arclet"], "metric": "fpr_fpr1"}],
     ["'contaminant'", "'ring/arclet'", "MLflow metric name"]),
    ([{"column": "arc_snr", "edges": [1.0000001, 1.0000002, 1.0000003], "metric": "tpr_fpr1"}],
     ["'arc_snr'", "same name"]),
])
def test_invalid_strata_say_what_and_where(tmp_path: Path, root: Path, strata: list[dict], says: list[str]) -> None:
    path = _track_file(tmp_path, root, strata)
    with pytest.raises(ValueError) as err:
        load_track(path)
    assert str(path) in str(err.value)
    for text in says:
        assert text in str(err.value)


def test_every_track_declares_strata() -> None:
    for name in ("lens-space", "lens-ground", "photoz-catalog", "photoz-images", "photoz-sdss-mgs", "enhance"):
        assert load_track(name).strata, name
    lens = load_track("lens-space")
    assert {s.column for s in lens.strata} >= {"lens_theta_E", "arc_snr", "contaminant"}
    assert "by_contaminant_ring_fpr_fpr1" in lb.columns(lens)  # the ring false-positive rate is a column


# --------------------------------------------------------------------------- participant view


def test_participant_record_carries_only_public_part_strata(tmp_path: Path) -> None:
    truth, scores = _lens_table()
    truth.insert(0, "id", np.arange(len(truth)))
    folder = tmp_path / "hidden"
    folder.mkdir()
    truth.to_parquet(layout.meta_path(folder))
    track = load_track("lens-space")
    track = track.model_copy(update={"strata": [THETA, CONTAMINANT], "evaluation": track.evaluation.model_copy(
        update={"public_fraction": 0.5, "phase": "open", "split_seed": 3})})
    ids = truth["id"].to_numpy()
    metrics = score(track, ids, scores, HiddenSplit(folder), tmp_path / "out")
    shown = participant_view(track, metrics)
    strata_shown = [k for k in shown if "by_" in k]
    assert strata_shown and all(k.startswith("public_by_") for k in strata_shown)
    assert any(k.startswith("by_") for k in metrics) and any(k.startswith("private_by_") for k in metrics)
    # the public values are those of the public part alone
    pub = public_mask(ids, ids, 0.5, 3)
    expected = stratified_lens(truth[pub], truth["is_lens"].to_numpy()[pub], scores[pub], [THETA, CONTAMINANT])
    got = {k.removeprefix("public_"): v for k, v in shown.items() if "by_" in k}
    assert got and got == pytest.approx({k: expected[k] for k in got})
    # bins with fewer than MIN_STRATUM_OBJECTS lenses or non-lenses are left out whole, the others kept whole
    bins = {k.rsplit("_n_", 1)[0] for k in expected if "_n_" in k}
    for b in bins:
        counts = [v for k, v in expected.items() if k.startswith(f"{b}_n_")]
        kept = [k for k in got if k.startswith(f"{b}_")]
        small = any(0 < c < MIN_STRATUM_OBJECTS for c in counts)
        assert (kept == []) if small else (sorted(kept) == sorted(k for k in expected if k.startswith(f"{b}_")))
    assert len({k.rsplit("_n_", 1)[0] for k in got if "_n_" in k}) < len(bins)  # some bins here are small


def test_small_strata_bins_are_left_out_of_the_participant_view() -> None:
    track = load_track("enhance")
    track = track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"public_fraction": None})})
    big, one, more = "by_type_spiral_", "by_type_elliptical_", "by_type_irregular_"
    metrics = {"psnr": 30.0, f"{big}n_objects": MIN_STRATUM_OBJECTS, f"{big}psnr": 31.0,
               f"{one}n_objects": 1, f"{one}psnr": 27.123456,  # one object: its own PSNR
               f"{more}n_objects": MIN_STRATUM_OBJECTS + 2, f"{more}psnr": 29.0}
    shown = participant_view(track, metrics)
    # the smallest big bin goes too: the part's mean less the other bins' would be the lone object's PSNR
    assert shown == {"psnr": 30.0, f"{more}n_objects": MIN_STRATUM_OBJECTS + 2, f"{more}psnr": 29.0}
    assert participant_view(track, {f"{one}psnr": 27.0}) == {}  # a bin without its count is not shown either
    for real in ("real_", "public_real_"):  # a real set's bins too (real strata are scored like the rest)
        assert without_small_strata(track, {f"{real}{one}n_objects": 1, f"{real}{one}psnr": 27.1}) == {}


def test_a_hidden_stratum_bin_is_not_the_part_less_the_bins_shown(tmp_path: Path) -> None:
    """Small-cell suppression needs complementary suppression: with the part's mean and count shown, the bins
    shown give the rest by difference (sum over the part less the sums over the bins shown). A photo-z track with
    one z_spec bin of 2 objects (its high-z tail) named their mean dz, outlier fraction and CRPS exactly."""
    z = np.r_[np.full(20, 0.02), np.full(20, 0.07), np.full(12, 0.12), np.full(12, 0.17), [0.25, 0.28]]
    n = len(z)
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"id": np.arange(n), "z": z, "mag_r": rng.uniform(16.6, 17.9, n)})
    folder = tmp_path / "hidden"
    folder.mkdir()
    table.to_parquet(layout.meta_path(folder))
    track = load_track("photoz-catalog")
    track = track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"public_fraction": None})})
    z_phot = np.clip(z + rng.normal(0, 0.03, n), 0.002, 0.398)
    metrics = score(track, table["id"].to_numpy(), z_phot, HiddenSplit(folder), tmp_path / "out")
    assert metrics["by_z_0.2-0.3_n_objects"] == 2  # the small bin is there, for the organiser
    shown = participant_view(track, metrics)
    assert "by_z_0.2-0.3_bias_mean" not in shown and shown["n_objects"] == n
    for s in track.strata:
        sizes = {b: shown[f"by_{s.column}_{b}_n_objects"] for b in stratum_labels(s.edges, s.values)
                 if f"by_{s.column}_{b}_n_objects" in shown}
        rest = n - sum(sizes.values())
        assert rest == 0 or rest >= MIN_STRATUM_OBJECTS, (s.column, sizes)


def test_bins_that_overlap_do_not_show_the_objects_counted_twice() -> None:
    """The contaminant bins overlapped once (an object counted in each contaminant it had): with every bin shown, their
    counts less the part's gave the few objects with two contaminants as a group of their own (2 lenses here,
    their found count decoded exactly as a team demoted them); a hidden bin and the objects counted twice could
    also offset each other. The bins are exclusive now (``several``), and the complement rule holds for them."""
    from skybench.tasks.lens.score import stratified_lens

    track = load_track("lens-space")
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(60, int), np.zeros(120, int)]
    flags = {c: np.zeros(len(y), bool) for c in ("has_ring", "has_arclet", "has_companion")}
    flags["has_ring"][0:12] = flags["has_arclet"][10:24] = flags["has_companion"][30:42] = True  # 10, 11: two
    flags["has_ring"][60:75] = flags["has_arclet"][75:90] = flags["has_companion"][90:105] = True
    truth = pd.DataFrame({"is_lens": y, **flags, "lens_theta_E": rng.uniform(0.4, 2.0, len(y)),
                          "arc_snr": rng.uniform(1, 100, len(y)), "lens_light_mag_VIS": rng.uniform(18.5, 22, len(y))})
    scores = rng.random(len(y)) * 0.5 + 0.5 * y
    metrics = stratified_lens(truth, y, scores, track.strata) | {"n_lens": 60, "n_nonlens": 120}
    shown = participant_view(track, {f"public_{k}": v for k, v in metrics.items()})
    kinds = ("ring", "arclet", "companion", "several", "none")
    assert sum(metrics[f"by_contaminant_{b}_n_lens"] for b in kinds) == 60  # each lens in one bin
    bins = [b for b in kinds if f"public_by_contaminant_{b}_n_lens" in shown]
    rest = 60 - sum(shown[f"public_by_contaminant_{b}_n_lens"] for b in bins)  # the lenses in no bin shown
    assert rest == 0 or rest >= MIN_STRATUM_OBJECTS, (bins, rest)


# --------------------------------------------------------------------------- leaderboard --by, small multiples

REL = "s" * 64


def _log(track: Track, name: str, tpr: list[float], ring_nonlenses: int = 20) -> None:
    time.sleep(0.005)
    prefix = lb.metric_prefix(track)
    keys = lb.by_columns(track, "lens_theta_E")
    counts = {f"{prefix}{k.removesuffix('tpr_fpr1')}{n}": 20 for k in keys for n in ("n_lens", "n_nonlens")}
    ring = f"{prefix}by_contaminant_ring_"
    metrics = {f"{prefix}auroc": 0.9 + tpr[0] / 100, f"{ring}fpr_fpr1": 0.02, f"{ring}n_nonlens": ring_nonlenses,
               f"{ring}n_lens": 20, **counts,
               **{f"{prefix}{k}": v for k, v in zip(keys, tpr, strict=True)},
               **{f"{prefix}{k}_ci_low": v - 0.05 for k, v in zip(keys, tpr, strict=True)},
               **{f"{prefix}{k}_ci_high": v + 0.05 for k, v in zip(keys, tpr, strict=True)}}
    tracking.log_evaluation(track.name, team="t", name=name, fmt="onnx", status="FINISHED", metrics=metrics,
                            tags={"submission_sha256": name.ljust(64, "0"), "release_sha256": REL})


def test_leaderboard_by_prints_one_column_per_bin(store: str) -> None:
    track = load_track("lens-space")
    _log(track, "resnet", [0.2, 0.5, 0.7, 0.8])
    _log(track, "cnn", [0.1, 0.3, 0.6, 0.65])
    out = CliRunner().invoke(app, ["leaderboard", "lens-space", "--by", "lens_theta_E", "--format", "csv",
                                   "--all-releases"])
    assert out.exit_code == 0, out.output
    board = pd.read_csv(pd.io.common.StringIO(out.output))
    bins = ["tpr_fpr1[0.4-0.8]", "tpr_fpr1[0.8-1.2]", "tpr_fpr1[1.2-1.6]", "tpr_fpr1[1.6-2]"]
    assert [c for c in board.columns if c.startswith("tpr_fpr1[")] == bins
    assert board.set_index("name").loc["resnet", bins].tolist() == [0.2, 0.5, 0.7, 0.8]
    assert board["name"].tolist() == ["resnet", "cnn"]
    table = CliRunner().invoke(app, ["leaderboard", "lens-space", "--all-releases", "--columns",
                                      "name,auroc,by_contaminant_ring_fpr_fpr1"])
    assert "by_contaminant_ring_fpr_fpr1" in table.output and "0.0200" in table.output
    bad = CliRunner().invoke(app, ["leaderboard", "lens-space", "--by", "nope", "--all-releases"])
    assert bad.exit_code != 0 and "no stratum 'nope'" in bad.output and "lens_theta_E" in bad.output
    bad = CliRunner().invoke(app, ["leaderboard", "lens-space", "--by", "arc_snr", "--metric", "auroc",
                                   "--all-releases"])
    assert bad.exit_code != 0 and "no per-bin metric 'auroc'" in bad.output


def test_the_leaderboard_never_shows_a_stratum_bin_the_participant_view_hides(store: str) -> None:
    """The board reads the organiser experiment, which keeps every stratum bin, and is published (the server's
    track page and API, ``leaderboard --write``): a report column such as lens-space's ``by_contaminant_ring_fpr_fpr1``
    of a bin with fewer than MIN_STRATUM_OBJECTS objects (a handful of ring non-lenses: whether each scored above
    the cut) must be blank there as in the participant record."""
    track = load_track("lens-space")
    _log(track, "few", [0.2, 0.5, 0.7, 0.8], ring_nonlenses=MIN_STRATUM_OBJECTS - 1)
    _log(track, "many", [0.1, 0.3, 0.6, 0.65], ring_nonlenses=MIN_STRATUM_OBJECTS)
    board = lb.leaderboard(track).set_index("name")
    ring = "by_contaminant_ring_fpr_fpr1"
    assert math.isnan(board.loc["few", ring]) and board.loc["many", ring] == 0.02
    assert board.loc["few", "auroc"] == pytest.approx(0.902)  # the rest of the row stays
    by = lb.by_leaderboard(track, "contaminant").set_index("name")
    assert math.isnan(by.loc["few", "fpr_fpr1[ring]"]) and by.loc["many", "fpr_fpr1[ring]"] == 0.02


def test_small_multiples_plot_in_html_and_mlflow(store: str, tmp_path: Path) -> None:
    track = load_track("lens-space")
    assert lb.plot_strata(track, tmp_path / "empty.png") is None  # no entries: no plot
    _log(track, "resnet", [0.2, 0.5, 0.7, 0.8])
    png = lb.plot_strata(track, tmp_path / "strata.png")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
    assert lb.plot_strata(track, tmp_path / "again.png").read_bytes() == png.read_bytes()  # type: ignore[union-attr]
    html = CliRunner().invoke(app, ["leaderboard", "lens-space", "--format", "html", "--all-releases"]).output
    assert "<table" in html and 'src="data:image/png;base64,' in html
    first = lb.log_strata_plot(track, png, release_sha256=REL)
    assert lb.log_strata_plot(track, png, release_sha256=REL) == first  # one run per (track, release)
    c = MlflowClient(tracking_uri=store)
    assert [a.path for a in c.list_artifacts(first)] == ["strata.png"]
    assert lb.leaderboard(track)["name"].tolist() == ["resnet"]  # the plot's run is no entry
    assert math.isclose(lb.by_leaderboard(track, "lens_theta_E")["tpr_fpr1[1.6-2]"].iloc[0], 0.8)
