"""The public/private split of the generate tracks (``wl-maps``, ``wl-maps-conditional``): each part is scored
against its own hidden truth maps, so no public metric depends on a private map (probing the open board tells
nothing about the maps that rank the final one); the whole set still against every map; the conditional split
keeps every grid point's share in each part; rank intervals resample the part against the part's maps.

Demo-size releases of the tracks as configured (their YAML's split), a generator of the truth process (maps of
the same simulator at other seeds), and a copy of each release whose private truth maps are replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

pytest.importorskip("pyccl")

from skybench.harness.score import part_mask, public_mask  # noqa: E402
from skybench.harness.score import score as harness_score  # noqa: E402
from skybench.release import layout  # noqa: E402
from skybench.release.reader import open_release  # noqa: E402
from skybench.simulate import simulate_release  # noqa: E402
from skybench.tasks.generate import score as S  # noqa: E402
from skybench.tasks.generate.config import MIN_MAPS_PER_POINT, GenerateTrack  # noqa: E402
from skybench.tasks.generate.simulator import MapSimulator  # noqa: E402
from skybench.tracking import ranks  # noqa: E402
from skybench.tracks import benchmarks_dir  # noqa: E402


def track_of(name: str) -> GenerateTrack:
    return GenerateTrack.model_validate(yaml.safe_load((benchmarks_dir() / f"{name}.yaml").read_text()))


def truth_process(track: GenerateTrack, ids: np.ndarray) -> np.ndarray:
    """Maps (N, 1, H, W) of the truth process at each id's grid point, from seeds no release uses."""
    pop = track.population
    out = np.empty((len(ids), 1, pop.n_pix, pop.n_pix), np.float32)
    points = pop.point_of(ids)
    for p in range(pop.n_points):
        rows = np.flatnonzero(points == p)
        if len(rows):
            out[rows] = MapSimulator(pop.at_point(p), "numpy").simulate(list(10**6 + ids[rows]))
    return out


def with_private_maps_replaced(track: GenerateTrack, release: Path, dest: Path) -> Path:
    """A copy of ``release`` whose private hidden test maps are another process's (twice the contrast)."""
    shutil.copytree(release, dest)
    truth = open_release(dest).hidden("test")
    mask = part_mask(track, truth, truth.ids())
    assert mask is not None
    private, start = ~mask, 0
    for path in layout.shard_paths(truth.folder, "maps"):
        shard = np.load(path, mmap_mode="r+")
        rows = private[start:start + len(shard)]
        shard[rows] = 2 * shard[rows]
        shard.flush()
        start += len(shard)
    assert start == len(private)
    return dest


class Case:
    """A demo-size release of a track, a copy with other private maps, and the truth process's scores on both."""

    def __init__(self, name: str, folder: Path):
        self.track = track_of(name)
        self.release = simulate_release(self.track, folder / name, seed=6, progress=False, workers=1,
                                        backend="numpy")
        self.changed = with_private_maps_replaced(self.track, self.release, folder / f"{name}-changed")
        self.truth = open_release(self.release).hidden("test")
        self.ids = self.truth.ids()
        self.gen = truth_process(self.track, self.ids)
        self.metrics = harness_score(self.track, self.ids, self.gen, self.truth, folder / "out")
        self.metrics_changed = harness_score(self.track, self.ids, self.gen, open_release(self.changed).hidden("test"),
                                             folder / "out-changed")
        mask = part_mask(self.track, self.truth, self.ids)
        assert mask is not None
        self.public = mask


@pytest.fixture(scope="module", params=["wl-maps", "wl-maps-conditional"])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    return Case(request.param, tmp_path_factory.mktemp("split"))


def test_the_tracks_have_a_split_open_at_their_demo_size(case: Case):
    ev = case.track.evaluation
    assert ev.public_fraction is not None and ev.phase == "open"
    n = len(case.ids)
    assert n == case.track.profiles["demo"].test
    assert case.public.sum() == pytest.approx(ev.public_fraction * n, abs=case.track.population.n_points)


def test_a_public_metric_depends_on_no_private_truth_map(case: Case):
    m, moved = case.metrics, case.metrics_changed
    public = {k: v for k, v in m.items() if k.startswith("public_")}
    assert "public_chi2_per_dof" in public and "public_chi2_per_dof_ci_low" in public
    assert {k: v for k, v in moved.items() if k.startswith("public_")} == public  # bit for bit
    # the private part and the whole set do see the private maps: the truth process fits them no longer
    assert moved["private_chi2_per_dof"] > 10 * m["private_chi2_per_dof"], (m, moved)
    assert moved["chi2_per_dof"] > 5 * m["chi2_per_dof"]


