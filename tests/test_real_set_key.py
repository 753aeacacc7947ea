"""The real sets folded into a release's test stream are imported under its test-set key: with the public seed 0 a
team re-ran `skybench import-real-set` / `import-real-truth` on the public data, matched every stream row to its
nearest rebuilt image and found the real objects bit for bit (lens-space: AUROC 1.000, every real is_lens label;
enhance: the real truth itself). Under a private key the rebuild is another noise draw, and a real set imported
under another key than the release's is refused."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from skybench.cli import app
from skybench.release import layout, open_release, read_manifest
from skybench.tasks.enhance.real import import_real_truth
from skybench.tasks.lens.real import import_real_set
from skybench.testkey import ReleaseKey, read_key, real_set_seed

KEY = ReleaseKey("private", hashlib.sha256(b"skybench tests: a real-set key").digest())


def _images(release) -> np.ndarray:
    return np.concatenate([np.load(p) for p in layout.shard_paths(layout.public_dir(release, "test"), "images")])


def _rel_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per object: |a - b| / |b| (the attack's nearest-match distance; 0 for a bit-identical rebuild)."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def one_lens(real_data, tmp_path_factory):
    """A data folder holding one real HST lens (the enhance importer's input)."""
    lens_dir = real_data / "lenses_hst"
    data = tmp_path_factory.mktemp("data")
    (data / "lenses_hst").mkdir()
    cat = pd.read_csv(lens_dir / "catalog.csv").sort_values("file").head(1)
    cat.to_csv(data / "lenses_hst" / "catalog.csv", index=False)
    for f in cat["file"]:
        (data / "lenses_hst" / f).symlink_to(lens_dir / f)
    return data


def test_keyed_seeds_are_the_public_seed_only_for_a_public_key():
    assert real_set_seed(ReleaseKey.public(), "real:lens-space", 0) == 0  # the demo's real sets, as before
    keyed = {real_set_seed(KEY, d, s) for d in ("real:lens-space", "real:enhance") for s in (0, 1)}
    assert len(keyed) == 4 and all(0 <= s < 2**63 for s in keyed)


def test_an_enhance_real_truth_under_a_private_key_cannot_be_rebuilt_from_public_seeds(one_lens, tmp_path):
    keyed = import_real_truth(one_lens, "enhance", tmp_path / "keyed", key=KEY)
    again = import_real_truth(one_lens, "enhance", tmp_path / "again", key=KEY)
    public = [import_real_truth(one_lens, "enhance", tmp_path / f"public{s}", seed=s) for s in (0, 1)]
    # The organiser re-makes it byte for byte; a team rebuilding it with the public seed gets another noise draw,
    # as far from it as one public seed's rebuild is from another's (the attack's match was at distance 0).
    np.testing.assert_array_equal(_images(keyed), _images(again))
    between_seeds = _rel_distance(_images(public[1]), _images(public[0]))
    for rebuilt in public:
        assert (_rel_distance(_images(rebuilt), _images(keyed)) > 0.5 * between_seeds).all()
        truth = open_release(rebuilt).hidden("test").array("truth")[:]
        assert not np.array_equal(truth, open_release(keyed).hidden("test").array("truth")[:])
    entry = read_manifest(keyed)["test_key"]
    assert entry["kind"] == "private" and entry["fingerprint"] == KEY.fingerprint and entry["domain"] == "real:enhance"
    assert read_manifest(public[0])["test_key"]["kind"] == "public"
    assert str(real_set_seed(KEY, "real:enhance", 0)) not in layout.manifest_path(keyed).read_text()


def test_a_lens_real_set_under_a_private_key_differs_from_the_public_rebuild(real_data, tmp_path):
    keyed = import_real_set(real_data, "lens-ground", tmp_path / "keyed", limit=2, key=KEY)
    public = import_real_set(real_data, "lens-ground", tmp_path / "public", limit=2)
    a, b = _images(keyed), _images(public)
    assert len(a) and not any(np.array_equal(x, y) for x in a for y in b)
    assert read_manifest(keyed)["test_key"] | {"object_seeds": ""} == {
        "kind": "private", "fingerprint": KEY.fingerprint, "domain": "real:lens-ground", "object_seeds": ""}


def test_cli_imports_take_the_profile_key(tmp_path, monkeypatch):
    """Without the real data the import writes an empty set; it still records the key of --profile (created in
    $SKYBENCH_KEY_DIR as `skybench simulate` would), so the stage runs offline at any profile."""
    monkeypatch.setenv("SKYBENCH_KEY_DIR", str(tmp_path / "keys"))
    missing = tmp_path / "no-data"
    for cmd, out in (("import-real-set", "lens-space"), ("import-real-truth", "enhance")):
        args = [cmd, *(["lens-space"] if cmd == "import-real-set" else []), "--data", str(missing),
                "--out", str(tmp_path / out)]
        result = CliRunner().invoke(app, [*args, "--profile", "challenge"])
        assert result.exit_code == 0, result.output
        key = read_key(tmp_path / "keys" / "challenge.key")
        assert read_manifest(tmp_path / out)["test_key"]["fingerprint"] == key.fingerprint
        assert CliRunner().invoke(app, args).exit_code == 0  # demo: the public key
        assert read_manifest(tmp_path / out)["test_key"]["kind"] == "public"
