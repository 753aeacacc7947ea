"""The submission contract, in the spirit of scikit-learn's ``check_estimator``: every example format loads,
runs in the sandbox on a tiny release and returns (N,) finite float32 scores; broken or malicious
submissions are refused with a clear one-line reason, and the hidden labels never reach them."""

from __future__ import annotations

import importlib.util
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import bwrap_works, mlflow_store

from skybench.harness.submission import FORMATS, Submission, SubmissionError, load_submission, sandboxed_predict
from skybench.release import layout, open_release
from skybench.tracks import Evaluation, SandboxLimits, load_track

ROOT = Path(__file__).resolve().parents[1]


needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap missing or cannot create namespaces")


@pytest.fixture(scope="module")
def track():
    return load_track("lens-space")


@pytest.fixture(scope="module")
def fast_track(track):
    """lens-space with small limits and small batches (several batches, a partial last one)."""
    limits = SandboxLimits(memory_mb=1024, cpu_seconds=20, wall_seconds=30, max_processes=32)
    return track.model_copy(update={"sandbox": limits, "evaluation": Evaluation(batch_size=24)})


class Examples:
    """The example submissions, each format built on first use (the ONNX and Keras exports cost seconds)."""

    def __init__(self, root: Path, release: Path) -> None:
        spec = importlib.util.spec_from_file_location("make_examples", ROOT / "scripts" / "make_examples.py")
        assert spec is not None and spec.loader is not None
        self.maker = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.maker)
        self.root, self.release = root, release

    def __truediv__(self, fmt: str) -> Path:
        if not (self.root / fmt).is_dir():
            assert self.maker.make_examples(self.root, release=self.release, formats=(fmt,)) == [self.root / fmt]
        return self.root / fmt

    def all(self) -> list[Path]:
        return [self / fmt for fmt in FORMATS]


@pytest.fixture(scope="module")
def examples(tmp_path_factory, tiny_space_release) -> Examples:
    return Examples(tmp_path_factory.mktemp("examples"), tiny_space_release)


def index_ids(release: Path) -> np.ndarray:
    return open_release(release).meta("test")["id"].to_numpy()


def write_submission(folder: Path, spec: str, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "submission.yaml").write_text(textwrap.dedent(spec))
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def python_submission(folder: Path, predict_py: str) -> Submission:
    spec = "team: t\nname: evil\ntrack: lens-space\nformat: python\nmodel: predict.py\n"
    return load_submission(write_submission(folder, spec, {"predict.py": predict_py}))


# --- every example format meets the contract -------------------------------------------------------


# The framework formats' runs (TF, torch, sklearn start-up in the sandbox) take seconds each: `make test` only.
@needs_bwrap
@pytest.mark.parametrize("fmt", [pytest.param(f, marks=pytest.mark.slow) if f in ("onnx", "keras", "torch", "sklearn")
                                 else f for f in FORMATS])
def test_example_meets_contract(fmt, examples, tiny_space_release, track, tmp_path):
    sub = load_submission(examples / fmt)
    assert (sub.spec.team, sub.spec.name, sub.spec.track, sub.spec.format) == (
        "examples", f"{fmt}-example", "lens-space", fmt)
    assert sub.model_path.stat().st_size < 200_000
    assert load_submission(examples / fmt).sha256 == sub.sha256  # the content hash is stable

    res = sandboxed_predict(sub, tiny_space_release, scratch=tmp_path / "scratch", track=track)
    assert res.ok, (res.reason, res.log[-3000:])
    ids = index_ids(tiny_space_release)
    assert np.array_equal(res.ids, ids)
    p = res.predictions
    assert p is not None and p.dtype == np.float32 and p.shape == (len(ids),)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert np.ptp(p) > 0  # the scores depend on the images
    assert res.device == "none" if fmt == "predictions" else res.device in ("cpu", "cuda")


