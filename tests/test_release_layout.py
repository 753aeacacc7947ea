"""skybench.release is the only code that knows how a release lies on disk (issue 14: no module outside
release/ spells ``hidden/``, ``public/``, ``index.parquet`` ...), and its reader: streamed batches, the hidden split,
the layout helpers."""

import ast
import inspect
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skybench.release import layout, open_release, read_manifest, write_release
from skybench.release.mixing import fold_in
from skybench.release.reader import HiddenSplit
from skybench.release.shards import ShardError, iter_batches
from skybench.testkey import ReleaseKey

SRC = Path(__file__).resolve().parents[1] / "src" / "skybench"

# Spellings of the layout in any text (code, docstrings, comments): folder prefixes, file names, shard names.
_TEXT = re.compile(r"\b(?:hidden|public)/"  # hidden/test, "public/test/index.parquet", public/private
                   r"|/(?:hidden|public)\b(?![_-])"  # f"{root}/hidden", "/inputs/../public"
                   r"|\b(?:index|meta|sources)\.parquet\b|\bmanifest\.json\b"
                   r"|-\*\.npy\b|:05d\}\.npy")  # "images-*.npy", f"{name}-{k:05d}.npy"
_FOLDERS = {"hidden", "public"}
_PATH_CALLS = {"Path", "PurePath", "PosixPath", "joinpath", "join", "with_name"}