def test_each_part_is_scored_against_its_own_maps_and_the_whole_set_against_all(case: Case):
    track, truth, ids, gen, m = case.track, case.truth, case.ids, case.gen, case.metrics
    maps = np.asarray(truth.array("maps")[:])
    for part, rows in (("public", case.public), ("private", ~case.public)):
        if track.population.grid is None:
            train = S._train_maps(truth)
            ref = S.Reference.from_maps(track, maps[rows])  # a release holding only this part's maps
            want = S.score_maps(track, ids[rows], gen[rows], truth, train, ref)
        else:
            public = S.public_of(truth)
            grid = S.GridReference.of(track, truth, public, ids[rows])
            np.testing.assert_array_equal(grid.truth_points, track.population.point_of(ids[rows]))
            want = S.score_grid(track, ids[rows], gen[rows], truth, grid)
        assert {k: m[f"{part}_{k}"] for k in want} == want
    # the whole set: every map (what it was before the split)
    whole = S.score(track, ids, gen, truth, None)
    assert {k: m[k] for k in whole} == whole
    if track.population.grid is None:
        ref = S.Reference.from_maps(track, maps)
        assert S.score_maps(track, ids, gen, truth, S._train_maps(truth), ref) == whole
    else:
        grid = S.GridReference.of(track, truth, S.public_of(truth), ids)
        assert grid.refs is not None and sum(len(r.maps) for r in grid.refs) == len(maps)


def test_the_truth_process_scores_near_one_on_each_part(case: Case):
    m = case.metrics
    for part in ("public", "private", None):
        key = "chi2_per_dof" if part is None else f"{part}_chi2_per_dof"
        assert 0.3 < m[key] < 3, (key, m[key])
        flags = ("memorised", "collapsed") if part is None else (f"{part}_memorised", f"{part}_collapsed")
        assert not any(m[f] for f in flags), m
    if case.track.population.grid is not None:
        assert m["public_n_points_scored"] == m["private_n_points_scored"] == 9


def test_rank_intervals_resample_the_part_against_its_maps(case: Case):
    track, truth, ids = case.track, case.truth, case.ids
    worse = 1.2 * case.gen  # a generator of too much contrast
    entries = {"truth-process": (ids, case.gen), "worse": (ids[::-1], worse[::-1])}
    rng = np.random.default_rng(1)
    for phase, part in (("open", "public"), ("closed", "private")):
        t = track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"phase": phase})})
        part_ids = ranks.part_ids(t, truth)
        np.testing.assert_array_equal(part_ids, np.sort(ids[case.public if part == "public" else ~case.public]))
        indices = rng.integers(0, len(part_ids), (20, len(part_ids)))
        point, values = ranks.primary_resamples(t, truth, entries, indices)
        assert point[0] == pytest.approx(case.metrics[f"{part}_chi2_per_dof"], rel=1e-12)
        assert np.isfinite(values).all() and (values[1] > values[0]).mean() > 0.9
        table = ranks.rank_intervals(values, track.metrics.higher_is_better, order=[0, 1])
        assert list(table["rank_low"]) == [1, 2] and list(table["rank_high"]) == [1, 2]
        assert list(table["group"]) == ["A", "B"]
        # a resample is scored against the part's maps, not its own draw's
        rows = indices[0]
        pos = {v: i for i, v in enumerate(ids.tolist())}
        gen = case.gen[[pos[i] for i in part_ids.tolist()]]
        if track.population.grid is None:
            ref = S.Reference.of(track, truth, part_ids)
            want = S.score_maps(track, part_ids[rows], gen[rows], truth, S._train_maps(truth), ref,
                                with_flags=False)["chi2_per_dof_raw"]
        else:
            grid = S.grid_reference(track, truth, part_ids)
            want = S.score_grid(track, part_ids[rows], gen[rows], truth, grid)["chi2_per_dof_raw"]
        assert values[0, 0] == pytest.approx(want, rel=1e-9)
        assert S.score(track, part_ids[rows], gen[rows], truth, None)["chi2_per_dof"] != pytest.approx(want)