@needs_bwrap
def test_sandboxed_scores_equal_in_process_scores(examples, tiny_space_release, fast_track, tmp_path):
    """Batching (24 per batch, partial last batch), streaming order and ``limit`` keep every score in place."""
    from skybench.release.reader import open_release

    images = np.asarray(open_release(tiny_space_release).images("test"))
    ns: dict = {}
    exec((examples / "python" / "predict.py").read_text(), ns)
    expected = ns["predict"](ns["load"](str(examples / "python")), images)

    res = sandboxed_predict(load_submission(examples / "python"), tiny_space_release,
                            scratch=tmp_path / "a", track=fast_track, limit=50)
    assert res.ok, res.reason
    assert np.array_equal(res.ids, index_ids(tiny_space_release)[:50])
    np.testing.assert_allclose(res.predictions, expected[:50], rtol=1e-6)
    # the CSV of the predictions example holds the same scores, reordered to the index order
    csv = sandboxed_predict(load_submission(examples / "predictions"), tiny_space_release,
                            scratch=tmp_path / "b", track=fast_track)
    np.testing.assert_allclose(csv.predictions, expected, rtol=1e-5)


def test_content_hash_changes_with_any_file(examples, tmp_path):
    folder = shutil.copytree(examples / "python", tmp_path / "sub")
    before = load_submission(folder).sha256
    (folder / "notes.txt").write_text("x")
    assert load_submission(folder).sha256 != before


def test_content_hash_is_one_folder_per_hash(examples, tmp_path):
    """A symlink's target may hold a newline: written as it is, the symlink a -> "T\nb" and the file c spelled
    the same records as the symlink a -> "T" and the file "b\nc", so two different folders (git commits both)
    shared one hash, and a changed folder passed as unchanged."""
    one, two = (shutil.copytree(examples / "python", tmp_path / n) for n in ("one", "two"))
    (one / "a").symlink_to("T\nb")
    (one / "c").write_text("weights")
    (two / "a").symlink_to("T")
    (two / "b\nc").write_text("weights")
    assert load_submission(one).sha256 != load_submission(two).sha256


# --- schema errors name the file and the key ------------------------------------------------------

GOOD = {"team": "t", "name": "n", "track": "lens-space", "format": "onnx", "model": "model.onnx"}


@pytest.mark.parametrize("change, words", [
    ({"fromat": "onnx"}, ["key 'fromat'", "unknown key", "allowed: team, name, track, format, model"]),
    ({"team": None}, ["key 'team'", "missing required key"]),
    ({"team": 3}, ["key 'team'", "expected string, got int 3"]),
    ({"format": "tensorflow"}, ["key 'format'", "must be one of onnx, keras", "'tensorflow'"]),
    ({"track": "lens-mars"}, ["key 'track'", "unknown track 'lens-mars'", "lens-space"]),
    ({"model": "../model.onnx"}, ["key 'model'", "escapes the submission folder"]),
    ({"model": "/etc/passwd"}, ["key 'model'", "must be relative"]),
    ({"model": "nothere.onnx"}, ["key 'model'", "'nothere.onnx' not found"]),
    ({"format": "keras"}, ["key 'model'", "needs a .keras file"]),
])
def test_schema_errors_name_file_and_key(tmp_path, change, words):
    import yaml

    spec = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    folder = write_submission(tmp_path, yaml.safe_dump(spec), {"model.onnx": ""})
    with pytest.raises(SubmissionError) as info:
        load_submission(folder)
    msg = str(info.value)
    assert msg.startswith(f"{folder / 'submission.yaml'}: ")
    for w in words:
        assert w in msg


def test_yaml_syntax_error_names_line(tmp_path):
    folder = write_submission(tmp_path, "team: t\nname: [unclosed\ntrack: lens-space\n", {})
    with pytest.raises(SubmissionError, match=r"submission.yaml: YAML syntax error at line \d+"):
        load_submission(folder)
    with pytest.raises(SubmissionError, match="elsewhere: missing: no such submission folder"):
        load_submission(tmp_path / "elsewhere")


@pytest.mark.parametrize("value", ["2027-13-45", "1" * 5000])  # a date PyYAML refuses; an int past 4,300 digits
def test_a_value_pyyaml_refuses_is_a_yaml_error_at_its_line_not_a_crash(tmp_path, value):
    """PyYAML's date and int constructors raise a bare ValueError; the server's intake answered 500 and
    `skybench validate` printed the message without the file."""
    folder = write_submission(tmp_path, f"team: t\nname: n\ndescription: {value}\n", {})
    with pytest.raises(SubmissionError, match=r"submission.yaml: YAML syntax error at line 3, column 14: "):
        load_submission(folder)


