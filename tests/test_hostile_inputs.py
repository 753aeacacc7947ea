"""Hostile inputs never stop the evaluator: each becomes its submission's FAILED record with a one-line reason,
and the honest submission evaluated with it keeps its score, record and predictions (issue 13).

Every test runs the real ``evaluate()`` on a hostile folder next to a good ``predictions``-format submission;
sandbox outputs are made hostile from inside the real sandbox by a ``python`` submission."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import bwrap_works, csv_submission, mlflow_store, python_submission
from typer.testing import CliRunner

from skybench.harness.evaluate import Outcome, discover_submissions, evaluate
from skybench.harness.submission import SubmissionError, load_submission
from skybench.harness.visibility import private_dir
from skybench.release import open_release

# Sandboxed end-to-end runs of the trust model's attacks: the full suite (`make test`), not the fast lane.
pytestmark = pytest.mark.slow

GOOD_SPEC = "team: evil\nname: {name}\ntrack: lens-space\nformat: python\nmodel: predict.py\n"
needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    return tmp_path


def _ids(release: Path) -> np.ndarray:
    return open_release(release).meta("test")["id"].to_numpy()


def _good(root: Path, release: Path) -> Path:
    ids = _ids(release)
    return csv_submission(root / "good", "good", ids, np.linspace(0, 1, len(ids)), team="honest")


def _folder(root: Path, name: str, spec: str | bytes | None = None) -> Path:
    """A python-format folder ``root/name`` with ``spec`` as its submission.yaml (None: none written)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text("def load(d): return None\ndef predict(m, b): return b.sum(axis=(1, 2, 3))\n")
    spec = GOOD_SPEC.format(name=name) if spec is None else spec
    (folder / "submission.yaml").write_bytes(spec.encode() if isinstance(spec, str) else spec)
    return folder


def _rm_deep(top: Path) -> None:
    """Remove a tree of any depth without recursion (shutil.rmtree, and so pytest's own clean-up of its
    temporary folders, recurse and would raise RecursionError on these trees)."""
    stack = [(str(top), False)]
    while stack:
        path, emptied = stack.pop()
        if emptied:
            os.rmdir(path)
            continue
        stack.append((path, True))
        with os.scandir(path) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, False))
                else:
                    os.unlink(e.path)


@pytest.fixture
def nest():
    """``nest(folder, depth)`` makes ``folder/d/d/.../d`` ``depth`` deep (through descriptors: no path-length
    limit); the trees are removed after the test."""
    made: list[Path] = []

    def make(folder: Path, depth: int) -> None:
        made.append(folder / "d")
        fd = os.open(folder, os.O_RDONLY)
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(fd)

    yield make
    for top in made:
        if top.exists():
            _rm_deep(top)


def _run(folders: list[Path], release: Path, out: Path, **kw) -> list[Outcome]:
    """evaluate() with the good submission last; it must not raise, and the good one must be intact."""
    outcomes = evaluate(folders, "lens-space", release, out=out, **kw)
    assert len(outcomes) == len(folders)
    good = outcomes[-1]
    assert good.status == "FINISHED", good.reason
    assert 0.0 <= good.metrics["auroc"] <= 1.0
    rec = json.loads((private_dir(good.record) / "evaluation.json").read_text())  # the organiser's full record
    assert rec["status"] == "FINISHED" and rec["metrics"]["auroc"] == good.metrics["auroc"]
    pred = pd.read_csv(private_dir(good.record) / "predictions.csv")
    assert len(pred) == len(_ids(release)) and pred["score"].notna().all()
    return outcomes


def _failed(outcome: Outcome, *words: str) -> None:
    assert outcome.status == "FAILED", (outcome.name, outcome.reason)
    reason = outcome.reason
    assert reason and "\n" not in reason and len(reason) <= 1000, reason
    for w in words:
        assert w in reason, (w, reason)
    assert all(c.isprintable() for c in reason), reason
    if outcome.record is not None:  # the record says the same
        assert json.loads((outcome.record / "evaluation.json").read_text())["status"] == "FAILED"


# --- submission.yaml: bounded, strict parsing ------------------------------------------------------------

def _laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):  # 9**10 strings once expanded
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


