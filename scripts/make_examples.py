"""Regenerate tiny, valid example submissions in every format for the lens tracks.

    python scripts/make_examples.py [--tracks lens-space lens-ground] [--out submissions/examples]
                                    [--releases releases]

Each ``<out>/<track>/<format>/`` holds ``submission.yaml`` (team "examples", name "<format>-example") and a
model taking (N, bands, 101, 101) float32 and giving (N,) scores in [0, 1]. They are valid, not good,
classifiers. The ``predictions`` example is a CSV for one release (``<releases>/<track>``), so it is
written only when that release exists.
Deterministic: every model is seeded, so weights and scores are the same on every run (the .keras and
.skops archives still embed save times / object ids, so their bytes differ between runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FORMATS = ("onnx", "keras", "torch", "sklearn", "python", "predictions")
SEED = 0
TRACK, SHAPE = "lens-space", (1, 101, 101)  # set per track by make_examples

# numpy only: the share of the (clipped) flux in an annulus where arcs appear, vs the lens centre.
PREDICT_PY = '''"""Example `python` submission: flux in an annulus of 4-20 px (where arcs lie) against the centre."""

import numpy as np


def load(model_dir):
    h = w = 101
    y, x = np.mgrid[:h, :w]
    r = np.hypot(y - (h - 1) / 2, x - (w - 1) / 2)
    return {"centre": r < 3, "annulus": (r > 4) & (r < 20)}


def predict(model, batch):
    flux = np.clip(batch, 0, None).sum(axis=1)  # (N, H, W), summed over bands
    centre = flux[:, model["centre"]].mean(axis=1)
    annulus = flux[:, model["annulus"]].mean(axis=1)
    return (annulus / (annulus + centre + 1e-6)).astype(np.float32)
'''


def _spec(fmt: str, model: str, description: str) -> str:
    return (f"team: examples\nname: {fmt}-example\ntrack: {TRACK}\nformat: {fmt}\nmodel: {model}\n"
            f"description: {description}\n")


def _torch_net():  # -> torch.nn.Module
    import torch

    torch.manual_seed(SEED)

    class TinyCNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(SHAPE[0], 4, kernel_size=5, stride=4)
            self.head = torch.nn.Linear(4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(x)).mean(dim=(2, 3))
            return torch.sigmoid(self.head(h)).squeeze(1)

    return TinyCNN().eval()


def make_onnx(folder: Path) -> None:
    import torch

    x = torch.zeros(2, *SHAPE)
    # The TorchScript-based exporter works offline (the dynamo one needs onnxscript); batch axis dynamic.
    torch.onnx.export(_torch_net(), (x,), str(folder / "model.onnx"), input_names=["images"],
                      output_names=["score"], dynamic_axes={"images": {0: "N"}, "score": {0: "N"}},
                      dynamo=False)
    (folder / "submission.yaml").write_text(_spec("onnx", "model.onnx", "tiny torch CNN exported to ONNX"))


def make_torch(folder: Path) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(_torch_net(), (torch.zeros(2, *SHAPE),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "model.pt2"))
    (folder / "submission.yaml").write_text(_spec("torch", "model.pt2", "tiny CNN saved with torch.export"))


def make_keras(folder: Path) -> None:
    import keras

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.Input(SHAPE),
        keras.layers.Permute((2, 3, 1)),  # channels-first input -> channels-last (TF's CPU convolutions)
        keras.layers.AveragePooling2D(4),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.save(folder / "model.keras")
    (folder / "submission.yaml").write_text(_spec("keras", "model.keras", "tiny Keras CNN"))


def make_sklearn(folder: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    # The runner flattens (N, 1, 101, 101) to (N, 10201) for sklearn models.
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(40, int(np.prod(SHAPE))))
    y = np.arange(40) % 2
    model = LogisticRegression(C=0.01, max_iter=200).fit(x, y)
    sio.dump(model, folder / "model.skops")
    (folder / "submission.yaml").write_text(_spec("sklearn", "model.skops", "logistic regression on pixels"))


def make_python(folder: Path) -> None:
    (folder / "predict.py").write_text(PREDICT_PY)
    (folder / "submission.yaml").write_text(_spec("python", "predict.py", "annulus/centre flux ratio"))


def make_predictions(folder: Path, release: Path) -> None:
    import pandas as pd

    from skybench.release.reader import open_release

    rel = open_release(release)
    ns: dict = {}
    exec(PREDICT_PY, ns)  # our own constant: the same score as the python example
    model = ns["load"](str(folder))
    scores = np.concatenate([ns["predict"](model, b) for b in rel.images("test").batches(256)])
    ids = rel.meta("test")["id"].to_numpy()
    pd.DataFrame({"id": ids, "score": scores}).to_csv(folder / "predictions.csv", index=False,
                                                      float_format="%.6g")
    desc = f"annulus/centre flux ratio precomputed for the release {Path(release).name}"
    (folder / "submission.yaml").write_text(_spec("predictions", "predictions.csv", desc))


MAKERS = {"onnx": make_onnx, "keras": make_keras, "torch": make_torch, "sklearn": make_sklearn,
          "python": make_python}


def make_examples(out: Path, release: Path | None = None, formats: tuple[str, ...] = FORMATS,
                  track: str = "lens-space") -> list[Path]:
    """Write ``out/<format>/`` for each format for ``track``; return the folders written."""
    global TRACK, SHAPE
    from skybench.tracks import load_track

    t = load_track(track)
    TRACK, SHAPE = t.name, (len(t.band_names), t.cutout.size, t.cutout.size)
    written = []
    for fmt in formats:
        if fmt == "predictions" and release is None:
            print(f"skipping predictions for {track}: it needs a release", file=sys.stderr)
            continue
        folder = Path(out) / fmt
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        with warnings.catch_warnings():  # exporters' deprecation chatter
            warnings.simplefilter("ignore", DeprecationWarning)
            if fmt == "predictions":
                make_predictions(folder, Path(release))  # type: ignore[arg-type]
            else:
                MAKERS[fmt](folder)
        for path in [folder, *folder.rglob("*")]:  # the sandbox's unprivileged uid must read them
            path.chmod(0o755 if path.is_dir() else 0o644)
        written.append(folder)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    p.add_argument("--tracks", nargs="+", default=["lens-space", "lens-ground"])
    p.add_argument("--out", type=Path, default=root / "submissions" / "examples")
    p.add_argument("--releases", type=Path, default=root / "releases",
                   help="folder of releases; the predictions CSV is written for <releases>/<track>")
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    args = p.parse_args(argv)
    from skybench.release import layout

    for track in args.tracks:
        release = args.releases / track
        release = release if layout.is_release(release) else None
        for folder in make_examples(args.out / track, release, tuple(args.formats), track):
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            print(f"wrote {folder} ({size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