# --- evaluation safety: malicious or broken python submissions ------------------------------------

# The probe's paths come from the layout: renaming a folder must not make it look in the wrong place and pass.
LEAK_PROBE = """
    import fnmatch
    import os
    import numpy as np

    RELEASE = {release!r}
    CANDIDATES = ["/inputs/../" + {hidden_meta!r}, "/" + {hidden_meta!r},
                  RELEASE + "/" + {hidden_meta!r}, RELEASE + "/" + {manifest!r},
                  RELEASE + "/" + {train_meta!r}]

    def leaks(walk=True):
        found = []
        for path in CANDIDATES:
            try:
                with open(path, "rb") as f:
                    f.read(1)
                found.append(path)
            except OSError:
                pass
        for top, dirs, files in os.walk("/") if walk else ():
            dirs[:] = [d for d in dirs if (top, d) not in SKIP and d != "site-packages"]
            found += [os.path.join(top, n) for n in dirs + files if {hidden!r} in n or n == {meta!r}]
        try:
            open("/inputs/planted", "w").close()
            found.append("/inputs is writable")
        except OSError:
            pass
        return found

    SKIP = {{("/", "proc"), ("/", "sys"), ("/", "dev"), ("/", "usr")}}

    def load(model_dir):
        names = os.listdir("/inputs")
        assert all(n == {index!r} or fnmatch.fnmatch(n, {images!r}) for n in names), names
        return None

    def predict(model, batch):
        if found := leaks():
            raise RuntimeError(f"LEAK: {{found}}")
        return np.zeros(len(batch), np.float32)
"""


@needs_bwrap
def test_hidden_labels_are_out_of_reach(tiny_space_release, fast_track, tmp_path):
    code = LEAK_PROBE.format(release=str(tiny_space_release.resolve()), hidden=layout.HIDDEN, meta=layout.META,
                             hidden_meta=layout.relpath(layout.meta_path(layout.hidden_dir(".", "test")), "."),
                             train_meta=layout.relpath(layout.public_meta_path(".", "train"), "."),
                             manifest=layout.MANIFEST, index=layout.INDEX, images=layout.shard_pattern("images"))
    ns: dict = {}
    exec(textwrap.dedent(code), ns)
    assert len(ns["leaks"](walk=False)) >= 3  # outside the sandbox the probe does see the labels
    res = sandboxed_predict(python_submission(tmp_path / "sub", code), tiny_space_release,
                            scratch=tmp_path / "scratch", track=fast_track)
    assert res.ok, res.reason
    assert not (layout.public_dir(tiny_space_release, "test") / "planted").exists()


@needs_bwrap
@pytest.mark.parametrize("predict_body, expected", [
    ("s = np.zeros(len(batch)); s[:2] = [np.nan, np.inf]; return s",
     "returned 6 non-finite values (NaN/inf)"),  # 2 per batch, 3 batches of 24
    ("return np.zeros((len(batch), 2))", "returned shape (64, 2), expected (64,)"),
    ("return np.zeros(3)", "returned 9 predictions, expected 64 (one per input)"),
    ("return ['lens'] * len(batch)", "runner: batch 0: predictions are not numeric"),
    ("raise RuntimeError('boom 42')", "exited with status 1: runner: predict failed on batch 0"),
    ("import time\n    while True: pass", "exceeded the wall-time limit of 3 s"),
])
def test_bad_predictions_are_refused(predict_body, expected, tiny_space_release, fast_track, tmp_path):
    code = f"import numpy as np\ndef load(d): return None\ndef predict(model, batch):\n    {predict_body}\n"
    track = fast_track.model_copy(update={"sandbox": fast_track.sandbox.model_copy(update={"wall_seconds": 3})})
    res = sandboxed_predict(python_submission(tmp_path / "sub", code), tiny_space_release,
                            scratch=tmp_path / "scratch", track=track)
    assert not res.ok and res.predictions is None
    assert expected in res.reason, res.reason
    assert "\n" not in res.reason
    if "boom" in expected:
        assert "RuntimeError: boom 42" in res.reason