YAML_ATTACKS: dict[str, tuple[str | bytes, list[str]]] = {
    "non-utf8": (GOOD_SPEC.format(name="x").encode() + b"description: caf\xe9\n", ["not UTF-8", "0xe9", "offset"]),
    "nul-in-model": (GOOD_SPEC.format(name="x").replace("model: predict.py", 'model: "predict.py\\0.txt"'),
                     ["key 'model'", "control character", "\\x00"]),
    "escape-in-description": (GOOD_SPEC.format(name="x") + 'description: "\\e[2J\\e[31mred"\n',
                              ["key 'description'", "control character"]),
    "nested-flow": (GOOD_SPEC.format(name="x") + "description: " + "[" * 20_000 + "]" * 20_000 + "\n",
                    ["nested deeper than 8 levels"]),
    "nested-block": (GOOD_SPEC.format(name="x") + "description:\n"
                     + "".join(" " * i + f"k{i}:\n" for i in range(1, 200)), ["nested deeper than 8 levels"]),
    "billion-laughs": (_laughs() + GOOD_SPEC.format(name="x"), ["anchors and aliases"]),
    "laughs-in-a-key": (_laughs() + GOOD_SPEC.format(name="x").replace("name: x", "name: *j"),
                        ["anchors and aliases"]),
    "oversized": (GOOD_SPEC.format(name="x") + "description: " + "x" * 70_000 + "\n", ["larger than 64 KiB"]),
    "long-team": (GOOD_SPEC.format(name="x").replace("team: evil", "team: " + "t" * 600),
                  ["key 'team'", "pattern", "..."]),
    "markup-team": (GOOD_SPEC.format(name="x").replace("team: evil", "team: '[/]'"), ["key 'team'", "'[/]'"]),
    "dotdot-name": (GOOD_SPEC.format(name="a..b"), ["key 'name'", "'..'"]),
    "slash-name": (GOOD_SPEC.format(name="lens/finders"), ["key 'name'", "pattern"]),
    "long-contact": (GOOD_SPEC.format(name="x") + "contact: " + "c" * 300 + "\n", ["key 'contact'", "200"]),
    "python-tag": (GOOD_SPEC.format(name="x") + "description: !!python/object/apply:os.system [id]\n",
                   ["YAML syntax error", "python/object"]),
    # !!binary: the checks read bytes (pydantic decodes them to "predict.py"), the sandbox's runner str(b'...')
    "binary-model": (GOOD_SPEC.format(name="x").replace("model: predict.py", "model: !!binary cHJlZGljdC5weQ=="),
                     ["YAML syntax error", "tags", "binary", "not allowed"]),
    "str-tag": (GOOD_SPEC.format(name="x").replace("name: x", "name: !!str x"), ["tags", "not allowed"]),
}


