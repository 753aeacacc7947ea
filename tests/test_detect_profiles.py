"""Per-profile geometry of the lens-tiles track: the challenge profile's releases have the issue's 1024-pixel tiles,
the demo profile's 512; the release records its tile size, and the harness validates and scores candidates against
the tile the release actually has (a coordinate valid on a 1024-pixel tile and not on a 512-pixel one passes on the
challenge release, one outside 1024 pixels fails)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import bwrap_works, tiles_project

from skybench.harness.evaluate import evaluate
from skybench.harness.submission import load_submission, sandboxed_predict
from skybench.release import read_manifest
from skybench.release.reader import open_release
from skybench.simulate import simulate_release
from skybench.tasks.detect.config import DetectTrack
from skybench.tracks import benchmarks_dir, for_release, load_track, per_profile


def test_tile_size_is_resolved_per_profile_and_must_name_every_profile() -> None:
    track = load_track("lens-tiles")
    assert isinstance(track, DetectTrack)
    assert track.tile.size == {"demo": 512, "challenge": 1024}
    assert track.for_profile("demo").image_shape() == (1, 512, 512)
    assert track.for_profile("challenge").image_shape() == (1, 1024, 1024)
    assert track.for_profile("challenge").tile_area_deg2 == pytest.approx(4 * track.for_profile("demo").tile_area_deg2)
    with pytest.raises(ValueError, match="per profile"):  # never a silent guess of the geometry
        track.image_shape()
    with pytest.raises(ValueError, match="no value for profile 'bologna'"):
        track.for_profile("bologna")
    assert per_profile(7, "anything", "x") == 7
    raw = yaml.safe_load((benchmarks_dir() / "lens-tiles.yaml").read_text())
    raw["tile"]["size"] = {"demo": 512}  # the challenge profile left without a size
    with pytest.raises(ValueError, match="one value per profile"):
        DetectTrack.model_validate(raw)


def _csv_submission(folder: Path, name: str, rows: list[tuple[int, float, float, float]]) -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame(rows, columns=["tile_id", "x", "y", "score"]).to_csv(folder / "candidates.csv", index=False)
    spec = {"team": "tests", "name": name, "track": "lens-tiles", "format": "predictions", "model": "candidates.csv"}
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec))
    for p in (folder, *folder.iterdir()):
        p.chmod(0o755)
    return folder


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
def test_a_challenge_release_has_1024_pixel_tiles_and_the_harness_uses_them(tmp_path: Path, monkeypatch) -> None:
    project = tiles_project(tmp_path, monkeypatch)
    track = load_track("lens-tiles")
    release = simulate_release(track, project / "releases" / "lens-tiles", profile="challenge", seed=2, size=1,
                               progress=False, workers=1, backend="numpy", key_file=tmp_path / "challenge.key")
    rel = open_release(release)
    assert rel.images("test").shape[1:] == (1, 1024, 1024) and rel.images("train").shape[1:] == (1, 1024, 1024)
    assert read_manifest(release)["tile_size"] == 1024
    assert for_release(track, release).image_shape() == (1, 1024, 1024)
    tile = int(rel.meta("test")["id"].iloc[0])
    subs = project / "submissions" / "tests"
    inside = _csv_submission(subs / "inside", "inside", [(tile, 900.0, 700.0, 0.5)])  # outside 512, inside 1024
    outside = _csv_submission(subs / "outside", "outside", [(tile, 10.0, 1024.0, 0.5)])
    subs.chmod(0o755)
    outcomes = {o.name: o for o in evaluate([inside, outside], track, release,
                                            out=project / "results" / "evaluations", publish=False, force=True)}
    assert outcomes["inside"].status == "FINISHED", outcomes["inside"].reason
    assert outcomes["inside"].metrics["n_candidates"] == 1, outcomes["inside"].metrics
    o = outcomes["outside"]
    assert o.status == "FAILED" and "outside the tile" in o.reason and "1023" in o.reason, o.reason
    # the harness reads the tile from the inputs themselves: even given the unresolved track, a run on the challenge
    # release (or a Ray shard's view of it) checks candidates against 1024-pixel tiles
    res = sandboxed_predict(load_submission(inside), release, scratch=tmp_path / "scratch", track=track)
    assert res.ok and res.predictions is not None and res.predictions.shape[1:] == (100, 3), res.reason
    res = sandboxed_predict(load_submission(outside), release, scratch=tmp_path / "scratch2", track=track)
    assert not res.ok and "outside the tile" in res.reason, res.reason
