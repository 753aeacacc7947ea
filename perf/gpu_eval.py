"""Evaluation on the harness's device (CUDA when there is one): an ONNX, a Keras and a torch.export submission,
each through `skybench evaluate` (verify + bubblewrap sandbox + inference + checks + scoring) on the same
lens-ground-shaped cut-outs, against the bare runtime on the same arrays in the same run, then the Ray executor.

    python perf/gpu_eval.py --size 100000                   # a GPU machine (16 GB of cut-outs in /tmp and in memory)
    python perf/gpu_eval.py --size 300 --md out.md          # the CPU half (CI, perf/gpu_check.sh)

Device: ``cuda_available()`` of physics/backend.py, as ``skybench evaluate`` decides it; the sandbox binds only
the task's own /dev/nvidiaN (``sandbox.gpu_binds``), which the first check verifies from inside a sandbox. On a GPU
a format whose accelerated runtime is missing (onnxruntime without CUDAExecutionProvider, no TensorFlow, torch
without CUDA) is reported MISSING and skipped; ``--require-all`` makes that a failure.

The models are small CNNs with random weights built here (never downloaded); the test set is Gaussian noise with
random labels written by the release writer (``perf/eval_ray.py``'s ``noise_release``), since throughput does not
depend on the pixels. For each format: cut-outs/s of `skybench evaluate` and of the bare runtime (model loaded,
warmed up, arrays in memory, the track's batch size, same device), their ratio (goal >= 0.8), the sandbox's own
wall time, peak host RSS of this process and of its descendants (the sandboxes) during the evaluation, peak GPU
memory used on the device (NVML, device-wide, during the evaluation), and the largest difference of the sandboxed
predictions from the bare runtime's on the CPU (on a GPU: the first ``--compare`` cut-outs; tolerance 1e-4).
Ray: the first format that ran, ``RayExecutor`` (``num_gpus=1`` per task on a GPU), ratio to the local executor.

Every failed check is printed as ``FAIL: <reason>`` and the exit status is 1; figures are printed (and, with
``--md``, appended as Markdown) before that."""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # the bare Keras run shares the card with torch
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

FORMATS = ("onnx", "keras", "torch")
TOL = 1e-4


# --- the models: one CNN architecture (about 0.3 GFLOP per 101x101 cut-out), random weights -------------------


def torch_cnn(bands: int) -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(bands, 32, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(64, 1), torch.nn.Sigmoid(), torch.nn.Flatten(0),
    ).eval()


def write_model(fmt: str, folder: Path, shape: tuple[int, int, int]) -> str:
    """Write the ``fmt`` model into ``folder``; return its file name."""
    if fmt == "onnx":
        from eval_throughput import export_cnn

        export_cnn(folder / "model.onnx", shape[0])
        return "model.onnx"
    if fmt == "torch":
        import torch

        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.export.export(torch_cnn(shape[0]), (torch.zeros(2, *shape),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(folder / "model.pt2"))
        return "model.pt2"
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape),
        layers.Permute((2, 3, 1)),  # channels-first cut-outs -> channels-last (TF's CPU convolutions need it)
        layers.Conv2D(32, 5, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(64, 5, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu"), layers.GlobalAveragePooling2D(),
        layers.Dense(1, activation="sigmoid"),
    ])
    model.save(folder / "model.keras")
    return "model.keras"


def submission(tmp: Path, fmt: str, track_name: str, shape: tuple[int, int, int]) -> Path:
    sub = tmp / f"sub-{fmt}"
    if sub.is_dir():
        return sub
    sub.mkdir()
    model = write_model(fmt, sub, shape)
    (sub / "submission.yaml").write_text(f"team: perf\nname: {fmt}\ntrack: {track_name}\nformat: {fmt}\n"
                                         f"model: {model}\n")
    for p in (tmp, sub, *sub.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return sub


# --- the bare runtimes: (predict one batch, device used) ----------------------------------------------------


def bare_runtime(fmt: str, sub: Path, device: str) -> Callable[[np.ndarray], np.ndarray]:
    if fmt == "onnx":
        import onnxruntime as ort

        providers = (["CUDAExecutionProvider"] if device == "cuda" else []) + ["CPUExecutionProvider"]
        if device == "cuda" and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # as the runner does: CUDA and cuDNN from pip's nvidia-* packages
        sess = ort.InferenceSession(str(sub / "model.onnx"), providers=providers)
        if sess.get_providers()[0] != ("CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"):
            raise RuntimeError(f"bare onnxruntime did not take the {device} provider: {sess.get_providers()}")
        return lambda x: sess.run(None, {"images": x})[0]
    if fmt == "torch":
        import torch

        module = torch.export.load(str(sub / "model.pt2")).module().to(device)

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(x).to(device)).float().cpu().numpy()

        return run
    import keras
    import tensorflow as tf

    with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
        model = keras.saving.load_model(sub / "model.keras", safe_mode=True, compile=False)

    def run_keras(x: np.ndarray) -> np.ndarray:
        with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
            return np.asarray(model.predict_on_batch(x)).reshape(len(x))

    return run_keras