def _path_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """"hidden"/"public" as a path component: an operand of ``/``, an argument of Path()/joinpath()/os.path.join,
    or tested against ``.parts`` / ``.name``."""
    hits = []

    def folder(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value in _FOLDERS

    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            hits += [(node.lineno, f"/ {n.value!r}") for n in (node.left, node.right) if folder(n)]
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in _PATH_CALLS:
                hits += [(node.lineno, f"{name}({a.value!r})") for a in node.args if folder(a)]
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            attrs = {s.attr for s in sides if isinstance(s, ast.Attribute)}
            if attrs & {"parts", "name", "parent"} and any(folder(s) for s in sides):
                hits.append((node.lineno, "compared with a path's parts"))
    return hits


def layout_spellings(source: str) -> list[tuple[int, str]]:
    """(line, what) for every place ``source`` spells the release layout."""
    hits = [(source.count("\n", 0, m.start()) + 1, m.group()) for m in _TEXT.finditer(source)]
    return sorted(hits + _path_uses(ast.parse(source)))


def test_no_module_outside_release_spells_the_layout():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.is_relative_to(SRC / "release"):
            continue
        found += [f"{path.relative_to(SRC.parent)}:{line}: {what}" for line, what in
                  layout_spellings(path.read_text())]
    assert not found, ("the release layout is spelled outside skybench/release/ (use skybench.release.layout or "
                       "the reader):\n  " + "\n  ".join(found))


@pytest.mark.parametrize("snippet", [
    'p = root / "hidden" / "test"',
    'p = Path(root, "public", split)',
    'p = root.joinpath("public")',
    'p = os.path.join(root, "hidden")',
    'ok = "hidden" in folder.parts',
    'ok = folder.parent.name == "public"',
    'df = pd.read_parquet(root / "public/test/index.parquet")',
    'df = pd.read_parquet(f"{root}/hidden/test/meta.parquet")',
    'df = pd.read_parquet(folder / "meta.parquet")',
    'df = pd.read_parquet(hidden / "sources.parquet")',
    'p = f"{root}/hidden"',
    'ok = (root / "manifest.json").is_file()',
    'files = sorted(folder.glob(f"{name}-*.npy"))',
    'target = dest / f"{name}-{k:05d}.npy"',
    'def f():\n    """Reads public/test."""',
    '# the hidden/ folder',
])
def test_the_scan_flags_every_spelling(snippet):
    assert layout_spellings(snippet), snippet


@pytest.mark.parametrize("snippet", [
    'kind: Literal["public", "private"]',  # a test-set key kind, not a folder
    'key = cls("public")',
    'for part, mask in (("public", a), ("private", b)):\n    pass',
    'keep = ("public_",)',
    'metrics = {"public_auc": 1.0}',
    'p = layout.hidden_dir(root, "test")',
    'np.save(out / "predictions.npy", x)',
    'name = "roc_public.csv"',
])
def test_the_scan_leaves_other_uses_alone(snippet):
    assert not layout_spellings(snippet), snippet


# --- the reader ------------------------------------------------------------------------------------------------

SHAPES = {"images": (2, 3, 3), "features": (4,), "truth": (2, 3, 3)}


def _release(out: Path, seed: int, counts: dict[str, int], *, shard_size: int = 10_000,
             arrays: tuple[str, ...] = ("images", "features", "truth"), hidden: tuple[str, ...] = ("truth",),
             finish=None) -> tuple[Path, dict]:
    """A small release written by the real writer, and the arrays and labels it holds, by split."""
    rng = np.random.default_rng(seed)
    data = {s: {k: rng.normal(size=(n, *SHAPES[k])).astype(np.float32) for k in arrays} | {
        "id": np.arange(n, dtype=np.int64) + 1000 * seed, "label": rng.random(n)} for s, n in counts.items()}

    def chunks(split, ranges):
        for a, b in ranges:
            yield ({k: data[split][k][a:b] for k in arrays},
                   {"id": data[split]["id"][a:b], "label": data[split]["label"][a:b]})

    root = write_release(out, info={"track": "toy", "profile": "demo", "seed": seed}, counts=counts,
                         arrays={k: SHAPES[k] for k in arrays}, hidden_arrays=hidden, make_chunks=chunks,
                         chunk_size=3, shard_size=shard_size, label_columns=("label",), progress=False,
                         finish=finish)
    return root, data


def test_public_batches_stream_the_same_data_as_array(tmp_path):
    root, data = _release(tmp_path / "r", 1, {"train": 23, "val": 5, "test": 17}, shard_size=10)
    rel = open_release(root)
    assert len(layout.shard_paths(layout.public_dir(root, "train"), "images")) == 3  # 10 + 10 + 3 rows
    assert rel.public_arrays("test") == ["images", "features"]  # the test truth is an answer: hidden
    for split, n in (("train", 23), ("test", 17)):
        batches = list(rel.public_batches(split, 4))
        assert set(batches[0]) == set(rel.public_arrays(split))
        # one batch at a time, never past a shard file's end: 4, 4, 2 per 10-row shard
        assert [len(b["images"]) for b in batches][:3] == [4, 4, 2]
        assert all(len(b["images"]) <= 4 and len(b["features"]) == len(b["images"]) for b in batches)
        for name in batches[0]:
            streamed = np.concatenate([b[name] for b in batches])
            assert streamed.dtype == np.float32 and len(streamed) == n
            np.testing.assert_array_equal(streamed, rel.array(split, name)[:])
            np.testing.assert_array_equal(streamed, data[split][name])
    limited = list(rel.public_batches("train", 8, names=["features"], limit=13))
    assert [len(b["features"]) for b in limited] == [8, 2, 3] and set(limited[0]) == {"features"}
    np.testing.assert_array_equal(np.concatenate([b["features"] for b in limited]), data["train"]["features"][:13])
    with pytest.raises(FileNotFoundError, match="truth"):
        next(rel.public_batches("test", 4, names=["truth"]))


def test_public_batches_hold_one_batch_in_memory(tmp_path):
    """Streamed with plain reads: iterating a split allocates about one batch, not the split (16 MB here)."""
    n, shape = 4096, (1, 32, 32)
    images = np.random.default_rng(0).normal(size=(n, *shape)).astype(np.float32)

    def chunks(split, ranges):
        for a, b in ranges:
            yield images[a:b], {"id": np.arange(a, b)}

    root = write_release(tmp_path / "big", info={"track": "toy", "profile": "demo", "seed": 0}, counts={"train": n},
                         image_shape=shape, make_chunks=chunks, progress=False)
    gen = open_release(root).public_batches("train", 64)
    assert inspect.isgenerator(gen)
    total = np.zeros(shape)
    tracemalloc.start()
    try:
        for batch in gen:
            assert not isinstance(batch["images"], np.memmap)
            total += batch["images"].sum(axis=0, dtype=np.float64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(total, images.sum(axis=0, dtype=np.float64), rtol=1e-9, atol=1e-9)
    assert peak < 6 * 64 * images[0].nbytes < images.nbytes / 10, peak


def test_hidden_split_reads_labels_and_answers(tmp_path):
    root, data = _release(tmp_path / "r", 3, {"test": 9})
    hidden = open_release(root).hidden("test")
    ids = data["test"]["id"]
    np.testing.assert_array_equal(hidden.ids(), ids)
    np.testing.assert_array_equal(hidden.truth(ids[[4, 1]])["label"], data["test"]["label"][[4, 1]])
    np.testing.assert_array_equal(hidden.array("truth")[:], data["test"]["truth"])
    np.testing.assert_array_equal(hidden.inputs("images", ids[[7, 0]]), data["test"]["images"][[7, 0]])
    with pytest.raises(KeyError):
        hidden.truth(np.array([ids[0], 123456]))
    with pytest.raises(KeyError):
        hidden.inputs("images", np.array([123456]))
    with pytest.raises(FileNotFoundError):
        open_release(root).hidden("train")  # only the test split has a hidden part


def test_hidden_inputs_undo_the_folded_stream(tmp_path):
    """With a real set folded in, the public test rows are in a keyed stream order: HiddenSplit.inputs gives
    each simulated object's own input back."""
    real, _ = _release(tmp_path / "real", 4, {"test": 6}, arrays=("images", "features"), hidden=())
    root, data = _release(tmp_path / "r", 5, {"test": 11}, arrays=("images", "features"), hidden=(),
                          finish=lambda folder: fold_in(folder, real, b"k" * 32, key=ReleaseKey.public(), shard_size=4))
    assert read_manifest(root)["counts"]["test"] == 11
    assert len(open_release(root).array("test")) == 17
    assert not np.array_equal(open_release(root).array("test")[:11], data["test"]["images"])  # shuffled
    hidden = HiddenSplit(layout.hidden_dir(root, "test"))  # the public folder found from the hidden one
    np.testing.assert_array_equal(hidden.inputs(), data["test"]["images"])
    np.testing.assert_array_equal(hidden.inputs("features", data["test"]["id"][[10, 3]]),
                                  data["test"]["features"][[10, 3]])


def test_layout_helpers_round_trip(tmp_path):
    root, _ = _release(tmp_path / "r", 6, {"train": 12, "val": 3, "test": 12}, shard_size=5)
    for split in ("train", "val", "test"):
        assert layout.release_of(layout.public_dir(root, split)) == (root, layout.PUBLIC, split)
    assert layout.release_of(layout.hidden_dir(root)) == (root, layout.HIDDEN, "test")
    with pytest.raises(ValueError, match="not a split folder"):
        layout.release_of(root)
    names = [layout.shard_name("images", i) for i in (0, 1, 2, 10, 99999)]
    assert names == sorted(names)  # zero-padded: file order is row order
    folder = layout.public_dir(root, "train")
    assert [p.name for p in layout.shard_paths(folder, "images")] == [layout.shard_name("images", i) for i in range(3)]
    assert all(p.match(layout.shard_pattern("features")) for p in layout.shard_paths(folder, "features"))
    # every file the writer made is one a helper names, and the manifest lists it under that name
    named = {layout.public_meta_path(root, s) for s in ("train", "val", "test")} | {layout.meta_path(
        layout.hidden_dir(root))} | {p for s in ("train", "val", "test") for k in ("images", "features", "truth")
                                     for p in layout.shard_paths(layout.public_dir(root, s), k)} \
        | set(layout.shard_paths(layout.hidden_dir(root), "truth"))
    on_disk = {p for p in root.rglob("*") if p.is_file()} - {layout.manifest_path(root)}
    assert named == on_disk
    assert set(read_manifest(root)["files"]) == {layout.relpath(p, root) for p in on_disk}
    assert layout.is_release(root) and not layout.is_release(folder)
    assert layout.is_input_folder(layout.public_dir(root, "test"))
    assert not layout.is_input_folder(layout.hidden_dir(root)) and not layout.is_input_folder(folder)
    assert all(rel.startswith(layout.split_prefixes("test")) for rel in read_manifest(root)["files"]
               if "test" in rel)


def test_the_runner_reads_shards_without_pandas():
    """The sandboxed runner imports the release layout and shard reader, but never pandas or pyarrow."""
    code = ("import sys, skybench.harness.runner, skybench.release.layout, skybench.release.shards; "
            "print(sorted(m for m in ('pandas', 'pyarrow', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_shard_reading_refuses_a_fortran_ordered_file(tmp_path):
    np.save(tmp_path / layout.shard_name("images", 0), np.asfortranarray(np.ones((3, 2, 2), np.float32)))
    with pytest.raises(ShardError, match="Fortran"):
        list(iter_batches(tmp_path, "images", 2))


def test_prefetched_batches_are_the_plain_ones_and_a_truncated_shard_is_named(tmp_path):
    """The runner's read-ahead (two reused buffers, the next batch read on a thread) gives the batches of the plain
    reader, for every batch size and limit; a batch is valid until the next is drawn; a shard cut short is a
    ShardError naming it, not a short batch."""
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 2, 3, 3)).astype(np.float32) for n in (7, 5)]
    for i, a in enumerate(parts):
        np.save(tmp_path / layout.shard_name("images", i), a)
    for size, limit in ((1, None), (3, None), (4, 9), (16, None), (2, 0)):
        plain = [b.copy() for b in iter_batches(tmp_path, "images", size, limit)]
        ahead = [b.copy() for b in iter_batches(tmp_path, "images", size, limit, prefetch=True)]
        assert len(plain) == len(ahead) and all(np.array_equal(a, b) for a, b in zip(plain, ahead, strict=True))
        assert sum(len(b) for b in ahead) == (12 if limit is None else limit)
    stream = iter_batches(tmp_path, "images", 3, prefetch=True)
    first = next(stream)
    kept = first.copy()
    second = next(stream)
    assert np.array_equal(first, kept) and not np.shares_memory(first, second)  # the buffer drawn is left alone
    stream.close()  # stopping early ends the read-ahead thread
    last = tmp_path / layout.shard_name("images", 1)
    last.write_bytes(last.read_bytes()[:-40])
    for prefetch in (False, True):
        with pytest.raises(ShardError, match=f"{last.name}.*truncated"):
            list(iter_batches(tmp_path, "images", 4, prefetch=prefetch))


