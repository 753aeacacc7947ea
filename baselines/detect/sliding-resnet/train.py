"""Sliding-window baseline: the lens-space ResNet (``baselines/lens/resnet/lens-space``) on a grid of windows.

    python baselines/detect/sliding-resnet/train.py --track lens-tiles --release releases/lens-tiles \
        --out baselines/detect/sliding-resnet/lens-tiles

Nothing is trained here: the cut-out classifier of the ResNet baseline (its ONNX file, ``train.sliding-resnet.
resnet`` of params.yaml) is packaged with ``predict.py`` (format ``python``: numpy and onnxruntime) and
``config.json`` (window stride and NMS radius from params.yaml). The cut-outs of its lens track and the tiles
share the survey (checked: same bands, zero points, noise and pixel scale), so their pixels are the same e-/s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from skybench.tracks import load_track, project_root
from skybench.training import fresh_folder, run_cli, start, write_submission

NAME = "sliding-resnet"
HERE = Path(__file__).resolve().parent


def train(argv: list[str] | None = None) -> tuple[dict[str, Any], Path]:
    args, params = start(NAME, __doc__, argv, seed=False)
    track = load_track(args.track)
    resnet = Path(params["resnet"])
    resnet = resnet if resnet.is_absolute() else project_root() / resnet
    spec = yaml.safe_load((resnet / "submission.yaml").read_text())
    lens_track = load_track(spec["track"])
    if lens_track.survey != track.survey:
        raise SystemExit(f"{NAME}: the classifier in {resnet} was trained on {spec['track']}, whose survey differs "
                         f"from {track.name}'s: its pixels would not be in the same units")
    window = int(lens_track.cutout.size)
    pix = track.survey.pixel_scale
    out = fresh_folder(args.out)
    shutil.copy(resnet / spec["model"], out / "model.onnx")
    shutil.copy(HERE / "predict.py", out / "predict.py")
    cfg = {"window": window, "stride": int(params["stride"]), "nms_radius": float(params["nms_radius"]) / pix,
           "max_candidates": int(track.output.max_candidates), "batch": int(params["batch"]),
           "threads": int(params.get("cpu_threads") or 0)}
    (out / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    write_submission(out, NAME, args.track, "python", "predict.py",
                     f"the {spec['track']} ResNet on {window}x{window} windows every {cfg['stride']} pixels, "
                     f"NMS within {params['nms_radius']} arcsec")
    print(f"wrote {out} ({spec['track']} classifier, stride {cfg['stride']})")
    return cfg, out


if __name__ == "__main__":
    run_cli(train)
