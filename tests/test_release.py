"""Releases: byte-identical for a seed, hashed in the manifest, verified, and written atomically."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from skybench.cli import app
from skybench.release import layout, open_release, read_manifest, verify_release, write_release
from skybench.simulate import simulate_release


def _name(path):
    """The manifest's name of a path inside a release (built from the layout, never spelled here)."""
    return layout.relpath(path, ".")


TEST_IMAGES = _name(layout.public_dir(".", "test") / layout.shard_name("images", 0))


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path, tiny_ground_release):
    # One worker here, several for the fixture: the bytes must not depend on it.
    again = simulate_release("lens-ground", tmp_path / "again", seed=3, size=48, progress=False, workers=1,
                             chunk_size=20)
    assert _files(again) == _files(tiny_ground_release)
    other = simulate_release("lens-ground", tmp_path / "other", seed=4, size=48, progress=False)
    a, b = _files(other), _files(tiny_ground_release)
    assert a.keys() == b.keys()
    assert a[TEST_IMAGES] != b[TEST_IMAGES]


def test_manifest_describes_the_release(tiny_ground_release):
    m = read_manifest(tiny_ground_release)
    assert m["track"] == "lens-ground" and m["profile"] == "demo" and m["seed"] == 3
    assert m["bands"] == ["u", "g", "r", "i"] and m["pixel_scale"] == 0.2
    assert m["image_shape"] == [4, 101, 101] and m["counts"]["test"] == 48
    assert set(m["files"]) >= {_name(layout.public_meta_path(".", "train")),
                               _name(layout.public_meta_path(".", "test")),
                               _name(layout.meta_path(layout.hidden_dir(".", "test"))), TEST_IMAGES}
    images = np.load(tiny_ground_release / TEST_IMAGES, mmap_mode="r")
    assert images.dtype == np.float32 and images.shape == (48, 4, 101, 101)


def test_test_labels_are_only_in_hidden(tiny_ground_release):
    public = open_release(tiny_ground_release).meta("test")
    hidden = open_release(tiny_ground_release).hidden("test").meta()
    assert list(public.columns) == ["id"]
    assert "is_lens" in hidden.columns and (hidden.id.to_numpy() == public.id.to_numpy()).all()


def test_verify_passes_and_names_a_changed_file(tmp_path, tiny_space_release):
    assert verify_release(tiny_space_release) == []
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_space_release, copy)
    shard = layout.shard_paths(layout.public_dir(copy, "train"), "images")[0]  # corrupted on purpose
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify_release(copy)
    assert len(problems) == 1 and layout.relpath(shard, copy) in problems[0]
    result = CliRunner().invoke(app, ["verify", str(copy)])
    assert result.exit_code != 0 and "images-00000.npy" in result.output


def test_verify_rejects_a_folder_without_manifest(tmp_path):
    result = CliRunner().invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code != 0 and layout.MANIFEST in result.output


def test_a_shard_linked_from_elsewhere_fails_verification_with_the_same_bytes(tmp_path, tiny_space_release):
    # the sandbox binds the release's folders: a link out of them reads as missing there, and every model
    # submission would be recorded FAILED (and kept so) for the release's fault
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_space_release, copy)
    shard = layout.shard_paths(layout.public_dir(copy, "test"), "images")[0]
    elsewhere = tmp_path / "elsewhere.npy"
    shutil.move(shard, elsewhere)
    shard.symlink_to(elsewhere)
    problems = verify_release(copy)
    assert len(problems) == 1 and "symbolic link" in problems[0] and layout.relpath(shard, copy) in problems[0]


def _rehash(root, edit=lambda m: None):
    """Rewrite the manifest of ``root`` with its files' current sizes and digests, after ``edit(manifest)``: a
    release whose every file matches the manifest, as someone who edited both would leave it."""
    import hashlib
    import json

    manifest = read_manifest(root)
    for rel in manifest["files"]:
        data = (root / rel).read_bytes()
        manifest["files"][rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    edit(manifest)
    layout.manifest_path(root).write_text(json.dumps(manifest))


def test_verify_names_counts_that_the_files_do_not_hold(tmp_path, tiny_space_release):
    # every file matches its digest; the manifest's count of training objects does not match the files
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_space_release, copy)
    n = read_manifest(copy)["counts"]["train"]
    _rehash(copy, lambda m: m["counts"].update(train=n + 1))
    problems = verify_release(copy)
    assert len(problems) == 2 and all(f"{n} rows, the manifest says {n + 1}" in p for p in problems), problems
    assert any(layout.META in p for p in problems) and any("images-" in p for p in problems)
    result = CliRunner().invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1 and "the manifest says" in result.output, result.output