def test_a_model_returning_a_view_of_its_batch_keeps_its_predictions(tmp_path):
    """The runner reuses each batch's buffer two batches later: a python model that returns a view of its batch
    (one pixel per cut-out) must still get every cut-out's own pixel in predictions.npy."""
    from skybench.harness import runner

    images = np.arange(9 * 2 * 3 * 3, dtype=np.float32).reshape(9, 2, 3, 3)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / layout.shard_name("images", 0), images)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "predict.py").write_text("def load(d):\n    return None\ndef predict(m, b):\n    return b[:, 0, 1, 1]\n")
    (sub / "submission.yaml").write_text("team: t\nname: view\ntrack: lens-space\nformat: python\nmodel: predict.py\n")
    (tmp_path / "out").mkdir()
    info = runner.run(sub, inputs, tmp_path / "out" / "predictions.npy", batch_size=2, device="cpu")
    assert info["n"] == 9
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "predictions.npy"), images[:, 0, 1, 1])


def _table_release(out: Path, chunk_size: int, schema_drift: bool = False) -> Path:
    """A release whose chunks bring a table of several rows per object (as the detect task's objects per tile)."""
    counts = {"train": 7, "val": 3, "test": 8}

    def chunks(split, ranges):
        for a, b in ranges:
            ids = np.arange(a, b, dtype=np.int64)
            rows = pd.DataFrame({"tile": np.repeat(ids, 2), "x": np.repeat(ids, 2) * 1.5 + [0.0, 0.25] * len(ids),
                                 "kind": ["lens", "star"] * len(ids)})
            if schema_drift and a > 0:
                rows["x"] = rows["x"].astype(np.float32)
            yield (np.zeros((b - a, 1, 2, 2), np.float32), {"id": ids, "n": np.ones(b - a, np.int64)},
                   {"objects": rows})

    return write_release(out, info={"track": "toy", "profile": "demo", "seed": 0}, counts=counts,
                         image_shape=(1, 2, 2), make_chunks=chunks, chunk_size=chunk_size, label_columns=("n",),
                         progress=False, tables=("objects",))