def bare_predict(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    predict(x[:batch])  # warm-up: kernels, allocators, autotuning
    t = time.perf_counter()
    out = [np.asarray(predict(x[a:a + batch]), dtype=np.float32).reshape(-1) for a in range(0, len(x), batch)]
    return np.concatenate(out), time.perf_counter() - t


def accelerated(fmt: str) -> str:
    """'' when ``fmt`` can run on CUDA here, else what is missing (a pip requirement)."""
    if fmt == "onnx":
        import onnxruntime as ort

        return "" if "CUDAExecutionProvider" in ort.get_available_providers() else "onnxruntime-gpu"
    if fmt == "torch":
        import torch

        return "" if torch.cuda.is_available() else "torch (CUDA build)"
    try:
        import tensorflow as tf
    except ImportError:
        return "tensorflow[and-cuda]"
    return "" if tf.config.list_physical_devices("GPU") else "tensorflow[and-cuda]"


def runtime_installed(fmt: str) -> str:
    """'' when ``fmt``'s runtime imports here, else what to install."""
    import importlib.util

    need = {"onnx": "onnxruntime", "torch": "torch", "keras": "tensorflow", "ray": "ray"}[fmt]
    return "" if importlib.util.find_spec(need) else need


# --- memory ---------------------------------------------------------------------------------------------------


class Peaks:
    """Peak RSS of this process and of its descendants, and the GPU memory used on ``gpu`` (NVML), sampled every
    0.1 s while in the ``with`` block."""

    def __init__(self, gpu: int | None):
        self.gpu = gpu
        self.parent = self.children = 0
        self.gpu_mb: float | None = None

    def __enter__(self) -> Peaks:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _gpu_used(self) -> Callable[[], float] | None:
        if self.gpu is None:
            return None
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.gpu)
            return lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
        except Exception:  # no NVML binding: nvidia-smi (slower, still fine at 10 Hz)
            cmd = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", str(self.gpu)]
            return lambda: float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[0])

    def _sample(self) -> None:
        me, gpu_used = psutil.Process(), self._gpu_used()
        while not self._stop.is_set():
            kids = 0
            for p in me.children(recursive=True):
                try:
                    kids += p.memory_info().rss
                except psutil.Error:
                    pass
            self.parent, self.children = max(self.parent, me.memory_info().rss), max(self.children, kids)
            if gpu_used is not None:
                try:
                    used = gpu_used()
                    self.gpu_mb = max(self.gpu_mb or 0.0, used)
                except Exception:
                    pass
            self._stop.wait(0.1)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- checks ---------------------------------------------------------------------------------------------------

SEE_DEVICES = """
import os
devs = sorted(n for n in os.listdir('/dev') if n.startswith('nvidia'))
pci = sorted(os.listdir('/sys/bus/pci/devices')) if os.path.isdir('/sys/bus/pci/devices') else []
print(' '.join(devs) + '|' + ' '.join(pci))
"""