def test_hostile_submission_yaml_is_failed_with_one_line(store, tmp_path, tiny_space_release):
    root = tmp_path / "subs"
    folders = [_folder(root, name, spec) for name, (spec, _) in YAML_ATTACKS.items()]
    link = _folder(root, "symlink-spec", None)  # submission.yaml a symlink to a valid spec elsewhere
    (link / "submission.yaml").unlink()
    (tmp_path / "elsewhere.yaml").write_text(GOOD_SPEC.format(name="x"))
    (link / "submission.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    fifo = _folder(root, "fifo-spec", None)
    (fifo / "submission.yaml").unlink()
    os.mkfifo(fifo / "submission.yaml")  # reading it would block forever
    start = time.monotonic()
    outcomes = _run([*folders, link, fifo, _good(root, tiny_space_release)], tiny_space_release,
                    tmp_path / "evals", publish=False)
    assert time.monotonic() - start < 120
    for (name, (_, words)), outcome in zip(YAML_ATTACKS.items(), outcomes, strict=False):
        _failed(outcome, "submission.yaml", *words)
        assert outcome.folder.name == name
        # the file as the team knows it, never the organiser's paths (here a folder outside the project)
        assert str(tmp_path) not in outcome.reason and "<submission>/submission.yaml" in outcome.reason, \
            outcome.reason
    _failed(outcomes[-3], "symlink")
    _failed(outcomes[-2], "not a regular file")


def test_a_folder_name_with_line_breaks_gives_a_one_line_reason_in_the_record(store, tmp_path, tiny_space_release):
    # the reason quotes the folder's path: "\r", "\x85" and "\u2028" (no "\n") reached evaluation.json, and so the
    # MLflow tag, as they were, a second line that can pose as another entry's result
    folder = _folder(tmp_path / "subs", "a\rhonest+good FINISHED auroc=0.99\x85x\u2028\x1b[2Jy", spec="team: [\n")
    outcome = evaluate([folder], "lens-space", tiny_space_release, out=tmp_path / "evals", publish=False)[0]
    _failed(outcome, "YAML syntax error")
    reason = json.loads((outcome.record / "evaluation.json").read_text())["reason"]
    assert "YAML syntax error" in reason and len(reason.splitlines()) == 1 and reason.isprintable(), reason


def test_overlong_or_markup_team_is_refused_at_load_with_a_clear_reason(tmp_path):
    folder = _folder(tmp_path, "long", GOOD_SPEC.format(name="x").replace("team: evil", "team: " + "t" * 600))
    with pytest.raises(SubmissionError) as info:
        load_submission(folder)
    msg = str(info.value)
    assert "key 'team'" in msg and "1-64 letters, digits" in msg and len(msg) < 400
    assert load_submission(_folder(tmp_path, "ok", None)).spec.team == "evil"


# --- submission folders: bounded, iterative walks -------------------------------------------------------

def test_hostile_folder_trees_are_failed(store, tmp_path, tiny_space_release, nest):
    root = tmp_path / "subs"
    deep1100, deep1500 = _folder(root, "deep-1100"), _folder(root, "deep-1500")
    nest(deep1100, 1100)
    nest(deep1500, 1500)
    many = _folder(root, "many-files")
    for i in range(10_001):
        (many / f"f{i}").touch()
    sparse = _folder(root, "sparse")
    with open(sparse / "weights.bin", "wb") as f:
        f.truncate(3 * 1024**3)  # 3 GiB that take no disk
    fifo = _folder(root, "fifo")
    os.mkfifo(fifo / "pipe")
    outcomes = _run([deep1100, deep1500, many, sparse, fifo, _good(root, tiny_space_release)], tiny_space_release,
                    tmp_path / "evals", publish=False)
    _failed(outcomes[0], "nested deeper than 32 levels")
    _failed(outcomes[1], "nested deeper than 32 levels")
    _failed(outcomes[2], "more than 10000 files")
    _failed(outcomes[3], "larger than 2 GiB")
    _failed(outcomes[4], "pipe", "not a regular file")


def test_discovery_survives_hostile_trees(tmp_path, monkeypatch, nest):
    monkeypatch.setenv("SKYBENCH_ROOT", str(tmp_path))
    subs = tmp_path / "submissions"
    good = _folder(subs / "a", "good", GOOD_SPEC.format(name="good"))
    nest(subs / "a", 1500)  # a 1,500-deep tree next to the submissions
    nest(good, 1100)
    bad_yaml = _folder(subs / "lens-space", "bad", b"track: lens-space\n\xff" + b"[" * 5000)
    nested = _folder(subs / "b", "nested", "track: " + "[" * 5000 + "]" * 5000 + "\n")
    linked = subs / "c" / "linked"
    linked.mkdir(parents=True)
    (linked / "submission.yaml").symlink_to(good / "submission.yaml")
    fifo = subs / "lens-space" / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "submission.yaml")  # reading it would block discovery forever
    found = discover_submissions("lens-space", roots=("submissions", "baselines"))
    assert good in found and bad_yaml in found and fifo in found  # their paths name the track: recorded
    assert nested not in found and linked not in found  # unreadable, and not named by the track


def test_a_track_that_is_not_a_string_does_not_stop_discovery(tmp_path, monkeypatch):
    # `track: [lens-space]` made `declared in accepted` raise TypeError (unhashable list): `skybench evaluate --track`
    # without folders, every evaluate stage of `dvc repro`, evaluated no team at all
    monkeypatch.setenv("SKYBENCH_ROOT", str(tmp_path))
    subs = tmp_path / "submissions"
    good = _folder(subs / "a", "good", GOOD_SPEC.format(name="good"))
    listed = _folder(subs / "b", "lens-space", GOOD_SPEC.format(name="x").replace("track: lens-space",
                                                                                  "track: [lens-space]"))
    mapping = _folder(subs / "c", "m", GOOD_SPEC.format(name="m").replace("track: lens-space", "track: {a: b}"))
    found = discover_submissions("lens-space", roots=("submissions", "baselines"))
    assert good in found and listed in found and mapping not in found  # decided by the path, as unreadable specs


