"""Richardson-Lucy baseline: classical deconvolution with the known PSF (scikit-image), the bar to clear.

    python baselines/enhance/richardson-lucy/train.py --track enhance --release releases/enhance \
        --out baselines/enhance/richardson-lucy/enhance [--max-train N]

Nothing is learned: the degradation PSF comes from the release manifest (``degradation.psf_kernel_1d``, public
information), and the two knobs (number of iterations, pedestal in units of each band's input noise sigma) are
chosen on the public validation split by the track's primary metric (PSNR of the display-stretched images), over the
grid ``train.richardson-lucy`` of params.yaml. The submission is ``predict.py`` (format ``python``) + ``psf.npy`` +
``rl.json``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from skybench.tracks import load_track
from skybench.training import CurveLogger, fresh_folder, run_cli, start, write_submission
from skybench.training.enhance import load_pairs, read_degradation, val_psnr

NAME = "richardson-lucy"
HERE = Path(__file__).resolve().parent


def _predict_module() -> Any:
    spec = importlib.util.spec_from_file_location("rl_predict", HERE / "predict.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def train(argv: list[str] | None = None) -> tuple[dict[str, Any], Path]:
    args, params = start(NAME, __doc__, argv, seed=False)
    deg = read_degradation(args.release, load_track(args.track).band_names)
    sigma_in = deg.sigma
    n_val = int(params["n_val"]) if args.max_train is None else min(int(params["n_val"]), args.max_train)
    x, t = load_pairs(args.release, "val", n_val)
    t = t.astype(np.float64)
    mod = _predict_module()
    best: tuple[float, int, float] = (-np.inf, 0, 0.0)
    with CurveLogger(NAME, args.track, params, enabled=not args.no_mlflow) as log:
        step = 0
        for ped in params["pedestal_sigma"]:
            for n_iter in params["num_iter"]:
                model = {"psf": deg.psf, "num_iter": int(n_iter), "pedestal": (float(ped) * sigma_in).tolist()}
                score = val_psnr(mod.predict(model, x), t, deg)
                step += 1
                log.epoch(step, val_psnr=score, num_iter=float(n_iter), pedestal_sigma=float(ped))
                if score > best[0]:
                    best = (score, int(n_iter), float(ped))
        log.summary(val_psnr=best[0], num_iter=best[1], pedestal_sigma=best[2])
    out = fresh_folder(args.out)
    np.save(out / "psf.npy", deg.psf)
    cfg = {"num_iter": best[1], "pedestal": (best[2] * sigma_in).tolist(), "pedestal_sigma": best[2],
           "val_psnr": best[0], "psf_fwhm_arcsec": deg.fwhm_arcsec}
    (out / "rl.json").write_text(json.dumps(cfg, indent=2) + "\n")
    shutil.copy(HERE / "predict.py", out / "predict.py")
    write_submission(out, NAME, args.track, "python", "predict.py",
                     f"skimage.restoration.richardson_lucy with the known Gaussian PSF (FWHM {deg.fwhm_arcsec}"
                     f"\"), {best[1]} iterations, pedestal {best[2]:g} sigma (chosen on val by PSNR)")
    print(f"wrote {out} (val PSNR {best[0]:.2f} dB, {best[1]} iterations, pedestal {best[2]:g} sigma)")
    return {**cfg, "psf": deg.psf}, out


if __name__ == "__main__":
    run_cli(train)
