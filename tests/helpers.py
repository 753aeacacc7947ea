"""Helpers shared by the tests: bubblewrap detection, baseline training modules, small submissions."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from skybench.release import layout

ROOT = Path(__file__).resolve().parents[1]
# A release's hidden test labels, relative to its root: what a hostile submission goes looking for.
HIDDEN_TEST_META = layout.relpath(layout.meta_path(layout.hidden_dir(".", "test")), ".")
# The torch backend that the physics tests hold to the numpy one: torch-cpu, or torch-cuda on a GPU machine
# (SKYBENCH_TEST_TORCH=torch-cuda, as perf/gpu_check.sh runs them there).
TORCH_BACKEND = os.environ.get("SKYBENCH_TEST_TORCH", "torch-cpu")


@functools.cache
def _mlflow_template() -> Path:
    """An empty MLflow store, created (and migrated) once per test process in a folder removed at exit."""
    import atexit
    import tempfile

    import mlflow

    folder = Path(tempfile.mkdtemp(prefix="skybench-mlflow-template-"))
    atexit.register(shutil.rmtree, folder, True)
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db").search_experiments(max_results=1)
    return folder / "mlflow.db"


def mlflow_store(folder: Path) -> str:
    """The URI of an empty MLflow store ``folder/mlflow.db``: a copy of a store made once per test process, since
    MLflow's schema migrations take seconds for every new SQLite file and a copy milliseconds."""
    dest = Path(folder) / "mlflow.db"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_mlflow_template(), dest)
    return f"sqlite:///{dest}"


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """A real `mlflow server` (SQLite backend ``folder/mlflow.db``, proxied artifacts) on a free loopback port:
    (its URI, its process, the store's file); killed with its process group at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = mlflow_store(folder)
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - the server's, closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
         "--artifacts-destination", (folder / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    uri, start = f"http://127.0.0.1:{port}", time.monotonic()
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - start > 90:
                pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        print(f"mlflow server up in {time.monotonic() - start:.1f} s")
        yield uri, proc, Path(store.removeprefix("sqlite:///"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a throw-away server: no graceful shutdown to wait for
        proc.wait(timeout=30)
        log.close()


@functools.cache
def bwrap_works() -> bool:
    """bubblewrap is installed and can create the namespaces the sandbox uses."""
    if shutil.which("bwrap") is None:
        return False
    probe = ["bwrap", "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "true"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def baseline_module(name: str) -> ModuleType:
    """baselines/<task>/<name>/train.py as a module."""
    (path,) = (ROOT / "baselines").glob(f"*/{name}/train.py")
    spec = importlib.util.spec_from_file_location(f"baseline_{name.replace('-', '_')}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def python_submission(root: Path, name: str, code: str, *, team: str = "tests", track: str = "lens-space") -> Path:
    """A ``python``-format submission ``root/name`` whose predict.py is ``code``, readable by the sandbox."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(textwrap.dedent(code))
    (folder / "submission.yaml").write_text(f"team: {team}\nname: {name}\ntrack: {track}\nformat: python\n"
                                            "model: predict.py\n")
    for p in (root, folder, *folder.iterdir()):
        p.chmod(0o755)
    return folder


def csv_submission(folder: Path, name: str, ids: object, scores: object, *, team: str = "tests") -> Path:
    """A ``predictions``-format lens-space submission in ``folder``: a CSV of ``id, score``."""
    folder.mkdir(parents=True)
    pd.DataFrame({"id": ids, "score": scores}).to_csv(folder / "scores.csv", index=False)
    (folder / "submission.yaml").write_text(f"team: {team}\nname: {name}\ntrack: lens-space\nformat: predictions\n"
                                            "model: scores.csv\n")
    return folder


# A python-format lens model scoring each cut-out by its pixel sum (the real-set mixing tests).
PIXEL_SUM = """
import numpy as np
def load(d): return None
def predict(m, b): return b.astype('float64').sum(axis=(1, 2, 3)).astype('float32')
"""