# --- predictions CSV: plain text only, read by its own path -------------------------------------------

def test_compressed_or_linked_predictions_are_not_decompressed(store, tmp_path, tiny_space_release):
    ids = _ids(tiny_space_release)
    text = pd.DataFrame({"id": ids, "score": np.linspace(0, 1, len(ids))}).to_csv(index=False).encode()
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("p.csv", text)
    root = tmp_path / "subs"
    folders = []
    for name, payload in [("gz", gzip.compress(text)), ("bz2", bz2.compress(text)), ("zip", zipped.getvalue())]:
        folder = csv_submission(root / name, name, ids, np.zeros(len(ids)), team="evil")
        (folder / "scores.csv").write_bytes(payload)  # a .csv name, compressed content: parsed as text
        folders.append(folder)
    link = csv_submission(root / "link", "link", ids, np.zeros(len(ids)), team="evil")
    (link / "scores.csv").rename(link / "data.csv")
    (link / "data.csv").write_bytes(bz2.compress(text))
    (link / "scores.bz2").symlink_to("data.csv")  # the old evaluator inferred bz2 from this name
    (link / "submission.yaml").write_text((link / "submission.yaml").read_text().replace("scores.csv", "scores.bz2"))
    big = csv_submission(root / "big", "big", ids, np.zeros(len(ids)), team="evil")
    with open(big / "scores.csv", "ab") as f:
        f.truncate(65 * 1024**2)
    outcomes = _run([*folders, link, big, _good(root, tiny_space_release)], tiny_space_release, tmp_path / "evals",
                    publish=False)
    for o in outcomes[:3]:
        _failed(o, "scores.csv")
    _failed(outcomes[3], "key 'model'", "symlink")
    _failed(outcomes[4], "larger than 64 MiB")


@pytest.mark.timeout(300)  # it held the evaluator for hours
def test_wide_predictions_csv_rows_are_refused_before_pandas_reads_them(store, tmp_path, tiny_space_release):
    # pandas makes an object per header column (de-duplicating repeated names in quadratic time: 40,000 "a,"
    # took 27 s, 400,000 over 5 min) and an index level per extra field of the first row, in the evaluator
    ids = _ids(tiny_space_release)
    root = tmp_path / "subs"
    wide = {"header": b"a," * 400_000 + b"a\n",
            "quoted": b'"id","score"\n' + b'"a",' * 300_000 + b'"a"\n',
            "row": b"id,score\n" + b"1," * 400_000 + b"1\n",
            "mid-quote": b'id,score\nt"x,' + b"1," * 400_000 + b'"\n'}  # a quote inside a field opens nothing
    folders = []
    for name, payload in wide.items():
        folder = csv_submission(root / name, name, ids, np.zeros(len(ids)), team="evil")
        (folder / "scores.csv").write_bytes(payload)
        folders.append(folder)
    quoted = csv_submission(root / "quoted-ok", "quoted-ok", ids, np.zeros(len(ids)), team="evil")
    (quoted / "scores.csv").write_bytes(b'"id","score"\n' + b"".join(f'"{i}","0.5,"\n'.encode() for i in ids))
    outcomes = _run([*folders, quoted, _good(root, tiny_space_release)], tiny_space_release, tmp_path / "evals",
                    publish=False)
    for o in outcomes[:4]:
        _failed(o, "scores.csv", "more than 16 fields")
    _failed(outcomes[4], "non-numeric score")  # commas inside quotes are text: parsed, then refused for its value


@pytest.mark.timeout(60)
def test_a_bom_before_a_quote_does_not_hide_a_wide_row(tmp_path):
    # pandas skips a UTF-8 BOM, so its quote opens the first field and closes at `p,"`: 200,000 "a" columns
    # (quadratic de-duplication) the check must count, not read as the inside of a quoted field running to `"x"`
    from skybench.harness.submission import _read_csv

    path = tmp_path / "scores.csv"
    path.write_bytes(b'\xef\xbb\xbf"p,"' + b",a" * 200_000 + b',"x"\nid,score\n')
    frame, reason = _read_csv(path)
    assert frame is None and "more than 16 fields" in reason
    path.write_bytes(b'\xef\xbb\xbf"id","score"\n"1","0.5"\n')  # a BOM and quotes alone are a valid CSV
    frame, reason = _read_csv(path)
    assert reason == "" and list(frame.columns) == ["id", "score"]


