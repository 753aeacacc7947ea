"""Hidden test sets: the challenge test split comes from the organiser's private key, not from public information.

The attacker here knows everything public (track YAML, release seed, profile, the simulator code, the train/val
seeds) and re-simulates the test split with it; they must get nothing better than chance."""

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import skybench
from skybench.cli import app
from skybench.physics.backend import get_backend
from skybench.release import layout, open_release, read_manifest, verify_release
from skybench.release.writer import SPLITS
from skybench.simulate import object_domain, simulate_release, simulator_class
from skybench.testkey import (
    KeyFileError,
    ObjectSeeds,
    ReleaseKey,
    public_object_seed,
    read_key,
    release_key,
    require_private,
)
from skybench.tracks import load_track

SEED = 5
# A fixed key, so the chance-level checks below are deterministic (a real key comes from `secrets`).
FIXED_KEY = hashlib.sha256(b"skybench tests: a fixed private key").hexdigest()
OTHER_KEY = hashlib.sha256(b"skybench tests: an attacker's guess").hexdigest()
SIZES = {"lens-space": 64, "photoz-catalog": 64, "enhance": 24}


def _write_key(path, hex_text: str, mode: int = 0o600):
    path.write_text(hex_text + "\n")
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def challenge(tmp_path_factory):
    """Tiny challenge-profile releases of one track per simulator, made with FIXED_KEY."""
    root = tmp_path_factory.mktemp("challenge")
    key_file = _write_key(root / "challenge.key", FIXED_KEY)
    releases = {t: simulate_release(t, root / t, profile="challenge", seed=SEED, size=n, progress=False,
                                    workers=1, key_file=key_file) for t, n in SIZES.items()}
    return releases, key_file


def _attack(track_name: str, seeds: ObjectSeeds, split: str, n: int):
    """Re-simulate objects 0..n of ``split`` with the released simulator, as anyone (or a model) can."""
    track = load_track(track_name)
    return simulator_class(track)(track, get_backend("numpy")).simulate(seeds, split, 0, n)


def _npy(release, split: str, name: str, hidden: bool = False) -> np.ndarray:
    folder = layout.hidden_dir(release, split) if hidden else layout.public_dir(release, split)
    return np.load(folder / layout.shard_name(name, 0))


@pytest.mark.parametrize("track", list(SIZES))
def test_challenge_test_set_cannot_be_remade_from_public_information(challenge, track):
    releases, _ = challenge
    rel = releases[track]
    n = SIZES[track]
    truth = open_release(rel).hidden("test").meta()
    arrays = {"lens-space": "images", "photoz-catalog": "features", "enhance": "images"}[track]
    published = _npy(rel, "test", arrays)

    # The attacker's pipeline is faithful: it re-makes the public train split exactly (public seeds).
    n_train = read_manifest(rel)["counts"]["train"]
    train_arrays, _ = _attack(track, ObjectSeeds(SEED), "train", n_train)
    train_arrays = train_arrays if isinstance(train_arrays, dict) else {"images": train_arrays}
    np.testing.assert_array_equal(train_arrays[arrays], _npy(rel, "train", arrays))

    for guess in (ObjectSeeds(SEED), ObjectSeeds(SEED, ReleaseKey("private", bytes.fromhex(OTHER_KEY)))):
        got, meta = _attack(track, guess, "test", n)
        got = got if isinstance(got, dict) else {"images": got}
        meta = pd.DataFrame(meta)
        assert not set(meta["seed"]) & set(truth["seed"])
        # No published test input is reproduced, so the attacker cannot even match objects to their re-makes.
        assert all(not np.array_equal(a, b) for a, b in zip(got[arrays], published, strict=True))
        if track == "lens-space":
            y, guessed = truth["is_lens"].to_numpy(), meta["is_lens"].to_numpy()
            assert 0 < y.sum() < n and not np.array_equal(guessed, y)
            assert 0.25 < roc_auc_score(y, guessed) < 0.75  # public seeds on the old code: 1.0
            p, q = y.mean(), guessed.mean()
            assert abs(np.mean(guessed == y) - (p * q + (1 - p) * (1 - q))) < 0.2  # agreement at chance level
        elif track == "photoz-catalog":
            z, guessed = truth["z"].to_numpy(), meta["z"].to_numpy()
            assert not np.isclose(guessed, z).any()
            assert abs(np.corrcoef(guessed, z)[0, 1]) < 0.35  # public seeds on the old code: exactly z_spec
        else:
            hidden_truth = _npy(rel, "test", "truth", hidden=True)
            assert all(not np.array_equal(a, b) for a, b in zip(got["truth"], hidden_truth, strict=True))
            flux, guessed = hidden_truth.sum(axis=(1, 2, 3)), got["truth"].sum(axis=(1, 2, 3))
            assert abs(np.corrcoef(np.log(np.abs(flux)), np.log(np.abs(guessed)))[0, 1]) < 0.5