def tiles_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder holding the lens-tiles and lens-space YAMLs (sliding-resnet reads the latter), made the
    project root; MLflow points at a store in ``tmp_path``."""
    project = tmp_path / "project"
    (project / "benchmarks").mkdir(parents=True)
    for name in ("lens-tiles", "lens-space"):
        shutil.copy(ROOT / "benchmarks" / f"{name}.yaml", project / "benchmarks" / f"{name}.yaml")
    monkeypatch.setenv("SKYBENCH_ROOT", str(project))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    return project


def lenstronomy_psf(fwhm: float, pixel_scale: float, truncation: float = 5.0, supersampling: int = 1) -> object:
    """lenstronomy's own Gaussian PSF of ``fwhm`` arcsec (``kernel_util.kernel_gaussian``: sampled at pixel centres,
    ``truncation`` sigma), convolved as a PIXEL kernel: zero padding outside the frame, as the renderer (its
    GAUSSIAN type filters with ``mode='nearest'``, which repeats the frame's edge). ``supersampling``: sampled
    that many times finer, for supersampling_convolution=True at that factor."""
    import math

    from lenstronomy.Data.psf import PSF
    from lenstronomy.Util import kernel_util

    s = supersampling
    n = 2 * math.ceil(truncation * fwhm / 2.3548200450309493 / pixel_scale * s) + 1
    return PSF(psf_type="PIXEL", kernel_point_source=kernel_util.kernel_gaussian(n, pixel_scale / s, fwhm),
               point_source_supersampling_factor=s)


def core_mask(cx: float, cy: float, n: int, pix: float) -> np.ndarray:
    """The 7x7 pixels around a centre (clipped to the frame) that the renderer integrates on nested grids."""
    mask = np.zeros((n, n), dtype=bool)
    j, i = (int(np.clip(np.floor(c / pix + n / 2) - 3, 0, n - 7)) for c in (cx, cy))
    mask[i:i + 7, j:j + 7] = True
    return mask


def lenstronomy_image(row: pd.Series, track: Any, band: str, gaussian: bool = False,
                      source_only: bool = False) -> np.ndarray:
    """Re-render one object from its metadata row and the track YAML alone, with lenstronomy (``gaussian``: its
    GAUSSIAN PSF type, which repeats the frame's edge outside it; ``source_only``: the lensed source alone). The
    unlensed (centred) profiles' 7x7 core pixels are lenstronomy's adaptive render at supersampling 128
    (compute_mode='adaptive'), the lensed source's pixels above 1e-6 of its peak its adaptive render at 16 (the
    renderer refines the arcs' least resolved pixels, simulator.ARC_LEVELS), the rest its regular render at the
    track's supersampling, then convolved as ImageModel does (supersampling_convolution=False), plus what
    supersampling_convolution=True at supersampling 8 changes in the unlensed light's blur: the renderer blurs the
    cores from their sub-pixel cells (Renderer.core_psf)."""
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    from skybench.tasks.lens.simulator import lenstronomy_kwargs

    kw = lenstronomy_kwargs(row, track, band)
    grid = kw["kwargs_pixel_grid"]
    data = ImageData(image_data=np.zeros((grid["nx"],) * 2), transform_pix2angle=grid["transform_pix2angle"],
                     ra_at_xy_0=grid["ra_at_xy_0"], dec_at_xy_0=grid["dec_at_xy_0"])
    psf = PSF(psf_type="GAUSSIAN", fwhm=kw["psf_fwhm"], pixel_size=kw["pixel_scale"], truncation=5) if gaussian \
        else lenstronomy_psf(kw["psf_fwhm"], kw["pixel_scale"])
    m = kw["kwargs_model"]

    def model(psf: Any = psf, **numerics: Any) -> Any:
        return ImageModel(data, psf, LensModel(m["lens_model_list"]), LightModel(m["source_light_model_list"]),
                          LightModel(m["lens_light_model_list"]), kwargs_numerics=numerics)

    regular = model(**kw["kwargs_numerics"])
    image = regular.source_surface_brightness(kw["kwargs_source"], kw["kwargs_lens"], unconvolved=True)
    if image.any():
        mask = np.abs(image) > 1e-6 * np.abs(image).max()
        fine = model(lenstronomy_psf(kw["psf_fwhm"], kw["pixel_scale"]), compute_mode="adaptive",
                     supersampled_indexes=mask, supersampling_factor=16, supersampling_convolution=False)
        image = np.where(mask, fine.source_surface_brightness(kw["kwargs_source"], kw["kwargs_lens"],
                                                              unconvolved=True), image)
    for k, comp in enumerate([] if source_only else kw["kwargs_lens_light"]):
        mask = core_mask(comp["center_x"], comp["center_y"], grid["nx"], kw["pixel_scale"])
        fine = model(lenstronomy_psf(kw["psf_fwhm"], kw["pixel_scale"]), compute_mode="adaptive",
                     supersampled_indexes=mask, supersampling_factor=128, supersampling_convolution=False)
        image += np.where(mask, fine.lens_surface_brightness(kw["kwargs_lens_light"], unconvolved=True, k=k),
                          regular.lens_surface_brightness(kw["kwargs_lens_light"], unconvolved=True, k=k))
    blurred = regular.ImageNumerics.convolution_class.re_size_convolve(image, image)
    if source_only:
        return blurred
    # what supersampling_convolution=True (the kernel sampled 8x finer, to ~4 sigma; beyond it, binned) changes
    fine_psf = lenstronomy_psf(kw["psf_fwhm"], kw["pixel_scale"], supersampling=8)
    size = ((len(fine_psf.kernel_point_source_supersampled(8)) - 1) // 8 - 1) // 2 * 2 + 1  # odd, within the kernel
    pairs = ((fine_psf, True), (lenstronomy_psf(kw["psf_fwhm"], kw["pixel_scale"]), False))
    blur = np.subtract(*(model(p, supersampling_factor=8, supersampling_convolution=conv,
                               supersampling_kernel_size=size).lens_surface_brightness(kw["kwargs_lens_light"])
                         for p, conv in pairs))
    return blurred + blur