def test_a_tasks_tables_are_public_for_training_hidden_for_test_and_hashed(tmp_path):
    root = _table_release(tmp_path / "r", 3)
    rel = open_release(root)
    assert read_manifest(root)["tables"] == ["objects"]
    assert rel.table("train", "objects")["tile"].tolist() == [t for t in range(7) for _ in (0, 1)]
    assert len(rel.table("val", "objects")) == 6
    with pytest.raises(PermissionError, match="hidden"):
        rel.table("test", "objects")
    hidden = rel.hidden("test").table("objects")
    assert hidden["tile"].tolist() == [t for t in range(8) for _ in (0, 1)] and set(hidden["kind"]) == {"lens", "star"}
    test_files = {p.name for p in layout.public_dir(root, "test").iterdir()}  # only the inputs and their ids
    assert test_files == {layout.index_path(root).name, layout.shard_name("images", 0)}
    files = read_manifest(root)["files"]
    for folder in (layout.public_dir(root, "train"), layout.public_dir(root, "val"), layout.hidden_dir(root)):
        assert layout.relpath(layout.table_path(folder, "objects"), root) in files
    # the same bytes whatever the chunks
    other = _table_release(tmp_path / "o", 5)
    assert read_manifest(other)["files"] == files


def test_a_table_whose_schema_changes_between_chunks_is_refused(tmp_path):
    with pytest.raises(ValueError, match="table 'objects' has columns .* give every chunk the same schema"):
        _table_release(tmp_path / "r", 3, schema_drift=True)
    assert not (tmp_path / "r").exists()