def test_same_key_file_remakes_the_release_byte_identically_and_another_key_changes_only_test(challenge,
                                                                                             tmp_path):
    releases, key_file = challenge
    first = read_manifest(releases["lens-space"])
    again = simulate_release("lens-space", tmp_path / "again", profile="challenge", seed=SEED,
                             size=SIZES["lens-space"], progress=False, workers=1, key_file=key_file)
    assert read_manifest(again)["files"] == first["files"]
    assert layout.manifest_path(again).read_bytes() == layout.manifest_path(releases["lens-space"]).read_bytes()
    assert verify_release(again) == []
    assert first["test_key"]["kind"] == "private"
    assert first["test_key"]["fingerprint"] == read_key(key_file).fingerprint

    other = simulate_release("lens-space", tmp_path / "other", profile="challenge", seed=SEED,
                             size=SIZES["lens-space"], progress=False, workers=1,
                             key_file=_write_key(tmp_path / "other.key", OTHER_KEY))
    files = read_manifest(other)["files"]
    changed = {f for f in files if files[f]["sha256"] != first["files"][f]["sha256"]}
    assert changed == {layout.relpath(p, other) for p in (layout.public_dir(other, "test") / layout.shard_name(
        "images", 0), layout.meta_path(layout.hidden_dir(other, "test")))}
    assert read_manifest(other)["test_key"]["fingerprint"] != first["test_key"]["fingerprint"]


def test_no_test_seed_or_key_material_in_public_files_or_manifest(challenge):
    releases, key_file = challenge
    secret = read_key(key_file).secret
    assert secret is not None
    for track, rel in releases.items():
        seeds = set(open_release(rel).hidden("test").meta()["seed"].tolist())
        keyed = ObjectSeeds(SEED, read_key(key_file), object_domain(load_track(track)))
        assert seeds == {keyed("test", i) for i in range(SIZES[track])}
        assert pq.read_schema(layout.public_meta_path(rel, "test")).names == ["id"]
        needles = [secret, secret.hex().encode(), secret.hex().upper().encode(), FIXED_KEY.encode()]
        needles += [s.to_bytes(8, order) for s in seeds for order in ("little", "big")] + \
                   [str(s).encode() for s in seeds]
        files = [p for s in SPLITS for p in layout.public_dir(rel, s).rglob("*") if p.is_file()] \
            + [layout.manifest_path(rel)]
        for path in files:
            data = path.read_bytes()
            assert not [x for x in needles if x in data], path
            if path.suffix == ".parquet":  # compressed: look at the values too
                table = pq.read_table(path).to_pandas()
                for col in table.columns:
                    values = set(table[col].tolist())
                    assert not values & seeds, f"{path}: column {col} holds test seeds"
                    assert not any(isinstance(v, str) and secret.hex() in v for v in values)
        manifest = read_manifest(rel)
        assert set(manifest["test_key"]) == {"kind", "fingerprint", "object_seeds"}
        assert str(key_file) not in json.dumps(manifest)