@pytest.mark.timeout(60)
def test_a_predictions_csv_of_far_more_rows_than_objects_is_refused_before_pandas_reads_them(tmp_path):
    # 64 MiB of short rows (7.6 million distinct ids) held the evaluator, outside any sandbox limit, for a minute
    # at 1.8 GB before "unknown ids", whatever the test set's size: rows are counted first, by every terminator
    # pandas accepts (a CR-only file has no "\n")
    from skybench.harness.submission import read_detections_csv, read_predictions_csv
    from skybench.tracks import load_track

    ids = np.array([f"t{i:06d}" for i in range(64)])
    path = tmp_path / "scores.csv"
    for end in (b"\n", b"\r", b"\r\n"):
        path.write_bytes(b"id,score" + end + b"".join(b"%x,1%s" % (i, end) for i in range(200_000)))
        pred, reason = read_predictions_csv(path, ids)
        assert pred is None and "lines, for at most 64 predictions" in reason and "unknown ids" not in reason, reason
    # an honest file passes: CRLF endings, a blank line after each row, no final terminator
    path.write_bytes(b"id,score\r\n" + b"\r\n".join(b"%s,0.5\r\n" % i.encode() for i in ids))
    pred, reason = read_predictions_csv(path, ids)
    assert reason == "" and pred is not None and len(pred) == 64
    tiles = load_track("lens-tiles").for_profile("demo")
    k = tiles.output.max_candidates or 0
    path.write_bytes(b"tile_id,x,y,score\n" + b"3,1,1,1\n" * (3 * k * 2 + 100))
    pred, reason = read_detections_csv(path, np.array([3, 7, 11]), tiles.output, tiles.image_shape())
    assert pred is None and f"for at most {3 * k} predictions" in reason, reason


def test_a_score_beyond_any_float_is_a_reason_not_an_exception(tmp_path):
    # whole-number scores and one of 400 digits: pandas keeps the column as text and to_numeric raised
    # OverflowError in the evaluator (under Ray, in the driver: the run ended and every other job restarted)
    from skybench.harness.submission import read_predictions_csv

    path = tmp_path / "scores.csv"
    path.write_bytes(b"id,score\na," + b"9" * 400 + b"\nb,1\n")
    pred, reason = read_predictions_csv(path, np.array(["a", "b"]))
    assert pred is None and "not a number a float can hold" in reason and "\n" not in reason, reason


# --- sandbox outputs: only a plain .npy and the runner's own runner.json -------------------------------

TAMPER = """
import json, os
import numpy as np

_save = np.save
def load(d):
    mode = {mode!r}
    if mode == "npz":  # the runner's np.save writes an .npz archive under the .npy name
        np.save = lambda file, arr, *a, **k: np.savez(open(file, "wb"), predictions=arr)
    elif mode == "json":  # the runner's runner.json nested thousands deep
        json.dumps = lambda *a, **k: "[" * 4000 + "]" * 4000
    elif mode == "short":  # a header promising more than the file holds
        def save(file, arr, *a, **k):
            _save(file, arr)
            os.truncate(file, os.path.getsize(file) - 16)
        np.save = save
    elif mode == "object":  # a pickled object array
        np.save = lambda file, arr, *a, **k: _save(file, arr.astype(object), allow_pickle=True)
    elif mode == "symlink":  # predictions.npy a symlink into the submission
        np.save = lambda file, arr, *a, **k: os.symlink("/submission/predict.py", file)
    elif mode == "too-many":  # a valid .npy, far larger than any answer: refused on its header
        np.save = lambda file, arr, *a, **k: _save(file, np.zeros(10**7, np.float32))
    elif mode == "huge-header":  # a header of 10**12 rows on a tiny file
        def save(file, arr, *a, **k):
            with open(file, "wb") as f:
                np.lib.format.write_array_header_1_0(f, dict(descr="<f4", fortran_order=False, shape=(10**12,)))
        np.save = save
    elif mode == "negative-shape":  # shape (-8, -8): 64 values as the size check counts, no array numpy can make
        def save(file, arr, *a, **k):
            with open(file, "wb") as f:
                np.lib.format.write_array_header_1_0(f, dict(descr="<f4", fortran_order=False, shape=(-8, -8)))
                f.write(np.zeros(64, "<f4").tobytes())
        np.save = save
    return None

def predict(m, b):
    if {mode!r} == "complex":  # cast to float32 as it is, the imaginary part (all the scores here) is dropped
        return 1j * b.sum(axis=(1, 2, 3))
    return b.sum(axis=(1, 2, 3))
"""
TAMPER_WORDS = {"npz": ["not a .npy array"], "json": ["runner.json", "nested 4000 levels"],
                "short": ["bytes, but its header describes"], "object": ["non-numeric"],
                "symlink": ["no predictions file"], "too-many": ["returned 10000000 predictions, expected 64"],
                "huge-header": ["bytes, but its header describes"],
                "negative-shape": ["negative dimension", "(-8, -8)"], "complex": ["complex numbers"]}


