"""`skybench validate`: two batch sizes, the model's own error with the input it was fed, a hint for the common
mistakes, and `--score` on the public validation split. Real models (torch.export, Keras) in the real sandbox."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, bwrap_works, python_submission
from typer.testing import CliRunner

from skybench.cli import app
from skybench.harness.runner import predict_hint
from skybench.release.reader import open_release

# Each case runs the sandbox at two batch sizes: the full suite (`make test`), not the fast lane.
pytestmark = pytest.mark.slow

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap missing or cannot create namespaces")
EXAMPLES = ROOT / "submissions" / "examples" / "lens-space"
SHAPE = (1, 101, 101)  # lens-space: one band (VIS), 101 x 101 pixels


def _folder(root: Path, name: str, fmt: str, model: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "submission.yaml").write_text(f"team: tests\nname: {name}\ntrack: lens-space\nformat: {fmt}\n"
                                            f"model: {model}\n")
    return folder


def _readable(folder: Path) -> Path:
    for p in (folder.parent, folder, *folder.iterdir()):
        p.chmod(0o755)
    return folder


def _validate(folder: Path, release: Path, *extra: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["validate", str(folder), "--release", str(release), *extra])
    return res.exit_code, res.output


def test_hints_name_the_common_mistakes() -> None:
    keras_msg = ("ValueError: Input 0 of layer \"conv2d\" is incompatible with the layer: expected axis -1 of input "
                 "shape to have value 1, but received input with shape (7, 1, 101, 101)")
    assert "channels-last" in predict_hint(keras_msg, (7, *SHAPE), set())
    torch_msg = "RuntimeError: Expected input at *args[0].shape[0] to be equal to 8, but got 256"
    assert "static batch" in predict_hint(torch_msg, (256, *SHAPE), set())
    assert "worked at batch size 256, fails at 3" in predict_hint("RuntimeError: boom", (3, *SHAPE), {256})
    assert predict_hint("ZeroDivisionError: division by zero", (256, *SHAPE), set()) == ""

    # a model made for another cut-out size or band count (ONNX Runtime's and torch.export's own words)
    onnx_size = ("InvalidArgument: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: x "
                 "for the following indices index: 2 Got: 101 Expected: 64 index: 3 Got: 101 Expected: 64")
    assert "another image size (64 on axis 2); it gets (N, 1, 101, 101): crop or resize" in predict_hint(
        onnx_size, (256, *SHAPE), set())
    hint = predict_hint("AssertionError: Guard failed: x.size()[3] == 64", (7, *SHAPE), set())
    assert "another image size (64 on axis 3)" in hint
    hint = predict_hint("AssertionError: Guard failed: x.size()[1] == 1", (7, 4, 101, 101), set())
    assert hint.startswith("the model expects 1 band(s); this track gives 4")
    assert "static batch" in predict_hint("AssertionError: Guard failed: x.size()[0] == 8", (7, *SHAPE), set())

    # a python model of a pair-input track that takes its batch for one array (numpy's and python's own words)
    for msg in ("AttributeError: 'tuple' object has no attribute 'shape'",
                "ValueError: setting an array element with a sequence. The requested array has an inhomogeneous "
                "shape after 1 dimensions. The detected shape was (2,) + inhomogeneous part."):
        assert "batch is a tuple of 2 arrays" in predict_hint(msg, (7, 5, 64, 64), set(), parts=2)
        assert "tuple of" not in predict_hint(msg, (7, 5, 64, 64), set())


def test_split_truth_wraps_the_public_val_split_and_refuses_test(tiny_space_release: Path) -> None:
    rel = open_release(tiny_space_release)
    truth = rel.split_truth("val")
    ids = truth.ids()
    assert len(ids) == len(rel.meta("val"))
    np.testing.assert_array_equal(truth.truth(ids[:5], ["is_lens"])["is_lens"].to_numpy(),
                                  rel.labels("val")[:5])
    with pytest.raises(PermissionError):
        rel.split_truth("test")


@needs_bwrap
@pytest.mark.timeout(600)
def test_torch_export_with_a_static_batch_of_8_fails_with_the_batch_hint(tmp_path: Path,
                                                                         tiny_space_release: Path) -> None:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            return x.reshape(8, -1).mean(dim=1)  # a batch of 8 baked in, as export without dynamic_shapes does

    folder = _folder(tmp_path / "subs", "static8", "torch", "model.pt2")
    torch.export.save(torch.export.export(Net(), (torch.zeros(8, *SHAPE),)), folder / "model.pt2")
    code, out = _validate(_readable(folder), tiny_space_release)
    assert code != 0, out
    assert "batch size 256" in out and "batch size 7" in out, out
    assert "static batch" in out, out
    assert "(256, 1, 101, 101)" in out, out  # the input shape that was fed


@needs_bwrap
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_channels_last_keras_model_fails_with_type_message_shape_and_hint(tmp_path: Path,
                                                                         tiny_space_release: Path) -> None:
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((101, 101, 1)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, activation="sigmoid")])
    folder = _folder(tmp_path / "subs", "nhwc", "keras", "model.keras")
    model.save(folder / "model.keras")
    code, out = _validate(_readable(folder), tiny_space_release)
    assert code != 0, out
    assert "ValueError" in out and "(256, 1, 101, 101)" in out and "float32" in out, out
    assert "channels-last" in out, out
    assert "inspect._empty" not in out.replace("\n", " ")[-200:], out  # no more Keras noise as the reason


@needs_bwrap
@pytest.mark.timeout(600)
def test_wrong_output_shape_gets_the_output_shape_hint(tmp_path: Path, tiny_space_release: Path) -> None:
    folder = python_submission(tmp_path / "subs", "two-cols", """
        import numpy as np
        def load(d): return None
        def predict(m, b): return np.zeros((len(b), 2), np.float32)
    """)
    code, out = _validate(folder, tiny_space_release)
    assert code != 0, out
    assert "returned shape (256, 2), expected (256,)" in out, out
    assert "hint: return one value per input" in out, out


@needs_bwrap
@pytest.mark.timeout(600)
def test_runner_error_is_one_bounded_line_in_the_failed_reason(tmp_path: Path, tiny_space_release: Path) -> None:
    from skybench.harness.submission import load_submission, sandboxed_predict
    from skybench.tracks import load_track

    folder = python_submission(tmp_path / "subs", "noisy", """
        import sys
        def load(d): return None
        def predict(m, b):
            raise RuntimeError("first line\\n" + "x" * 5000 + "\\n  \u2022 kwargs=<class 'inspect._empty'>")
    """)
    res = sandboxed_predict(load_submission(folder), tiny_space_release, scratch=tmp_path / "run",
                            track=load_track("lens-space"), limit=10)
    assert not res.ok
    assert "\n" not in res.reason and len(res.reason) <= 480, res.reason
    assert re.search(r"RuntimeError: first line x+", res.reason), res.reason
    assert "float32 (10, 1, 101, 101)" in res.reason, res.reason


@needs_bwrap
@pytest.mark.timeout(600)
def test_good_example_passes_both_batch_sizes_and_scores_on_val(tiny_space_release: Path) -> None:
    code, out = _validate(EXAMPLES / "onnx", tiny_space_release, "--score")
    assert code == 0, out
    assert re.search(r"batch size 256 \(256 inputs.*OK", out) and re.search(r"batch size 7 \(17 inputs.*OK", out), out
    m = re.search(r"auroc = (\d\.\d{4})  \(primary\)", out)
    assert m and 0.0 <= float(m.group(1)) <= 1.0, out
    assert "validation split" in out, out


@needs_bwrap
@pytest.mark.timeout(600)
def test_a_model_that_only_takes_the_evaluation_batch_size_fails_at_the_small_one(tmp_path: Path,
                                                                                  tiny_space_release: Path) -> None:
    folder = python_submission(tmp_path / "subs", "only256", """
        import numpy as np
        def load(d): return None
        def predict(m, b):
            if len(b) != 256:
                raise ValueError(f"cannot reshape array of size {b.size} into shape (256, 10201)")
            return b.mean(axis=(1, 2, 3))
    """)
    code, out = _validate(folder, tiny_space_release)
    assert code != 0, out
    assert re.search(r"batch size 256 \(256 inputs.*OK", out), out
    assert "works at batch size 256 but fails at 7" in out.replace("\n", " "), out


@needs_bwrap
@pytest.mark.parametrize("damage", ["truncated val shard", "corrupt manifest"])
def test_a_damaged_release_is_one_line_naming_it_not_a_traceback(tmp_path: Path, tiny_space_release: Path,
                                                                damage: str) -> None:
    import shutil

    from skybench.release import layout

    release = tmp_path / "rel"
    shutil.copytree(tiny_space_release, release)
    if damage == "corrupt manifest":
        layout.manifest_path(release).write_bytes(b"\xff")
    else:
        shard = layout.shard_paths(layout.public_dir(release, "val"), "images")[0]
        shard.write_bytes(shard.read_bytes()[:5000])
    code, out = _validate(EXAMPLES / "onnx", release, "--score")
    assert code == 1 and "Traceback" not in out, out
    line = out.strip().splitlines()[-1]
    assert line.startswith(f"error: {release}: the release could not be read") and "skybench verify" in line, out