def test_key_file_is_created_owner_only_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SKYBENCH_KEY_DIR", str(tmp_path / "keys"))
    first = simulate_release("lens-ground", tmp_path / "a", profile="challenge", seed=1, size=4, progress=False,
                             workers=1)
    key_file = tmp_path / "keys/challenge.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    key = read_key(key_file)
    assert key.secret is not None and len(key.secret) == 32
    assert read_manifest(first)["test_key"] == key.manifest_entry()
    second = simulate_release("lens-ground", tmp_path / "b", profile="challenge", seed=1, size=4, progress=False,
                              workers=1)
    assert read_manifest(second)["files"] == read_manifest(first)["files"]  # the same key, not a new one
    assert read_key(key_file) == key


def test_demo_profile_uses_the_public_derivation_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("SKYBENCH_KEY_DIR", str(tmp_path / "keys"))
    rel = simulate_release("lens-ground", tmp_path / "demo", profile="demo", seed=1, size=4, progress=False,
                           workers=1)
    assert read_manifest(rel)["test_key"]["kind"] == "public"
    assert "fingerprint" not in read_manifest(rel)["test_key"]
    assert not (tmp_path / "keys").exists()  # no key needed, none made
    seeds = open_release(rel).hidden("test").meta()["seed"].tolist()
    assert seeds == [public_object_seed(1, "test", i) for i in range(4)]


def test_keyed_seeds_are_int63_and_only_the_test_split_is_keyed():
    key = ReleaseKey("private", bytes.fromhex(FIXED_KEY))
    keyed, public = ObjectSeeds(7, key), ObjectSeeds(7)
    for split in ("train", "val"):
        assert [keyed(split, i) for i in range(5)] == [public(split, i) for i in range(5)]
    test = keyed.many("test", 0, 1000)
    assert len(set(test)) == 1000 and all(0 <= s < 2**63 for s in test)
    assert max(test) > 2**62  # uses the whole 63-bit range
    assert test != public.many("test", 0, 1000)
    assert test != ObjectSeeds(8, key).many("test", 0, 1000)  # the release seed still matters
    assert "secret" not in repr(key) and FIXED_KEY not in repr(keyed)


def test_challenge_refuses_a_public_or_bad_key(tmp_path):
    with pytest.raises(KeyFileError, match="cannot use a public test-set key"):
        require_private("challenge", ReleaseKey.public())
    bad = {"short": ("ab" * 16, "too short"), "zeros": ("00" * 32, "not random"),
           "text": ("not a key at all", "hex digits"), "shared": (FIXED_KEY, "chmod 600")}
    for name, (text, message) in bad.items():
        key_file = _write_key(tmp_path / f"{name}.key", text, 0o644 if name == "shared" else 0o600)
        with pytest.raises(KeyFileError, match=message):
            simulate_release("lens-ground", tmp_path / name, profile="challenge", seed=1, size=4, progress=False,
                             workers=1, key_file=key_file)
        assert not (tmp_path / name).exists()
    (tmp_path / "folder.key").mkdir()
    with pytest.raises(KeyFileError, match="not a regular file"):
        release_key("challenge", key_file=tmp_path / "folder.key")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.key")
    with pytest.raises(KeyFileError, match="cannot read"):
        release_key("challenge", key_file=tmp_path / "dangling.key")
    with pytest.raises(KeyFileError, match="does not exist"):
        release_key("challenge", key_file=tmp_path / "absent.key", create=False)
    assert not (tmp_path / "absent.key").exists()
    with pytest.raises(KeyFileError, match="inside"):  # the release folder is replaced, and bound in the sandbox
        release_key("challenge", key_file=layout.hidden_dir(tmp_path / "rel") / "k.key", out=tmp_path / "rel")
    for inside_sandbox in (Path(skybench.__file__).parent / "k.key", Path(sys.prefix) / "k.key"):
        with pytest.raises(KeyFileError, match="inside"):
            release_key("challenge", key_file=inside_sandbox)
        assert not inside_sandbox.exists()