@needs_bwrap
def test_hostile_sandbox_outputs_are_failed(store, tmp_path, tiny_space_release):
    root = tmp_path / "subs"
    folders = [python_submission(root, mode, TAMPER.format(mode=mode), team="evil") for mode in TAMPER_WORDS]
    good = _good(root, tiny_space_release)
    outcomes = _run([*folders, good], tiny_space_release, tmp_path / "evals", publish=False)
    for (mode, words), outcome in zip(TAMPER_WORDS.items(), outcomes, strict=False):
        assert outcome.name == mode
        _failed(outcome, *words)


SPARSE_OUTPUTS = """
import os
import numpy as np

_save = np.save
def load(d):  # the predictions made a sparse file of the whole /scratch size, which costs the sandbox nothing
    def save(file, arr, *a, **k):
        _save(file, arr)
        os.truncate(file, 255 << 20)
    np.save = save

def predict(m, b):
    return b.sum(axis=(1, 2, 3))
"""


@needs_bwrap
def test_sparse_sandbox_outputs_are_not_copied_to_the_host(tmp_path, tiny_space_release):
    # a hole costs the sandbox's tmpfs nothing; copied out it is written in full to the evaluator's disk
    from skybench.harness.submission import sandboxed_predict
    from skybench.tracks import load_track

    track = load_track("lens-space")
    track = track.model_copy(update={"sandbox": track.sandbox.model_copy(update={"scratch_mb": 256})})
    sub = load_submission(python_submission(tmp_path / "subs", "sparse", SPARSE_OUTPUTS, team="evil"))
    scratch = tmp_path / "scratch"
    res = sandboxed_predict(sub, tiny_space_release, scratch=scratch, track=track, gpu=False)
    assert not res.ok and not res.infrastructure, res.reason
    assert "predictions file is 267386880 bytes" in res.reason, res.reason  # seen as the sandbox left it
    on_disk = {p.name: p.stat().st_blocks * 512 for p in scratch.iterdir()}  # bytes the host's disk holds
    assert all(size <= 1 << 20 for size in on_disk.values()), on_disk


CLAIMS_CUDA = """
import json, os
import numpy as np
def load(d):  # right predictions, and the runner's info file written by the model: "cuda"
    np.save("/scratch/predictions.npy", np.zeros(64, np.float32))
    with open("/scratch/runner.json", "w") as f:
        json.dump({"device": "cuda", "n": 64}, f)
    os._exit(0)

def predict(m, b):
    return b.sum(axis=(1, 2, 3))
"""


@needs_bwrap
def test_a_run_without_a_gpu_is_recorded_on_the_cpu_whatever_it_writes(tmp_path, tiny_space_release):
    # runner.json is written inside the sandbox: a CPU run claimed "cuda" in its record and on the board
    from skybench.harness.submission import sandboxed_predict
    from skybench.tracks import load_track

    sub = load_submission(python_submission(tmp_path / "subs", "claims", CLAIMS_CUDA, team="evil"))
    res = sandboxed_predict(sub, tiny_space_release, scratch=tmp_path / "scratch", track=load_track("lens-space"),
                            gpu=False)
    assert res.device == "cpu", (res.device, res.reason)


@pytest.mark.parametrize("shape", [(-8, -8), (-1, -1), (4, -4, -4)])
def test_a_negative_dimension_in_an_npy_header_is_a_reason_not_an_exception(tmp_path, shape):
    # numpy's header parser accepts negative dimensions; raised in the parent, a Ray task's error would be
    # taken for the machine's (executors.is_infrastructure) and retried at every evaluation
    from skybench.harness.submission import _read_npy

    path = tmp_path / "predictions.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(np.zeros(abs(int(np.prod(shape))), "<f4").tobytes())
    reason = _read_npy(path, 64, lambda a: "")
    assert isinstance(reason, str) and "negative dimension" in reason, reason