def test_the_conditional_split_keeps_every_grid_points_share_in_each_part(case: Case):
    track = case.track
    if track.population.grid is None:
        pytest.skip("an unconditional track has no grid points")
    groups = S.split_groups(track, case.truth)
    np.testing.assert_array_equal(groups, track.population.point_of(case.ids))
    for rows in (case.public, ~case.public):
        counts = np.bincount(track.population.point_of(case.ids[rows]), minlength=9)
        assert (counts >= MIN_MAPS_PER_POINT).all() and len(set(counts)) == 1, counts
    # without the groups, a draw of half the ids leaves some point short in some part
    f, seed = track.evaluation.public_fraction, track.evaluation.split_seed
    assert f is not None
    plain = public_mask(case.ids, case.ids, f, seed)
    short = [np.bincount(track.population.point_of(case.ids[r]), minlength=9).min() for r in (plain, ~plain)]
    assert min(short) < MIN_MAPS_PER_POINT, short


def test_the_config_asks_for_enough_maps_per_point_in_each_part():
    raw = yaml.safe_load((benchmarks_dir() / "wl-maps-conditional.yaml").read_text())
    assert raw["evaluation"]["public_fraction"] == 0.5
    demo = raw["profiles"]["demo"]
    with pytest.raises(ValidationError, match="23 maps per grid point in each part"):
        GenerateTrack.model_validate({**raw, "profiles": {"demo": {**demo, "test": 9 * 45}}})
    GenerateTrack.model_validate({**raw, "profiles": {"demo": {**demo, "test": 9 * 46}}})
    # a 30% public part would need 76 maps per point (round(0.3 x 76) = 23, round(0.3 x 75) = 22: public_mask)
    ev = {**raw["evaluation"], "public_fraction": 0.3}
    with pytest.raises(ValidationError, match="in each part"):
        GenerateTrack.model_validate({**raw, "evaluation": ev, "profiles": {"demo": {**demo, "test": 9 * 75}}})
    GenerateTrack.model_validate({**raw, "evaluation": ev, "profiles": {"demo": {**demo, "test": 9 * 76}}})


def test_a_few_maps_are_scored_without_the_chi2(case: Case):
    """``skybench validate --score --limit N`` scores N maps against their own N truth maps: fewer than the chi^2's
    covariance needs give the other metrics and no chi^2 (not an error)."""
    few = case.ids[:10]
    m = S.score(case.track, few, case.gen[:10], case.truth, None)
    assert "chi2_per_dof" not in m and np.isfinite(m["cl_rel_diff"]) and m["n_maps"] == 10, m
    assert np.isfinite(m["pdf_ks"]) and m["memorised"] == 0, m
    if case.track.population.grid is not None:  # no grid point holds enough of the 10 maps for its chi^2
        assert m["n_points_scored"] == 0 and not any(k.startswith("chi2") for k in m), m


def quadrant_copies(train: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """(n, 1, H, W) copies of public maps with their four quadrants permuted and each rotated by 90 degrees k times:
    every pixel is a public map's, in no place nor orientation that the whole map's invariants match."""
    rng = np.random.default_rng(seed)
    h = train.shape[-1] // 2
    out = []
    for m in train[rng.choice(len(train), n, replace=False)]:
        q = [m[:h, :h], m[:h, h:], m[h:, :h], m[h:, h:]]
        q = [np.rot90(q[i], int(rng.integers(4))) for i in rng.permutation(4)]
        out.append(np.block([[q[0], q[1]], [q[2], q[3]]])[None])
    return np.stack(out).astype(np.float32)


def test_the_private_part_checks_memorisation_against_every_truth_map(case: Case, tmp_path: Path):
    """A part's copies are tested against held-out truth maps like the whole set's: the private part (what the
    final board ranks) against every truth map, so a copier the whole set's test flags is flagged there too; the
    public part against its own maps only (no public metric depends on a private map)."""
    track, truth, ids = case.track, case.truth, case.ids
    if track.population.grid is not None:
        pytest.skip("the conditional track checks memorisation per grid point")
    maps = S.truth_maps(truth, ids)
    ref = S.Reference.from_maps(track, maps[~case.public])
    np.testing.assert_array_equal(S.heldout_maps(track, truth, ids[~case.public], ref), maps)
    ref = S.Reference.from_maps(track, maps[case.public])
    assert S.heldout_maps(track, truth, ids[case.public], ref) is ref.maps
    gen = quadrant_copies(S._train_maps(truth), len(ids))
    m = harness_score(track, ids, gen, truth, tmp_path)
    assert m["memorised"] == 1, m
    assert m["private_memorised"] == 1 and m["private_chi2_per_dof"] >= track.label.flag_penalty, m