def test_cli_simulate_takes_a_key_file_and_names_a_bad_one(tmp_path):
    short = _write_key(tmp_path / "short.key", "ab" * 8)
    result = CliRunner().invoke(app, ["simulate", "lens-ground", "--out", str(tmp_path / "r"), "--size", "4",
                                      "--profile", "challenge", "--key-file", str(short)])
    assert result.exit_code != 0 and "too short" in result.output and str(short) in result.output
    result = CliRunner().invoke(app, ["simulate", "lens-ground", "--out", str(tmp_path / "r"), "--size", "4",
                                      "--profile", "challenge", "--key-file", str(tmp_path / "new.key"),
                                      "--no-create-key"])
    assert result.exit_code != 0 and "does not exist" in result.output
    result = CliRunner().invoke(app, ["simulate", "lens-ground", "--out", str(tmp_path / "r"), "--size", "4",
                                      "--profile", "challenge", "--key-file", str(tmp_path / "new.key")])
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "r")["test_key"]["fingerprint"] == read_key(tmp_path / "new.key").fingerprint


def test_one_key_per_profile_keeps_the_photoz_tracks_on_the_same_test_galaxies(tmp_path, monkeypatch):
    monkeypatch.setenv("SKYBENCH_KEY_DIR", str(tmp_path / "keys"))
    metas = [open_release(simulate_release(t, tmp_path / t, profile="challenge", seed=2, size=3, progress=False,
                                           workers=1)).hidden("test").meta()
             for t in ("photoz-catalog", "photoz-images")]
    assert metas[0]["seed"].tolist() == metas[1]["seed"].tolist()
    assert metas[0]["z"].tolist() == metas[1]["z"].tolist()
    assert metas[0]["seed"].tolist() != [public_object_seed(2, "test", i) for i in range(3)]


@pytest.mark.parametrize("other", ["lens-ground", "lens-space-realsrc", "lens-tiles"])
def test_tracks_made_with_one_key_and_seed_do_not_share_their_test_objects(challenge, other, tmp_path):
    """One key per profile and one release seed for every track: lens-space's test object i must not be another
    track's test object i (the same deflector and source: 99% the same is_lens), or that track's public test inputs
    are a second, independent look at it (and probing one track's board gives the other's labels)."""
    releases, key_file = challenge
    space = open_release(releases["lens-space"]).hidden("test").meta()
    rel = simulate_release(other, tmp_path / other, profile="challenge", seed=SEED, size=8 if other == "lens-tiles"
                           else SIZES["lens-space"], progress=False, workers=1, key_file=key_file)
    meta = open_release(rel).hidden("test").meta()
    assert not set(meta["seed"]) & set(space["seed"])
    n = len(meta)
    # the tiles' field stream 0 is numpy's stream of the bare seed, the lens objects' parameter stream
    first = [np.random.default_rng(int(s)).random(8) for s in space["seed"][:n]]
    assert not any(np.array_equal(np.random.default_rng([int(s), 0]).random(8), f)
                   for s, f in zip(meta["seed"], first, strict=True))
    if "is_lens" in meta:
        y, other_y = space["is_lens"].to_numpy(), meta["is_lens"].to_numpy()
        assert 0.25 < roc_auc_score(y, other_y) < 0.75  # shared seeds: 0.99
        assert abs(np.mean(space["has_source"].to_numpy() == meta["has_source"].to_numpy()) - 0.52) < 0.2  # 1.0


def test_only_tracks_of_one_population_share_a_test_domain():
    domains = {t: object_domain(load_track(t)) for t in ("photoz-images", "photoz-catalog", "lens-space", "lens-ground",
                                                       "lens-space-realsrc", "lens-space-injected", "lens-tiles",
                                                       "wl-maps", "wl-maps-conditional", "enhance")}
    assert domains["photoz-images"] == domains["photoz-catalog"]
    assert len(set(domains.values())) == len(domains) - 1
