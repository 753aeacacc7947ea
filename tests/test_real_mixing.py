"""The real set is folded into the release's published test stream: one stream, a keyed order, opaque ids, split
back in the parent by the hidden mapping (mixing.fold_in at `skybench simulate`, mixing.Stream at evaluation)."""

import hashlib
import json
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import PIXEL_SUM, bwrap_works, csv_submission, mlflow_store, python_submission

from skybench.harness.evaluate import evaluate, record_dir
from skybench.harness.visibility import private_dir
from skybench.release import ReleaseError, layout, open_release, read_manifest, verify_release, write_release
from skybench.release.mixing import SOURCES, Stream, fold_in
from skybench.simulate import simulate_release
from skybench.tasks.lens.metrics import threshold_at_fpr
from skybench.testkey import ReleaseKey, create_key, read_key
from skybench.tracks import load_track

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")

# Every structural route to the real objects: a second mounted folder, rows beyond what /inputs/index.parquet
# lists, ids of a minority format, a shard file or batch of an odd size. Flagged objects score 10 + s, the rest
# s: a weak lens score (central flux fraction) but for what it detects.
ADVERSARY = """
import glob, os
import numpy as np
import pyarrow.parquet as pq

def load(d):
    ids = [str(i) for i in pq.read_table('/inputs/index.parquet').column('id').to_pylist()]
    kinds = [(i.isdigit(), i[:1].isalpha()) for i in ids]
    common = max(set(kinds), key=kinds.count)
    shards = [np.load(p, mmap_mode='r').shape[0] for p in sorted(glob.glob('/inputs/*-*.npy'))]
    others = [p for p in glob.glob('/*/*.npy') + glob.glob('/*/*/*.npy') + glob.glob('/*/*/*/*.npy')
              if not p.startswith('/inputs/')]
    odd_shard = set()
    if len(set(shards)) > 1:  # rows of a shard file whose size no other has
        starts = np.cumsum([0] + shards)
        for k, n in enumerate(shards):
            if shards.count(n) == 1:
                odd_shard |= set(range(starts[k], starts[k] + n))
    return {'seen': 0, 'n': len(ids), 'odd_id': {p for p, k in enumerate(kinds) if k != common},
            'odd_shard': odd_shard, 'second_folder': bool(others) or os.path.isdir('/extra'),
            'sizes': []}

def predict(st, b):
    n = len(b)
    pos = np.arange(st['seen'], st['seen'] + n)
    st['seen'] += n
    st['sizes'].append(n)
    flag = pos >= st['n']
    flag |= np.isin(pos, list(st['odd_id'] | st['odd_shard']))
    if st['second_folder'] and len(st['sizes']) > 1 and n != st['sizes'][0]:
        flag |= True  # an odd-sized batch once a second folder was seen
    s = b[:, :, 35:66, 35:66].sum(axis=(1, 2, 3)) / (np.abs(b).sum(axis=(1, 2, 3)) + 1e-9)
    return (s + 10.0 * flag).astype('float32')
"""
# The fingerprint attack: the model carries the sha256 of every image of the published public/test (known when
# it is submitted) and flags every image it does not know as real.
FINGERPRINT = """
import hashlib, os
import numpy as np

def load(d):
    return set(open(os.path.join(d, 'known.txt')).read().split())

def predict(known, b):
    flag = np.array([hashlib.sha256(np.ascontiguousarray(x, dtype='<f4').tobytes()).hexdigest() not in known
                     for x in b])
    s = b[:, :, 35:66, 35:66].sum(axis=(1, 2, 3)) / (np.abs(b).sum(axis=(1, 2, 3)) + 1e-9)
    return (s + 10.0 * flag).astype('float32')
"""


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))


@pytest.fixture(scope="module")
def real_set(tmp_path_factory):
    """A second tiny lens-space release standing in for the real set (32 objects; ids 0..31 like the test set's)."""
    return simulate_release("lens-space", tmp_path_factory.mktemp("real") / "real", seed=11, size=32, progress=False,
                            real_set=False)