def sandbox_devices(tmp: Path, gpu: bool) -> tuple[list[str], list[str]]:
    """The /dev/nvidia* entries and PCI devices a sandboxed task sees (``gpu``: as a GPU task)."""
    from skybench.harness.sandbox import Limits, run_sandboxed

    code = tmp / "see"
    code.mkdir()
    (code / "see.py").write_text(SEE_DEVICES)
    for p in (code, code / "see.py"):
        p.chmod(0o755)
    res = run_sandboxed([sys.executable, "/code/see.py"], scratch=tmp / "see-scratch", ro_binds=[(code, "/code")],
                        limits=Limits(memory_mb=512, cpu_seconds=30, wall_seconds=60), gpu=gpu)
    if not res.ok:
        raise RuntimeError(f"the device-listing sandbox failed: {res.reason}")
    devs, _, pci = res.stdout.strip().partition("|")
    return devs.split(), pci.split()


CUDA_INIT = """
import time
t = time.perf_counter()
import torch
x = torch.ones(256, 4, 101, 101, device="cuda")
print(f"{time.perf_counter() - t:.2f} {float(x.sum()):.0f}")
"""


def sandbox_cuda_init(tmp: Path) -> str:
    """Seconds a sandboxed GPU task takes to import torch and make its first CUDA tensor, or why it failed."""
    from skybench.harness.sandbox import Limits, run_sandboxed

    code = tmp / "cuda-init"
    code.mkdir()
    (code / "init.py").write_text(CUDA_INIT)
    for p in (code, code / "init.py"):
        p.chmod(0o755)
    res = run_sandboxed([sys.executable, "/code/init.py"], scratch=tmp / "cuda-init-scratch",
                        ro_binds=[(code, "/code")], limits=Limits(memory_mb=6144, cpu_seconds=120, wall_seconds=90),
                        gpu=True)
    return f"{res.stdout.split()[0]} s" if res.ok else f"failed: {res.reason}: {res.stderr[-300:]!r}"


def predictions(out: Path, ids: np.ndarray) -> np.ndarray:
    """The scored predictions of the one submission evaluated into ``out``, in the order of ``ids``."""
    (csv,) = out.parent.glob(f"{out.name}-private/*/predictions.csv")  # the organiser's folder (evaluate.py)
    df = pd.read_csv(csv)
    return df.set_index("id")["score"].reindex(ids).to_numpy(np.float32)


def record_of(o: Any) -> dict[str, Any]:
    """{"device", "seconds"} of an outcome's evaluation record."""
    from skybench.harness.record import RECORD, read_record

    if o.record is None:
        return {}
    rec = read_record(Path(o.record) / RECORD)
    return {"device": rec.device, "seconds": rec.seconds}


def device_name(cuda: bool, gpu: int | None) -> str:
    """The GPU's name and memory from nvidia-smi (no CUDA context in this process), else the CPU model."""
    if cuda:
        try:
            query = ["nvidia-smi", "--query-gpu=name,memory.total,memory.used,driver_version",
                     "--format=csv,noheader", "-i", str(gpu or 0)]
            gpu_name, total, used, driver = subprocess.run(query, capture_output=True, text=True, check=True,
                                                           timeout=30).stdout.strip().split(", ")
            return f"{gpu_name}, {total}, {used} in use before the checks, driver {driver}"
        except (OSError, ValueError, subprocess.SubprocessError):
            import torch

            return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.partition(':')[2].strip()} x {os.cpu_count()} (no GPU)"
    return platform.processor() or "CPU"