def test_a_test_shard_cut_short_with_a_matching_digest_is_refused_before_scoring(tmp_path, tiny_space_release):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_space_release, copy)
    shard = layout.shard_paths(layout.public_dir(copy, "test"), "images")[0]
    np.save(shard, np.load(shard)[:-1])
    _rehash(copy)
    problems = verify_release(copy, only=layout.split_prefixes("test"))
    assert len(problems) == 1 and "rows, the manifest says" in problems[0], problems
    result = CliRunner().invoke(app, ["evaluate", "--track", "lens-space", "--release", str(copy), "--out",
                                      str(tmp_path / "e"), "--no-log", str(tmp_path)])
    assert result.exit_code == 1 and "fails verification" in result.output, result.output


def test_a_shard_whose_bytes_fall_short_of_its_header_fails_verification(tmp_path, tiny_space_release):
    """Three rows' bytes cut off a shard (its header still counting them) under a manifest rehashed to match:
    verify said "all files match" and the sandboxed runner failed the submission for the release's damage."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_space_release, copy)
    shard = layout.shard_paths(layout.public_dir(copy, "test"), "images")[0]
    row = int(np.prod(np.load(shard, mmap_mode="r").shape[1:])) * 4
    shard.write_bytes(shard.read_bytes()[:-3 * row])
    _rehash(copy)
    problems = verify_release(copy, only=layout.split_prefixes("test"))
    assert len(problems) == 1 and shard.name in problems[0] and "header's" in problems[0], problems


def test_verify_names_a_per_object_shape_the_manifest_does_not_list(tmp_path, tiny_space_release):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_space_release, copy)
    _rehash(copy, lambda m: m["arrays"].update(images=[1, 2, 2]))
    problems = verify_release(copy)
    assert problems and all("the manifest says [1, 2, 2]" in p for p in problems), problems


@pytest.mark.parametrize("hidden", [3, [1], {"labels": 1}])
def test_verify_names_a_hidden_arrays_entry_that_is_not_a_list_of_names(tmp_path, tiny_space_release, hidden):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_space_release, copy)
    _rehash(copy, lambda m: m.update(hidden_arrays=hidden))
    problems = verify_release(copy)
    assert problems == [f"{layout.manifest_path(copy)}: corrupt manifest (no 'counts' of objects, 'arrays' of "
                        "per-object shapes or 'hidden_arrays' list of names)"], problems


def test_a_swap_that_cannot_rename_the_new_folder_in_puts_the_old_one_back(tmp_path, monkeypatch):
    from skybench.common import swap_in

    dest, new = tmp_path / "board", tmp_path / ".board.new"
    dest.mkdir()
    (dest / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    rename = Path.rename

    def refuse_new(self, target):
        if self == new:
            raise OSError(28, "No space left on device")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", refuse_new)
    with pytest.raises(OSError, match="No space left"):
        swap_in(new, dest)
    assert (dest / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [".board.new", "board"]
    monkeypatch.setattr(Path, "rename", rename)
    swap_in(new, dest)
    assert (dest / "a").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["board"]


HEAD = b'{"format": "skybench-release/1"'


@pytest.mark.parametrize("manifest", [b"[1, 2]", HEAD + b"}", b"\xff\xfe{", b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                                      HEAD + b', "files": {}, "counts": {}}',  # no track: every command reads it
                                      HEAD + b', "files": {"a": {"sha256": "0"}}}',
                                      HEAD + b', "files": {"../x": {"bytes": 0, "sha256": ""}}}'])
def test_a_corrupt_manifest_is_one_line_naming_it(tmp_path, tiny_space_release, manifest):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_space_release, copy)
    layout.manifest_path(copy).write_bytes(manifest)
    for command in (["verify", str(copy)], ["evaluate", "--track", "lens-space", "--release", str(copy),
                                             "--out", str(tmp_path / "e"), "--no-log", str(tmp_path)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1, result.output
        assert "corrupt manifest" in result.output and layout.MANIFEST in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_failed_write_leaves_the_previous_release_intact(tmp_path, tiny_space_release):
    import shutil

    out = tmp_path / "rel"
    shutil.copytree(tiny_space_release, out)
    before = _files(out)

    def failing_chunks(split, ranges):
        for start, stop in ranges:
            if split == "val":
                raise OSError(28, "No space left on device")
            yield np.zeros((stop - start, 1, 4, 4), np.float32), pd.DataFrame({"id": range(start, stop)})

    with pytest.raises(OSError, match="No space"):
        write_release(out, info={}, counts={"train": 10, "val": 5, "test": 5}, image_shape=(1, 4, 4),
                      make_chunks=failing_chunks, progress=False)
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["rel"]  # no temporary folder left behind


def test_shards_hashed_as_written_and_files_finish_replaced_hashed_again(tmp_path, monkeypatch):
    """The writer hashes each shard as it writes it and reads back only the other files: the metadata tables and
    what ``finish`` wrote (fold_in's new test stream). Every digest in the manifest is the file's own."""
    import hashlib
    import os

    from skybench.release import writer

    reread: list[str] = []
    plain = writer.sha256_files
    monkeypatch.setattr(writer, "sha256_files",
                        lambda paths: reread.extend("/".join(p.parts[-3:]) for p in paths) or plain(paths))

    def chunks(split, ranges):
        for start, stop in ranges:
            rng = np.random.default_rng(start)
            yield rng.normal(size=(stop - start, 2, 4, 4)).astype(np.float32), pd.DataFrame({"id": range(start, stop)})

    def finish(root):  # as fold_in: the test stream is a new file in place of the old one
        shard = layout.shard_paths(layout.public_dir(root, "test"), "images")[0]
        new = shard.with_name("new.npy")
        np.save(new, np.ones((7, 2, 4, 4), np.float32))
        os.replace(new, shard)
        return {}

    out = write_release(tmp_path / "rel", info={"track": "t"}, counts={"train": 30, "val": 5, "test": 7},
                        image_shape=(2, 4, 4),
                        make_chunks=chunks, chunk_size=4, shard_size=16, progress=False, finish=finish)
    assert verify_release(out) == []
    files = read_manifest(out)["files"]
    for rel, entry in files.items():
        assert entry["sha256"] == hashlib.sha256((out / rel).read_bytes()).hexdigest(), rel
    assert len([rel for rel in files if rel.endswith(".npy")]) == 4  # train 2, val 1, test 1
    assert [n for n in reread if n.endswith(".npy")] == ["public/test/images-00000.npy"]  # the one finish replaced
    assert set(files) - {n for n in reread} == {"public/train/images-00000.npy", "public/train/images-00001.npy",
                                                "public/val/images-00000.npy"}


def test_cli_simulate_writes_a_release(tmp_path):
    result = CliRunner().invoke(app, ["simulate", "lens-space", "--out", str(tmp_path / "r"), "--size", "8",
                                      "--seed", "2"])
    assert result.exit_code == 0, result.output
    m = read_manifest(tmp_path / "r")
    assert m["counts"] == {"train": 8, "val": 2, "test": 8}


def test_cli_simulate_names_an_unknown_track(tmp_path):
    result = CliRunner().invoke(app, ["simulate", "no-such-track", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and "no-such-track" in result.output


def test_cli_simulate_says_when_the_tracks_real_set_is_not_folded_in(tmp_path, monkeypatch, root):
    """lens-space names releases/real-lens-space as its real set; without it the release was written with no
    word, and every real_* metric of its leaderboard stayed empty."""
    import shutil

    shutil.copytree(root / "benchmarks", tmp_path / "project" / "benchmarks")
    monkeypatch.setenv("SKYBENCH_ROOT", str(tmp_path / "project"))
    result = CliRunner().invoke(app, ["simulate", "lens-space", "--out", str(tmp_path / "r"), "--size", "8"])
    assert result.exit_code == 0, result.output
    assert "note: the track's real set releases/real-lens-space is not in this test set" in result.output
    assert read_manifest(tmp_path / "r")["real_set"]["folded_in"] is False