@pytest.mark.parametrize("shape", [(64, True), (0, 2**70), (1,) * 65])
def test_an_npy_shape_no_array_can_have_is_a_reason_not_an_exception(tmp_path, shape):
    # raised in the parent, the evaluator's boundary made it "evaluation failed: TypeError: an integer is required"
    from skybench.harness.submission import _read_npy

    path = tmp_path / "predictions.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(np.zeros(int(np.prod(shape, dtype=object)), "<f4").tobytes())
    reason = _read_npy(path, 64, lambda a: "")
    assert isinstance(reason, str) and "invalid shape" in reason and "\n" not in reason, reason


@pytest.mark.parametrize("reader", ["predictions", "shard"])
def test_an_npy_header_too_deep_for_pythons_parser_is_a_reason_not_an_exception(tmp_path, reader):
    # numpy parses the header as a Python literal: "1-1-1-...-1" (4,000 terms, under the 10,000-byte cap) raised
    # RecursionError, which escaped the reader's reasons (`skybench validate` printed a traceback)
    import struct

    from skybench.harness.submission import _read_npy
    from skybench.release.shards import ShardError, read_shard

    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1" + b"-1" * 4000 + b",), }"
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    path = tmp_path / "predictions.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
    if reader == "shard":  # a corrupt release file: one error that names it
        with pytest.raises(ShardError, match="predictions.npy: not a .npy array.*RecursionError"):
            read_shard(path)
        return
    reason = _read_npy(path, 64, lambda a: "")
    assert isinstance(reason, str) and "not a .npy array: RecursionError" in reason, reason


def test_long_double_predictions_are_refused_before_they_are_read(tmp_path):
    # 16-byte values: an image track's answer read whole into the evaluator at twice a float64 answer's memory
    from skybench.harness.submission import _read_npy

    path = tmp_path / "predictions.npy"
    np.save(path, np.zeros(64, np.longdouble))
    reason = _read_npy(path, 64, lambda a: "")
    assert isinstance(reason, str) and "16-byte values" in reason, reason
    np.save(path, np.zeros(64, np.float64))
    assert not isinstance(_read_npy(path, 64, lambda a: ""), str)


DEEP_SCRATCH = """
import os
def load(d):  # a 1,500-deep tree in the scratch folder, left for the evaluator to clean up
    fd = os.open("/scratch", os.O_RDONLY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
def predict(m, b):
    return b.sum(axis=(1, 2, 3))
"""


@needs_bwrap
@pytest.mark.slow
def test_a_crash_while_cleaning_up_scratch_does_not_stop_the_others(store, tmp_path, tiny_space_release,
                                                                     monkeypatch):
    import tempfile

    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))  # the executor's scratch folders go here
    root = tmp_path / "subs"
    deep = python_submission(root, "deep-scratch", DEEP_SCRATCH, team="evil")
    after = python_submission(root, "after", "def load(d): return None\n"
                              "def predict(m, b): return b.sum(axis=(1, 2, 3))\n", team="honest")
    try:
        outcomes = _run([deep, after, _good(root, tiny_space_release)], tiny_space_release, tmp_path / "evals",
                        publish=False)
    finally:
        for left in scratch_root.iterdir():
            _rm_deep(left)
    if outcomes[0].status == "FAILED":  # the clean-up crashed (RecursionError) or refused: contained here
        _failed(outcomes[0])
    assert outcomes[1].status == "FINISHED", outcomes[1].reason


# --- one boundary per submission ------------------------------------------------------------------------

class _FaultyExecutor:
    """The real local executor, with an infrastructure fault (a full disk) injected for one submission, and a
    result the scorer cannot use (one prediction too few) for another."""

    name = "faulty"

    def __init__(self, victim: str, broken: str = "") -> None:
        self.victim, self.broken = victim, broken

    def run(self, jobs):
        from skybench.harness.executors import LocalExecutor

        for job in jobs:
            if job.sub.spec.name == self.victim:
                raise OSError(28, "No space left on device")
            for res in LocalExecutor().run([job]):
                if job.sub.spec.name == self.broken:
                    res.predictions = res.predictions[:-1]
                yield res


