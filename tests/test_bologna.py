"""Strong Lens Finding Challenge 1.0 layout: import of the challenge's own sample files, export and round trip."""

import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from skybench.cli import app
from skybench.release import verify_release
from skybench.release.reader import open_release
from skybench.tasks.lens.bologna import BolognaError, export_bologna, import_bologna


@pytest.fixture(scope="module")
def samples(root):
    path = root / "data" / "bologna_challenge_format"
    if not (path / "classifications.csv").is_file():
        pytest.skip("data/bologna_challenge_format not pulled (dvc pull data.dvc)")
    return path


def test_import_the_challenge_samples_of_both_tracks(samples, tmp_path):
    truth = pd.read_csv(samples / "classifications.csv")
    for track, kind, bands in (("lens-ground", "ground_based", 4), ("lens-space", "space_based", 1)):
        rel = import_bologna(samples, track, tmp_path / track)
        assert verify_release(rel) == []
        ids = open_release(rel).meta("test")["id"].to_numpy()
        want = truth[truth["set"] == kind].drop_duplicates("ID").set_index("ID")
        assert sorted(ids) == sorted(want.index)  # 12 ground IDs, 16 space IDs
        hidden = open_release(rel).hidden("test").meta().set_index("id")
        assert (hidden.loc[ids, "is_lens"].to_numpy() == want.loc[ids, "is_lens"].to_numpy()).all()
        images = np.asarray(open_release(rel).images("test"))
        assert images.shape == (len(ids), bands, 101, 101)
        # lens-ground bands are u, g, r, i: the third is the SDSS_R file of the first ID, bit for bit
        band, col = ("R", 2) if bands == 4 else ("VIS", 0)
        (path,) = samples.rglob(f"image{'SDSS' if bands == 4 else 'EUC'}_{band}-{ids[0]}.fits")
        np.testing.assert_array_equal(images[0, col], fits.getdata(path).astype(np.float32))


def test_export_then_import_gives_back_the_release(tiny_ground_release, tmp_path):
    out = export_bologna(tiny_ground_release, tmp_path / "export", labels=True)
    assert sorted(p.name for p in out.iterdir()) == ["Band1", "Band2", "Band3", "Band4", "classifications.csv"]
    ids = open_release(tiny_ground_release).meta("test")["id"].to_numpy()
    assert (out / "Band4" / f"imageSDSS_U-{ids[0]}.fits").is_file()
    back = import_bologna(out, "lens-ground", tmp_path / "back")
    np.testing.assert_array_equal(np.asarray(open_release(back).images("test")),
                                  np.asarray(open_release(tiny_ground_release).images("test")))
    a = open_release(back).hidden("test").meta()
    b = open_release(tiny_ground_release).hidden("test").meta()
    assert (a["id"].to_numpy() == b["id"].to_numpy()).all() and (a["is_lens"] == b["is_lens"]).all()


def test_an_export_for_teams_never_holds_secret_labels(tiny_space_release, tmp_path):
    """`export-bologna` is for teams' FITS-reading code: it wrote the hidden test labels by default, also of a
    release made with the organiser's private key."""
    import json

    result = CliRunner().invoke(app, ["export-bologna", str(tiny_space_release), "--out", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "plain" / "classifications.csv").exists() and any((tmp_path / "plain").glob("*.fits"))
    secret = tmp_path / "secret"
    shutil.copytree(tiny_space_release, secret)
    manifest = json.loads((secret / "manifest.json").read_text())
    manifest["test_key"] = {"kind": "private", "fingerprint": "0" * 16}
    (secret / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["export-bologna", str(secret), "--out", str(tmp_path / "e"), "--labels"])
    assert result.exit_code == 1 and "secret" in result.output and not (tmp_path / "e").exists(), result.output


def test_bad_inputs_name_the_file(samples, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(samples / "ground_based", src / "ground_based")
    shutil.copy(samples / "classifications.csv", src)
    victim = next(src.rglob("imageSDSS_G-*.fits"))
    victim.unlink()
    with pytest.raises(BolognaError, match=f"lacks {victim.name}"):
        import_bologna(src, "lens-ground", tmp_path / "rel")
    victim.write_bytes(b"not a fits file")
    with pytest.raises(BolognaError, match=victim.name):
        import_bologna(src, "lens-ground", tmp_path / "rel")
    assert not (tmp_path / "rel").exists()  # nothing half-written
    result = CliRunner().invoke(app, ["import-bologna", str(src), "--track", "lens-ground", "--out",
                                      str(tmp_path / "rel")])
    assert result.exit_code == 1 and victim.name in result.output


def test_an_imported_release_is_evaluated_as_docs_scale_says(tiny_space_release, tmp_path, monkeypatch):
    """`skybench evaluate --track lens-space --release <import-bologna release>` (docs/SCALE.md): the import
    holds labels only, so the track's strata and the completeness tables (theta_E, arc S/N) are left out, not
    a FAILED record ("the hidden test table has no column 'lens_theta_E'")."""
    from helpers import csv_submission, mlflow_store

    from skybench.harness.evaluate import evaluate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    back = import_bologna(export_bologna(tiny_space_release, tmp_path / "export", labels=True), "lens-space",
                          tmp_path / "back")
    hidden = open_release(back).hidden("test").meta()
    sub = csv_submission(tmp_path / "submissions" / "t" / "labels", "labels", hidden["id"].to_numpy(),
                         hidden["is_lens"].to_numpy(), team="t")
    (outcome,) = evaluate([sub], "lens-space", back, out=tmp_path / "evals", identities={sub: ("t", "labels")})
    assert outcome.status == "FINISHED", outcome.reason
    assert outcome.metrics["auroc"] == 1.0 and not any(k.startswith("by_") for k in outcome.metrics)