def _with_real(real) -> object:
    track = load_track("lens-space")
    return track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"real_set": str(real)})})


@pytest.fixture(scope="module")
def folded(real_set, tmp_path_factory):
    """A 64-object lens-space release made with the real set in its YAML: the real set is folded in (the
    track's own ``evaluation.real_set``, as ``skybench simulate`` reads it)."""
    return simulate_release(_with_real(real_set), tmp_path_factory.mktemp("rel") / "lens-space", seed=3, size=64,
                            progress=False, real_set=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The same simulated release without a real set: the simulated test objects as they were before."""
    return simulate_release("lens-space", tmp_path_factory.mktemp("plain") / "lens-space", seed=3, size=64,
                            progress=False, real_set=False)


def _images(folder) -> np.ndarray:
    return np.concatenate([np.load(p) for p in layout.shard_paths(folder, "images")])


def _sums(folder) -> np.ndarray:
    return _images(folder).astype(np.float64).sum(axis=(1, 2, 3)).astype(np.float32)


def _fingerprinter(root, release):
    """The FINGERPRINT submission, knowing every image of ``release``'s published public/test."""
    sub = python_submission(root, "fingerprint", FINGERPRINT)
    known = [hashlib.sha256(np.ascontiguousarray(x, dtype="<f4").tobytes()).hexdigest()
             for x in _images(layout.public_dir(release, "test"))]
    (sub / "known.txt").write_text("\n".join(known) + "\n")
    (sub / "known.txt").chmod(0o644)
    return sub


@needs_bwrap
@pytest.mark.slow
def test_a_model_cannot_tell_the_real_objects_from_the_simulated_ones(real_set, folded, tmp_path):
    """Neither by structure (folders, ids, shards, batches, positions) nor by not having seen them: the
    published test set already holds the real objects. On the old design (the real set mixed in at evaluation
    only) the fingerprinting model flags exactly the 32 real objects: real-lens recall 1.0."""
    subs = [python_submission(tmp_path / "subs", "adversary", ADVERSARY), _fingerprinter(tmp_path / "subs", folded)]
    outcomes = evaluate(subs, _with_real(real_set), folded, out=tmp_path / "evals", publish=False)
    labels_all = open_release(folded).hidden("test").meta().set_index("id")
    for o in outcomes:
        assert o.status == "FINISHED", (o.name, o.reason)
        priv = private_dir(record_dir(tmp_path / "evals", "tests", o.name))
        real = pd.read_csv(priv / "real_predictions.csv").score.to_numpy()
        pred = pd.read_csv(priv / "predictions.csv")
        test = pred.score.to_numpy()
        assert len(real) == 32 and len(test) == 64
        # Real-lens recall is what its simulated positives allow: the real set (here simulated too, about half
        # of it lenses) clears the threshold no more often than the simulated lenses do. The 1%-FPR threshold
        # of ~31 negatives is often +inf (recall 0 whatever the real scores), so this also checks 10% FPR.
        labels = labels_all.loc[pred.id].is_lens.to_numpy()
        for fpr, recall in ((0.01, o.metrics["real_lens_recall"]), (0.1, None)):
            cut = threshold_at_fpr(labels, test, fpr)
            tpr = float(np.mean(test[labels == 1] >= cut))
            recall = float(np.mean(real >= cut)) if recall is None else recall
            assert recall <= tpr + 0.25, (o.name, fpr, recall, tpr)
        # It flagged the real objects no more often than the simulated ones.
        assert (real >= 10).mean() <= (test >= 10).mean() + 0.25, (o.name, real, test)


@needs_bwrap
def test_predictions_are_split_back_to_each_set_in_its_own_id_order(real_set, folded, plain, tmp_path):
    sub = python_submission(tmp_path / "subs", "sum", PIXEL_SUM)
    (o,) = evaluate([sub], _with_real(real_set), folded, out=tmp_path / "evals", publish=False)
    assert o.status == "FINISHED", o.reason
    priv = private_dir(record_dir(tmp_path / "evals", "tests", "sum"))
    # The simulated part: the same objects, ids and order as the release made without a real set.
    got = pd.read_csv(priv / "predictions.csv")
    np.testing.assert_array_equal(got.id.to_numpy(), open_release(plain).meta("test").id)
    np.testing.assert_array_equal(got.id.to_numpy(), open_release(folded).hidden("test").meta().id)
    np.testing.assert_allclose(got.score.to_numpy(), _sums(layout.public_dir(plain, "test")), rtol=1e-6)
    got = pd.read_csv(priv / "real_predictions.csv")
    np.testing.assert_array_equal(got.id.to_numpy(), open_release(real_set).meta("test").id)
    np.testing.assert_allclose(got.score.to_numpy(), _sums(layout.public_dir(real_set, "test")), rtol=1e-6)
    rec = json.loads((record_dir(tmp_path / "evals", "tests", "sum") / "evaluation.json").read_text())
    # n: the objects the model was given (64 simulated and 32 real), as the published stream: the simulated count
    # alone gave the real set's size away, which the published manifest leaves out
    assert rec["n"] == 96 and rec["real_release_sha256"]


@needs_bwrap
@pytest.mark.slow
def test_the_ray_executor_shards_the_stream_and_the_split_still_holds(real_set, folded, plain, tmp_path):
    import os

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    track = _with_real(real_set)
    track = track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"batch_size": 16})})
    sub = python_submission(tmp_path / "subs", "sum", PIXEL_SUM)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:  # 96 rows in batches of 16: 3 shards, each a view of the published stream
        (o,) = evaluate([sub], track, folded, out=tmp_path / "ray", publish=False, executor="ray",
                        executor_options={"shards": 3})
    finally:
        ray.shutdown()
    assert o.status == "FINISHED", o.reason
    for stem, release in (("predictions", plain), ("real_predictions", real_set)):
        got = pd.read_csv(private_dir(record_dir(tmp_path / "ray", "tests", "sum")) / f"{stem}.csv")
        np.testing.assert_array_equal(got.id, open_release(release).meta("test").id)
        np.testing.assert_allclose(got.score.to_numpy(), _sums(layout.public_dir(release, "test")), rtol=1e-6)