def test_one_submission_raising_anywhere_does_not_stop_the_others(store, tmp_path, tiny_space_release):
    ids = _ids(tiny_space_release)
    root = tmp_path / "subs"
    first = csv_submission(root / "first", "first", ids, np.linspace(1, 0, len(ids)), team="honest")
    victim = csv_submission(root / "victim", "victim", ids, np.linspace(1, 0, len(ids)), team="honest")
    blocked = csv_submission(root / "blocked", "blocked", ids, np.linspace(1, 0, len(ids)), team="honest")
    out = tmp_path / "evals"
    outcomes = _run([first, victim, blocked, _good(root, tiny_space_release)], tiny_space_release, out,
                    executor=_FaultyExecutor("victim", broken="blocked"))
    assert outcomes[0].status == "FINISHED" and 0 <= outcomes[0].metrics["auroc"] <= 1
    _failed(outcomes[1], "OSError", "No space left on device", f"(evaluating into {out})")  # where: no filename
    _failed(outcomes[2], "evaluation failed:")


# --- display: team-supplied text is never markup or terminal control -----------------------------------

def test_a_markdown_board_shows_team_text_as_text():
    """A failure reason is the team's own text: in leaderboard.md (GitHub, mkdocs) it must make no link, image,
    autolink, emphasis or extra column, and read back as the same text."""
    from markdown_it import MarkdownIt

    from skybench.tracking import leaderboard as lb

    reason = ("![ ](https://evil.example/p.png) [Organisers: log in](https://evil.example/login) <https://e.x> "
              "www.evil.example *bold* _it_ `code` a|b &amp; &#60;b&#62; \\[x\\](y)")
    board = pd.DataFrame({"rank": [1], "team": ["t[1](x)"], "name": ["n"], "auroc": [0.5], "status": ["FAILED"],
                          "reason": [reason]})
    md = lb.render(board, "markdown")
    assert "://" not in md and "www." not in md  # GFM autolinks need these unescaped
    html = MarkdownIt("commonmark").enable("table").render(md)
    assert "<a " not in html and "<img" not in html and "<em" not in html and "<strong" not in html
    assert "<code" not in html and html.count("<td") == board.shape[1], html
    assert "0.5000" in md and "t[1](x)" in MarkdownIt("commonmark").enable("table").render(md)
    from html import unescape

    assert unescape(html).count(reason) == 1, html


def test_markup_and_control_characters_are_shown_literally(store, tmp_path, tiny_space_release, capsys):
    from skybench.cli import app
    from skybench.tracking import leaderboard as lb
    from skybench.tracking.report import print_report

    ids = _ids(tiny_space_release)
    root = tmp_path / "subs"
    hostile = csv_submission(root / "m", "markup", [*ids[1:], "[/]", "[bold]x\x1b[2J"],
                             np.zeros(len(ids) + 1), team="evil")
    outcomes = _run([hostile, _good(root, tiny_space_release)], tiny_space_release, tmp_path / "evals")
    _failed(outcomes[0], "unknown ids", "'[/]'")
    result = CliRunner().invoke(app, ["leaderboard", "lens-space", "--all-releases"])
    assert result.exit_code == 0, result.output
    assert "'[/]'" in result.output and "\x1b" not in result.output and "\\x1b" in result.output

    board = pd.DataFrame({"rank": [1], "team": ["[/]"], "name": ["[bold]n<script>|x"], "status": ["FAILED"],
                          "reason": ["[red]boom[/red] \u202e \x1b[31m"]})
    table = lb.render(board, "table")
    assert "[/]" in table and "[bold]n<script>" in table and "[red]boom[/red]" in table
    assert "\x1b" not in table and "\u202e" not in table and "\\u202e" in table
    assert "<script>" not in lb.render(board, "html") and "&lt;script&gt;" in lb.render(board, "html")
    md = lb.render(board, "markdown")
    assert "<script>" not in md and "n&lt;script&gt;\\|x" in md

    releases = tmp_path / "releases"
    (releases / "[/]broken[bold]").mkdir(parents=True)  # no manifest: its error is shown in the table
    (releases / "lens-space").symlink_to(tiny_space_release)
    capsys.readouterr()
    print_report(releases)  # a leaderboard with the hostile row, and the broken release: no MarkupError
    shown = capsys.readouterr().out
    assert "[/]" in shown and "'[/]'" in shown and "\x1b" not in shown