@needs_bwrap
def test_missing_functions_are_named(tiny_space_release, fast_track, tmp_path):
    res = sandboxed_predict(python_submission(tmp_path / "sub", "def predict(m, x): return x\n"),
                            tiny_space_release, scratch=tmp_path / "scratch", track=fast_track)
    assert not res.ok and "runner: predict.py must define load()" in res.reason


@needs_bwrap
def test_corrupt_model_file_is_named(tiny_space_release, fast_track, tmp_path):
    spec = "team: t\nname: broken\ntrack: lens-space\nformat: onnx\nmodel: model.onnx\n"
    folder = write_submission(tmp_path / "sub", spec, {"model.onnx": "not a model"})
    res = sandboxed_predict(load_submission(folder), tiny_space_release, scratch=tmp_path / "s",
                            track=fast_track)
    assert not res.ok and "runner: model file does not load as ONNX" in res.reason


# --- the predictions format: a CSV checked against the index, no code runs ------------------------


def _csv_submission(folder: Path, ids, scores) -> Submission:
    spec = "team: t\nname: csv\ntrack: lens-space\nformat: predictions\nmodel: p.csv\n"
    write_submission(folder, spec, {})
    pd.DataFrame({"id": ids, "score": scores}).to_csv(folder / "p.csv", index=False)
    return load_submission(folder)


def test_predictions_csv_is_reordered_to_the_index(tiny_space_release, track, tmp_path):
    ids = index_ids(tiny_space_release)
    order = np.random.default_rng(0).permutation(len(ids))
    sub = _csv_submission(tmp_path, ids[order], ids[order] / 100.0)
    res = sandboxed_predict(sub, tiny_space_release, scratch=tmp_path / "s", track=track, limit=10)
    assert res.ok and res.device == "none"
    assert np.array_equal(res.ids, ids[:10])
    np.testing.assert_allclose(res.predictions, ids[:10] / 100.0, rtol=1e-6)


@pytest.mark.parametrize("edit, expected", [
    (lambda ids, s: (ids[2:], s[2:]), "p.csv: 2 missing ids ('0', '1')"),
    (lambda ids, s: ([*ids, 999], [*s, 0.5]), "p.csv: 1 unknown ids ('999')"),
    (lambda ids, s: ([*ids, ids[0]], [*s, 0.5]), "p.csv: 1 duplicated ids ('0')"),
    (lambda ids, s: (ids, [np.nan, *s[1:]]), "p.csv: 1 non-finite score (NaN/inf/empty)"),
    (lambda ids, s: (ids, ["high", *s[1:]]), "p.csv: non-numeric score for 1 ids ('0')"),
])
def test_predictions_csv_errors(edit, expected, tiny_space_release, track, tmp_path):
    ids = index_ids(tiny_space_release)
    sub = _csv_submission(tmp_path, *edit(list(ids), list(np.linspace(0, 1, len(ids)))))
    res = sandboxed_predict(sub, tiny_space_release, scratch=tmp_path / "s", track=track)
    assert not res.ok and res.predictions is None
    assert res.reason == expected


def test_predictions_csv_needs_id_and_score_columns(tiny_space_release, track, tmp_path):
    sub = _csv_submission(tmp_path, [0], [0.5])
    (tmp_path / "p.csv").write_text("ident,prob\n0,0.5\n")
    res = sandboxed_predict(sub, tiny_space_release, scratch=tmp_path / "s", track=track)
    assert res.reason == "p.csv: expected the columns id,score, got ident,prob"


@pytest.mark.slow
def test_every_format_scores_through_the_evaluation_stage(examples, tiny_space_release, tmp_path, monkeypatch):
    from skybench.harness.evaluate import evaluate
    from skybench.tracking import leaderboard as lb
    from skybench.tracks import load_track

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    outcomes = evaluate(examples.all(), "lens-space", tiny_space_release, out=tmp_path / "evals")
    assert sorted(o.name for o in outcomes) == sorted(f"{f}-example" for f in FORMATS)
    for o in outcomes:
        assert o.status == "FINISHED", (o.name, o.reason)
        assert 0.0 <= o.metrics["auroc"] <= 1.0 and o.metrics["auroc_ci_low"] <= o.metrics["auroc_ci_high"]
    board = lb.leaderboard(load_track("lens-space"))
    assert board["rank"].notna().sum() == len(FORMATS)