def test_a_predictions_csv_covers_the_real_objects_too(real_set, folded, plain, tmp_path):
    """A CSV is written for the published stream's ids, so it gets real-set scores like any model."""
    stream = open_release(folded).meta("test").id.to_numpy()
    sums = _sums(layout.public_dir(folded, "test"))
    sub = csv_submission(tmp_path / "subs" / "csv", "csv", stream, sums)
    (o,) = evaluate([sub], _with_real(real_set), folded, out=tmp_path / "evals", publish=False)
    assert o.status == "FINISHED", o.reason
    assert "real_lens_recall" in o.metrics
    priv = private_dir(record_dir(tmp_path / "evals", "tests", "csv"))
    got = pd.read_csv(priv / "real_predictions.csv")
    np.testing.assert_array_equal(got.id, open_release(real_set).meta("test").id)
    np.testing.assert_allclose(got.score.to_numpy(), _sums(layout.public_dir(real_set, "test")), rtol=1e-6)
    np.testing.assert_allclose(pd.read_csv(priv / "predictions.csv").score, _sums(layout.public_dir(plain, "test")),
                               rtol=1e-6)


def test_the_published_test_folder_holds_both_sets_and_nothing_that_names_them(real_set, folded, plain, tmp_path):
    assert verify_release(folded) == []
    test_dir = layout.public_dir(folded, "test")
    assert sorted(p.name for p in test_dir.iterdir()) == [layout.shard_name("images", 0), layout.INDEX]
    assert not list(test_dir.parent.glob(".*")) and not (test_dir.parent / SOURCES).exists()
    # index.parquet: opaque ids in stream order, no other column and no metadata.
    table = pq.read_table(layout.index_path(test_dir))
    assert table.column_names == ["id"] and not (table.schema.metadata or {})
    assert table.column("id").to_pylist() == [f"t{i:06d}" for i in range(96)]
    raw = layout.index_path(test_dir).read_bytes()
    assert b"real" not in raw and b"sim" not in raw and b"pandas" not in raw
    manifest = read_manifest(folded)
    assert manifest["real_set"] | {"release_sha256": ""} == {"path": str(real_set), "folded_in": True, "real": 32,
                                                             "simulated": 64, "stream": 96, "release_sha256": ""}
    # Every object of both sets once, at the position the hidden mapping says.
    mapping = Stream.load(folded, real_set).mapping()
    images = _images(test_dir)
    assert images.shape == (96, 1, 101, 101) and images.dtype == np.float32
    sources = {"sim": _images(layout.public_dir(plain, "test")),
               "real": _images(layout.public_dir(real_set, "test"))}
    index = {"sim": open_release(plain).meta("test").id.tolist(),
             "real": open_release(real_set).meta("test").id.tolist()}
    assert (mapping.source == "real").sum() == 32 and mapping.id.tolist() == table.column("id").to_pylist()
    for p, (src, orig) in enumerate(zip(mapping.source, mapping.original_id, strict=True)):
        np.testing.assert_array_equal(images[p], sources[src][index[src].index(orig)])
    # The real objects are spread over the stream: neither first nor last, nor in release order.
    real_pos = np.flatnonzero(mapping.source == "real")
    assert real_pos.min() < 64 and real_pos.max() >= 32 and not np.array_equal(real_pos, np.arange(64, 96))
    # The streaming writer over several shard files (bounded memory): folding into a copy of the plain release.
    copy = tmp_path / "copy"
    shutil.copytree(plain, copy)
    counts = fold_in(copy, real_set, b"k" * 32, key=ReleaseKey.public(), shard_size=40)
    assert counts == {"simulated": 64, "real": 32, "stream": 96}
    assert sorted(p.name for p in (layout.public_dir(copy, "test")).iterdir()) == \
        [*(layout.shard_name("images", k) for k in range(3)), layout.INDEX]
    other = Stream.load(copy, real_set)
    shards = _images(layout.public_dir(copy, "test"))
    for p, (src, orig) in enumerate(zip(other.mapping().source, other.mapping().original_id, strict=True)):
        np.testing.assert_array_equal(shards[p], sources[src][index[src].index(orig)])
    assert len({p // 40 for p in np.flatnonzero(other.is_real)}) >= 2


def test_the_split_restores_each_set_for_image_outputs_too(real_set, folded, plain):
    from skybench.harness.submission import PredictResult

    stream = Stream.load(folded, real_set)
    images = _images(layout.public_dir(folded, "test"))
    res = stream.split(PredictResult(True, "", 2 * images, stream.stream_ids, "cpu", 1.0))
    assert res.ok and len(res.ids) == 64
    np.testing.assert_array_equal(res.predictions, 2 * _images(layout.public_dir(plain, "test")))
    np.testing.assert_array_equal(res.extra.predictions, 2 * _images(layout.public_dir(real_set, "test")))
    np.testing.assert_array_equal(res.extra.ids, open_release(real_set).meta("test").id)
    # A result that does not cover the stream in order (an executor bug, --limit) is refused, not misassigned.
    bad = stream.split(PredictResult(True, "", images, stream.stream_ids[::-1], "cpu", 1.0))
    assert not bad.ok and "stream" in bad.reason
    short = stream.split(PredictResult(True, "", images[:20], stream.stream_ids[:20], "cpu", 1.0))
    assert not short.ok and "stream" in short.reason
    failed = stream.split(PredictResult(False, "crashed", None, stream.stream_ids, "cpu", 1.0))
    assert not failed.ok and failed.reason == "crashed" and len(failed.ids) == 64


def _keyed_real_set(out, key_file):
    """A small stand-in real set made under the private key in ``key_file`` (as `import-real-set --key-file`)."""
    return simulate_release("lens-space", out, profile="challenge", seed=11, size=8, progress=False,
                            key_file=key_file, workers=1, real_set=False)


def test_a_release_is_remade_byte_identically_with_the_same_key_seed_and_real_set(tmp_path):
    keys = tmp_path / "keys"
    real = {k: _keyed_real_set(tmp_path / f"real-{k}", keys / k) for k in ("one.key", "two.key")}

    def make(out, key):
        return simulate_release(_with_real(real[key]), tmp_path / out, profile="challenge", seed=5, size=24,
                                progress=False, key_file=keys / key, workers=1, real_set=True)

    a, b, c = make("a", "one.key"), make("b", "one.key"), make("c", "two.key")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert verify_release(a) == [] and verify_release(c) == []
    # Another key: another order (and other simulated test objects).
    src_a, src_c = (pd.read_parquet(layout.sources_path(layout.hidden_dir(r, "test"))) for r in (a, c))
    assert not src_a.source.equals(src_c.source) or not src_a.source_id.equals(src_c.source_id)
    # The manifest never names which stream ids are real.
    assert "t0000" not in layout.manifest_path(a).read_text()


def test_tracks_sharing_a_key_seed_and_real_set_hold_it_in_different_orders(tmp_path):
    """Two tracks made with one key and seed (lens-space and lens-ground at the challenge profile) held the real
    objects at the same places of their streams, so a real object recognised in one named its twin in the other."""
    key = tmp_path / "one.key"
    real_set = _keyed_real_set(tmp_path / "real", key)

    def real_places(name: str) -> np.ndarray:
        track = _with_real(real_set).model_copy(update={"name": name})  # type: ignore[attr-defined]
        rel = simulate_release(track, tmp_path / name, profile="challenge", seed=5, size=24, progress=False,
                               key_file=key, workers=1, real_set=True)
        src = pd.read_parquet(layout.sources_path(layout.hidden_dir(rel, "test")))
        return src.source_id.where(src.source == "real", "").to_numpy()

    a, b = real_places("lens-space"), real_places("lens-space-twin")
    assert sorted(a) == sorted(b) and not np.array_equal(a, b)


def test_a_real_set_imported_under_another_key_is_refused(real_set, plain, tmp_path):
    """A real set imported with the public seed (or under another private key) can be rebuilt by whoever holds that
    key (anyone, for the public one) and found in the stream: refused before anything is simulated, naming both
    keys; fold_in itself refuses it too."""
    keys = tmp_path / "keys"
    ours, other = create_key(keys / "ours.key"), _keyed_real_set(tmp_path / "other", keys / "other.key")
    for real, theirs in ((real_set, "public"), (other, read_key(keys / "other.key").describe())):
        with pytest.raises(ReleaseError, match=re.escape(f"imported under the {theirs} test-set key but this release "
                                                         f"is made under the {ours.describe()} one; re-import")):
            simulate_release(_with_real(real), tmp_path / "rel", profile="challenge", seed=3, size=8, progress=False,
                             key_file=keys / "ours.key", workers=1, real_set=True)
        assert not (tmp_path / "rel").exists() and not list(tmp_path.glob(".rel.tmp-*"))
    copy = tmp_path / "copy"
    shutil.copytree(plain, copy)
    with pytest.raises(ReleaseError, match=r"imported under the private .* made under the public one"):
        fold_in(copy, other, b"k" * 32, key=ReleaseKey.public())
    assert Stream.load(copy) is None  # nothing was folded in


def _fake_release(out, arrays: dict[str, tuple[int, ...]], n: int = 4):
    def chunks(split, ranges):
        for a, b in ranges:
            yield ({k: np.zeros((b - a, *s), np.float32) for k, s in arrays.items()},
                   {"id": np.arange(a, b), "is_lens": np.ones(b - a, int)})

    return write_release(out, info={"track": "lens-space"}, counts={"test": n}, make_chunks=chunks, arrays=arrays,
                         progress=False)


def test_a_real_set_of_other_shapes_is_refused_with_a_clear_error(tmp_path):
    small = _fake_release(tmp_path / "small", {"images": (1, 50, 50)})
    with pytest.raises(ReleaseError, match=r"images \(1, 50, 50\).*differ.*images \(1, 101, 101\).*re-import"):
        simulate_release("lens-space", tmp_path / "rel", seed=3, size=8, progress=False, real_set=small, workers=1)
    assert not (tmp_path / "rel").exists() and not list(tmp_path.glob(".rel.tmp-*"))
    other = _fake_release(tmp_path / "other", {"images": (1, 101, 101), "features": (3,)})
    with pytest.raises(ReleaseError, match="features"):
        simulate_release("lens-space", tmp_path / "rel", seed=3, size=8, progress=False, real_set=other, workers=1)


@needs_bwrap
@pytest.mark.slow
def test_without_real_objects_nothing_is_folded_in_and_the_demo_path_still_works(tmp_path, plain):
    """`make run` offline: the import stage writes an empty real set; a missing one is handled the same way."""
    empty = _fake_release(tmp_path / "empty", {"images": (1, 101, 101)}, n=0)
    missing = tmp_path / "missing"
    for real, why in ((empty, "no test objects"), (missing, "no real release")):
        rel = simulate_release(_with_real(real), tmp_path / f"rel-{real.name}", seed=3, size=64, progress=False,
                               real_set=True)
        manifest = read_manifest(rel)
        assert manifest["real_set"]["folded_in"] is False and why in manifest["real_set"]["why"]
        assert not layout.sources_path(layout.hidden_dir(rel, "test")).exists()
        for f in (layout.public_meta_path, lambda r, s: layout.public_dir(r, s) / layout.shard_name("images", 0),
                  lambda r, s: layout.meta_path(layout.hidden_dir(r, s))):
            assert f(rel, "test").read_bytes() == f(plain, "test").read_bytes(), f  # the demo's objects, ids, labels
    sub = python_submission(tmp_path / "subs", "sum", PIXEL_SUM)
    (o,) = evaluate([sub], _with_real(empty), tmp_path / "rel-empty", out=tmp_path / "evals", publish=False)
    assert o.status == "FINISHED", o.reason
    assert o.metrics["auroc"] > 0 and "real_lens_recall" not in o.metrics
    (p,) = evaluate([sub], load_track("lens-space"), plain, out=tmp_path / "plain", publish=False)
    assert p.metrics == o.metrics  # the same scores as a release without any real set


def test_evaluation_refuses_a_real_set_that_is_not_the_one_folded_in(real_set, folded, tmp_path):
    changed = tmp_path / "changed"  # the real set re-imported since: another manifest
    shutil.copytree(real_set, changed)
    manifest = read_manifest(changed)
    layout.manifest_path(changed).write_text(json.dumps(manifest | {"note": "re-imported"}))
    sub = python_submission(tmp_path / "subs", "sum", PIXEL_SUM)
    with pytest.raises(ReleaseError, match="re-make the release"):
        evaluate([sub], _with_real(changed), folded, out=tmp_path / "evals", publish=False)
    with pytest.raises(ReleaseError, match="re-make the release"):
        evaluate([sub], _with_real(tmp_path / "nowhere"), folded, out=tmp_path / "evals", publish=False)
    damaged = tmp_path / "damaged"  # its manifest as folded in, its labels flipped: real_auroc 0.77 -> 0.23
    shutil.copytree(real_set, damaged)
    labels = layout.hidden_dir(damaged, "test") / "meta.parquet"
    meta = pd.read_parquet(labels)
    meta.assign(is_lens=1 - meta.is_lens).to_parquet(labels)
    with pytest.raises(ReleaseError, match=r"real set that fails verification:\n  hidden/test/meta.parquet"):
        evaluate([sub], _with_real(damaged), folded, out=tmp_path / "evals", publish=False)


IDENTITY = """
import numpy as np
def load(d):
    return None
def predict(m, batch):
    return np.array(batch, dtype="float32")
"""


@needs_bwrap
@pytest.mark.slow
def test_the_participant_gallery_does_not_name_the_real_objects(tmp_path):
    """An image track's participant gallery once had a second file for the real set (``outputs_real.png``: its
    lowest ids' inputs and outputs, titled with their real ids), and the simulated one showed the simulated
    set's lowest ids: matching a panel's input against the published stream named those stream objects real (or
    simulated), whatever the opaque ids and keyed order hide. Now it is one gallery of the stream's first objects
    under their stream ids, drawn from the published inputs and the submission's outputs alone."""
    from matplotlib.image import imread

    from skybench.harness.visibility import participant_artifacts
    from skybench.tasks.enhance.score import _outputs

    real = simulate_release("enhance", tmp_path / "real", seed=11, size=8, progress=False, real_set=False)
    track = load_track("enhance")
    track = track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"real_set": str(real)})})
    release = simulate_release(track, tmp_path / "rel", seed=3, size=12, progress=False, real_set=True)
    sub = python_submission(tmp_path / "subs", "identity", IDENTITY, track="enhance")
    (o,) = evaluate([sub], track, release, out=tmp_path / "evals", publish=False)
    assert o.status == "FINISHED", o.reason
    shown = record_dir(tmp_path / "evals", "tests", "identity")
    names = {p.name for p in shown.iterdir()}
    assert "outputs.png" in names and not [n for n in names if "real" in n], names
    assert not [n for n in participant_artifacts(track) if "real" in n]
    # The gallery is a function of the published stream (and the outputs: here the inputs themselves) only.
    stream = open_release(release).meta("test").id.to_numpy()
    images = _images(layout.public_dir(release, "test"))
    k = track.label.gallery
    _outputs(images[:k], images[:k], stream[:k], tmp_path / "expected.png")
    np.testing.assert_array_equal(imread(shown / "outputs.png"), imread(tmp_path / "expected.png"))