def runtime_versions() -> str:
    """The installed versions of the evaluation runtimes (metadata only, nothing imported)."""
    from importlib import metadata

    out = []
    for dist in ("onnxruntime", "onnxruntime-gpu", "torch", "tensorflow", "keras", "ray"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=100_000, help="test cut-outs (challenge: 100,000)")
    ap.add_argument("--track", default="lens-ground")
    ap.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    ap.add_argument("--compare", type=int, default=2000, help="on a GPU: cut-outs predicted on the CPU too")
    ap.add_argument("--min-ratio", type=float, default=0.0, help="fail when evaluate / bare is below this")
    ap.add_argument("--require-all", action="store_true", help="a missing (accelerated) runtime is a failure")
    ap.add_argument("--expect-device", choices=("cuda", "cpu"), default=None,
                    help="fail at once when the harness would evaluate on another device")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--ray-cpus", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--md", type=Path, default=None, help="append the Markdown figures to this file")
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (~170 kB per cut-out)")
    ap.add_argument("--sandbox-wall", type=float, default=None,
                    help="cap each sandboxed run at this many seconds (default: the track's limits)")
    ap.add_argument("--stacks", type=float, default=0,
                    help="print this process's thread stacks every this many seconds (0: never)")
    args = ap.parse_args()

    from eval_ray import noise_release

    from skybench.harness.evaluate import evaluate
    from skybench.harness.sandbox import gpu_binds
    from skybench.harness.submission import cuda_available
    from skybench.release import layout
    from skybench.release.reader import open_release
    from skybench.release.verify import verify_release
    from skybench.tracks import load_track

    cuda = cuda_available()  # the harness's own decision
    device = "cuda" if cuda else "cpu"
    if args.expect_device and device != args.expect_device:
        print(f"FAIL: the harness evaluates on {device}, not {args.expect_device} (cuda_available() in "
              "physics/backend.py: a /dev/nvidiaN node and torch's CUDA build)", flush=True)
        return 1
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    gpu_index = (int(visible) if visible.isdigit() else 0) if cuda else None  # NVML's index (the only GPU: 0)
    # the node the sandbox should see: the one gpu_binds picks (the only GPU may be /dev/nvidia3 in a container)
    want = [a[1][len("/dev/"):] for a in gpu_binds(os.listdir("/dev"), visible)
            if re.fullmatch(r"/dev/nvidia\d+", a[1])] if cuda else []
    if args.stacks:
        import faulthandler

        faulthandler.dump_traceback_later(args.stacks, repeat=True)
    track = load_track(args.track)
    if args.sandbox_wall:
        track = track.model_copy(update={"sandbox": track.sandbox.model_copy(
            update={"wall_seconds": args.sandbox_wall})})
    batch = track.evaluation.batch_size
    shape = (len(track.band_names), track.cutout.size, track.cutout.size)
    n = args.size
    fails: list[str] = []
    md: list[str] = []
    notes: list[str] = []

    def fail(reason: str) -> None:
        fails.append(reason)
        print(f"FAIL: {reason}", flush=True)

    name = device_name(cuda, gpu_index)
    print(f"gpu_eval: {name}; {n} {track.name} cut-outs {shape}, batch {batch}, device {device}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # the sandboxed code runs as another uid
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"

        # 1. what a sandboxed GPU task sees: its own /dev/nvidiaN and nothing of another GPU
        devs, pci = sandbox_devices(tmp, cuda)
        numbered = [d for d in devs if d[6:].isdigit()]
        print(f"sandbox sees: /dev/{{{', '.join(devs)}}}, {len(pci)} PCI device(s)", flush=True)
        if numbered != want:
            fail(f"the sandbox sees GPU nodes {numbered}, expected {want}")
        if len(pci) > (1 if cuda else 0):
            fail(f"the sandbox sees {len(pci)} PCI devices under /sys/bus/pci/devices: {pci[:4]}")
        if cuda:  # session 26: a read-only /proc in the sandbox stopped CUDA, and the runner fell back to the CPU
            t = time.perf_counter()
            started = sandbox_cuda_init(tmp)
            print(f"sandboxed torch import + first CUDA tensor: {started} ({time.perf_counter() - t:.1f} s with the "
                  "sandbox)", flush=True)
            if started.startswith("failed"):
                fail(f"a sandboxed GPU task cannot start CUDA: {started}")

        t = time.perf_counter()
        release = noise_release(tmp / "release", track.name, n)
        print(f"wrote the {n}-cut-out test set in {time.perf_counter() - t:.1f} s", flush=True)
        rel = open_release(release)
        ids = rel.meta("test")["id"].to_numpy()
        # one-off costs of the first evaluation in a process (imports, the tracking store) out of the figures
        warm = noise_release(tmp / "warm", track.name, 16)
        evaluate([submission(tmp, "onnx", track.name, shape)], track, warm, out=tmp / "evals-warm", publish=False)

        # 2. skybench evaluate, one format at a time
        rows: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for fmt in args.formats:
            lack = runtime_installed(fmt) or (accelerated(fmt) if cuda else "")
            if lack:
                missing.append(f"{fmt}: {lack}")
                print(f"{fmt:6s} MISSING: {lack} is not installed here; skipped", flush=True)
                continue
            sub = submission(tmp, fmt, track.name, shape)
            out = tmp / f"evals-{fmt}"
            with Peaks(gpu_index) as mem:
                t = time.perf_counter()
                (o,) = evaluate([sub], track, release, out=out, publish=False)
                wall = time.perf_counter() - t
            if o.status != "FINISHED":
                fail(f"{fmt}: skybench evaluate {o.status} after {wall:.0f} s: {o.reason}")
                print(f"{fmt}: the sandbox's stderr: {o.log[-1500:]}", flush=True)
                continue
            record = record_of(o)
            if record.get("device") != device:
                fail(f"{fmt}: the sandbox ran on {record.get('device')!r}, the harness chose {device!r}")
            rows[fmt] = {"sub": sub, "wall": wall, "box": record.get("seconds") or float("nan"),
                         "dev": record.get("device"), "parent": mem.parent, "children": mem.children,
                         "gpu": mem.gpu_mb, "pred": predictions(out, ids)}
            print(f"{fmt:6s} evaluate {n / wall:9.1f} cut-outs/s ({wall:.1f} s, sandbox {rows[fmt]['box']:.1f} s, "
                  f"device {record.get('device')})", flush=True)

        # 3. the Ray executor on the same data, the first format that ran
        ray_row = None
        if not args.no_ray and rows and runtime_installed("ray"):
            missing.append("ray: ray is not installed here (the Ray executor's check)")
            print("ray    MISSING: ray is not installed here; the Ray executor's check is skipped", flush=True)
        elif not args.no_ray and rows:
            import ray

            from skybench.harness.executors import RayExecutor

            fmt = next(iter(rows))
            t = time.perf_counter()
            ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
            init = time.perf_counter() - t
            try:
                gpus = int(ray.cluster_resources().get("GPU", 0))
                with Peaks(gpu_index) as mem:
                    t = time.perf_counter()
                    (o,) = evaluate([rows[fmt]["sub"]], track, release, out=tmp / "evals-ray", publish=False,
                                    executor=RayExecutor())
                    wall = time.perf_counter() - t
            finally:
                ray.shutdown()
            if o.status != "FINISHED":
                fail(f"ray ({fmt}): skybench evaluate {o.status}: {o.reason}")
            else:
                record = record_of(o)
                diff = float(np.max(np.abs(predictions(tmp / "evals-ray", ids) - rows[fmt]["pred"])))
                ray_row = (fmt, wall, init, gpus, record.get("device"), mem.parent + mem.children, diff)
                print(f"ray    {fmt}: {n / wall:9.1f} cut-outs/s ({wall:.1f} s; ray.init {init:.1f} s; {gpus} GPU(s); "
                      f"device {record.get('device')}); ratio to local {rows[fmt]['wall'] / wall:.2f}; "
                      f"max |ray - local| {diff:.2e}", flush=True)
                if record.get("device") != device:
                    fail(f"ray ({fmt}): the sandbox ran on {record.get('device')!r}, not {device!r}")
                if cuda and not gpus:
                    fail("ray: the cluster has no GPU resource on a GPU machine")
                if not diff <= TOL:
                    fail(f"ray ({fmt}): predictions differ from the local executor's by {diff:.2e} > {TOL:g}")

        # 4. the bare runtimes on the same arrays, in memory, on the same device; predictions on the CPU. Apart: what
        # of evaluate's own time is re-hashing the test split, and reading the shards into memory
        t_read = t_verify = float("nan")
        if rows:
            t = time.perf_counter()
            x = np.ascontiguousarray(rel.images("test")[:], dtype=np.float32)
            t_read = time.perf_counter() - t
            t = time.perf_counter()
            verify_release(release, only=layout.split_prefixes("test"))
            t_verify = time.perf_counter() - t
            print(f"read the test set into memory in {t_read:.1f} s; verify_release of the test split took "
                  f"{t_verify:.1f} s", flush=True)
        for fmt, r in rows.items():
            try:
                with Peaks(gpu_index) as mem:
                    pred, t_bare = bare_predict(bare_runtime(fmt, r["sub"], device), x, batch)
                k = min(args.compare, n) if cuda else n
                cpu_pred = bare_predict(bare_runtime(fmt, r["sub"], "cpu"), x[:k], batch)[0] if cuda else pred
            except Exception as exc:  # one format's bare runtime failing is that check's failure, not the run's
                fail(f"{fmt}: the bare runtime failed: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            r["bare"], r["bare_gpu"] = t_bare, mem.gpu_mb
            r["diff_same"] = float(np.max(np.abs(pred - r["pred"])))
            r["diff_cpu"], r["k"] = float(np.max(np.abs(cpu_pred - r["pred"][:k]))), k
            ratio = t_bare / r["wall"]
            r["ratio"] = ratio
            print(f"{fmt:6s} bare {n / t_bare:9.1f} cut-outs/s; ratio evaluate / bare {ratio:.2f} (goal >= 0.8); "
                  f"max |sandbox - bare {device}| {r['diff_same']:.2e}, |sandbox - CPU| {r['diff_cpu']:.2e} "
                  f"on {r['k']}", flush=True)
            if not r["diff_cpu"] <= TOL:
                fail(f"{fmt}: sandboxed {device} predictions differ from bare CPU by {r['diff_cpu']:.2e} > {TOL:g}")
            if ratio < args.min_ratio:
                fail(f"{fmt}: evaluate / bare {ratio:.2f} is below {args.min_ratio:g}")
        if missing:
            what = "accelerated runtimes missing" if cuda else "runtimes missing"
            notes.append(f"{what}: {'; '.join(missing)}")
            if args.require_all:
                fail(f"{what}: {'; '.join(missing)}")

    # the figures, as Markdown for perf/RESULTS.md
    gib = 2**30
    md.append(f"Evaluation on {device} ({name}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {n} "
              f"{track.name}-shaped noise cut-outs {shape}, batch {batch}, the same random-weight CNN in each format "
              f"({runtime_versions()}).")
    md.append("")
    md.append("| format | device (sandbox) | evaluate (cut-outs/s) | bare (cut-outs/s) | ratio (goal >= 0.8) | "
              "sandbox wall (s) | bare / sandbox wall | peak RSS parent / sandbox (GiB) | "
              "peak GPU mem eval / bare (MiB) | max abs diff vs CPU (cut-outs) |")
    md.append("|---|---|---|---|---|---|---|---|---|---|")
    for fmt, r in rows.items():
        gpu_mem = " / ".join("-" if r.get(key) is None else f"{r[key]:.0f}" for key in ("gpu", "bare_gpu"))
        bare = f"{n / r['bare']:.1f}" if "bare" in r else "-"
        goal = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        box_ratio = f"{r['bare'] / r['box']:.2f}" if "bare" in r else "-"
        vs_cpu = f"{r['diff_cpu']:.1e} ({r['k']})" if "diff_cpu" in r else "-"
        md.append(f"| {fmt} | {r['dev']} | {n / r['wall']:.1f} | {bare} | {goal} | {r['box']:.1f} | {box_ratio} | "
                  f"{r['parent'] / gib:.2f} / {r['children'] / gib:.2f} | {gpu_mem} | {vs_cpu} |")
    if rows:
        md.append("")
        md.append(f"Apart, in the same run: reading the test set's shards into memory took {t_read:.1f} s and "
                  f"`verify_release` of the test split (evaluate's first step) {t_verify:.1f} s. With the read "
                  "counted, the bare ratios are " + ", ".join(
                      f"{fmt} {(r['bare'] + t_read) / r['wall']:.2f}" for fmt, r in rows.items() if "bare" in r)
                  + ".")
    if ray_row:
        fmt, wall, init, gpus, dev, peak, diff = ray_row
        md.append("")
        md.append(f"Ray executor ({fmt}, {gpus} GPU(s) in the cluster, sandbox device {dev}): {n / wall:.1f} "
                  f"cut-outs/s ({wall:.1f} s, ray.init {init:.1f} s apart), {rows[fmt]['wall'] / wall:.2f}x the "
                  f"local executor; peak RSS of the process tree {peak / gib:.2f} GiB; max |ray - local| {diff:.1e}.")
    for note in notes:
        md.append("")
        md.append(f"Note: {note}.")
    for reason in fails:
        md.append("")
        md.append(f"FAILED: {reason}")
    text = "\n".join(md) + "\n"
    print("\n" + text)
    if args.md:
        with args.md.open("a") as f:
            f.write(text + "\n")
    if fails:
        print(f"gpu_eval: {len(fails)} check(s) failed; first: {fails[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