def test_the_published_manifest_counts_the_stream_not_the_simulated_objects(folded, tmp_path):
    """What teams get (server.publish) says how many test objects its stream holds: the simulated count (64 here)
    beside the 96 rows of public/test gave the real set's size away, which the public manifest drops."""
    from skybench.release.reader import open_release
    from skybench.release.verify import verify_release
    from skybench.server.publish import stage

    assert json.loads(layout.manifest_path(folded).read_text())["counts"]["test"] == 64
    got = open_release(stage(folded, tmp_path / "published"))
    assert got.manifest["counts"]["test"] == 96 == sum(len(b["images"]) for b in got.public_batches("test", 16))
    assert verify_release(got.root) == []


def test_a_folded_stream_exports_under_its_positions_and_never_with_labels(folded, tmp_path):
    """`export-bologna` of a release with the real set folded in: the stream's opaque ids (t000000...) name the
    files by position (it failed on int('t000000')); its labels would name the real objects: refused."""
    from skybench.tasks.lens.bologna import BolognaError, export_bologna

    n = read_manifest(folded)["real_set"]["stream"]
    out = export_bologna(folded, tmp_path / "export")
    assert sorted(int(p.stem.rsplit("-", 1)[1]) for p in out.glob("*.fits")) == list(range(n))
    with pytest.raises(BolognaError, match="secret"):
        export_bologna(folded, tmp_path / "labelled", labels=True)
