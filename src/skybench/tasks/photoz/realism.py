"""How real the simulated photo-z galaxies look: their colours against the real SDSS Main Galaxy Sample's **train**
split (``data/photoz_sdss_mgs/train.csv``; the test split is never read here, :func:`read_real_train`).

The simulated sample is first reweighted to the real joint (r magnitude, z) distribution (:func:`match_weights`:
per cell of a grid of real quantiles, weight = real share / simulated share), so that the colours are compared at
the same luminosities and distances; then per colour the two-sample Kolmogorov-Smirnov distance (weighted
simulated ECDF vs real ECDF) and per redshift bin the median g-r, with what a median hides of a bimodal colour: the
g-r quartiles and the red share (the share above the real bin's red/blue divider, :func:`valley`). What the
reweighting hides is shown beside it: each colour's KS before reweighting, and the KS and median offset of the r
magnitude and z marginals. Used by ``skybench realism photoz-catalog``, the population fit
(:mod:`skybench.tasks.photoz.calibrate`) and ``tests/test_photoz_realism.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

COLOURS = (("u", "g"), ("g", "r"), ("r", "i"), ("i", "z"))
Z_BINS = ((0.02, 0.06), (0.06, 0.10), (0.10, 0.14), (0.14, 0.20), (0.20, 0.30))
KS_TARGET = 0.10  # issue 20: every colour's KS distance below this
MEDIAN_TARGET = 0.03  # issue 20: median g-r per redshift bin within this [mag] (or 2 sd of the real median)
QUARTILE_TARGET = 0.02  # g-r quartiles per redshift bin within this [mag] (or 2 sd of the real quartile)
RED_SHARE_TARGET = 0.05  # red share per redshift bin within this (or 2 sd of the real share)
REAL_TRAIN = Path("data/photoz_sdss_mgs/train.csv")


def read_real_train(root: Path | str) -> pd.DataFrame:
    """The real MGS train split as (z, mag_u..mag_z); only ``train.csv`` (the test split stays unseen by the
    population fit and the realism check)."""
    from skybench.tasks.photoz.real import read_catalogue

    path = Path(root) / REAL_TRAIN
    if path.name != "train.csv":  # pragma: no cover - a guard against editing REAL_TRAIN to the test split
        raise ValueError(f"{path}: the realism check and the population fit read the train split only")
    df = read_catalogue(path)
    return df.rename(columns={"z_spec": "z"}) if "z_spec" in df else df


def match_weights(sim_r: np.ndarray, sim_z: np.ndarray, real_r: np.ndarray, real_z: np.ndarray,
                  n_r: int = 8, n_z: int = 10) -> np.ndarray:
    """Weights making the simulated (r, z) distribution the real one: cells from the real quantiles (``n_r`` x
    ``n_z``), weight = real count / simulated count of the object's cell (0 outside the real range or in a cell
    with no real object); normalised to sum 1."""
    r_edges = np.quantile(real_r, np.linspace(0, 1, n_r + 1))
    z_edges = np.quantile(real_z, np.linspace(0, 1, n_z + 1))
    real_h, _, _ = np.histogram2d(real_r, real_z, [r_edges, z_edges])
    sim_h, _, _ = np.histogram2d(sim_r, sim_z, [r_edges, z_edges])
    ir = np.searchsorted(r_edges, sim_r, side="right") - 1
    iz = np.searchsorted(z_edges, sim_z, side="right") - 1
    ir = np.where(sim_r == r_edges[-1], n_r - 1, ir)
    iz = np.where(sim_z == z_edges[-1], n_z - 1, iz)
    inside = (ir >= 0) & (ir < n_r) & (iz >= 0) & (iz < n_z)
    w = np.zeros(len(sim_r))
    cell_w = np.divide(real_h, sim_h, out=np.zeros_like(real_h), where=sim_h > 0)
    w[inside] = cell_w[ir[inside], iz[inside]]
    if w.sum() <= 0:
        raise ValueError("no simulated object falls in the real (r, z) range; cannot reweight")
    return w / w.sum()


def weighted_ks(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> float:
    """sup |F_x,w - F_y| of the weighted ECDF of ``x`` and the ECDF of ``y``."""
    grid = np.sort(np.concatenate([x, y]))
    order = np.argsort(x)
    cw = np.concatenate([[0.0], np.cumsum(w[order])]) / np.sum(w)
    fx = cw[np.searchsorted(x[order], grid, side="right")]
    fy = np.searchsorted(np.sort(y), grid, side="right") / len(y)
    return float(np.max(np.abs(fx - fy)))


def weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    return _weighted_quantile(x, w, 0.5)


def median_sd(x: np.ndarray, n_boot: int = 400) -> float:
    """Bootstrap standard deviation of the median of ``x`` (fixed resamples: the same ``x``, the same answer). A
    bimodal sample's median is uncertain where it falls between the modes: the real g-r medians of the end z bins
    (1,006 and 125 galaxies) are known to 0.017 and 0.038 mag, those of z 0.06-0.20 to 0.006-0.008."""
    return quantile_sd(x, 0.5, n_boot)


def quantile_sd(x: np.ndarray, q: float, n_boot: int = 400) -> float:
    """Bootstrap standard deviation of the ``q`` quantile of ``x`` (fixed resamples, as :func:`median_sd`)."""
    if len(x) == 0:
        return float("nan")
    idx = np.random.default_rng(0).integers(0, len(x), (n_boot, len(x)))
    return float(np.std(np.quantile(x[idx], q, axis=1)))


def valley(x: np.ndarray, n_iter: int = 300) -> float:
    """The red/blue divider of a bimodal colour sample: two Gaussians fitted by EM (as Baldry et al. 2004, ApJ 600,
    681, fit u-r per magnitude bin), the colour between their means where the two weighted densities are equal. A
    fit to the whole bin, not a density minimum: the real z 0.06-0.14 bins have a flat green valley (a histogram's
    minimum wanders by 0.1 mag with the bin width) and the z 0.20-0.30 bin only 125 galaxies."""
    x = np.sort(np.asarray(x, np.float64))
    half = len(x) // 2
    lo, hi = x[:half], x[half:]  # start: the lower and upper halves
    mu, sd, w = np.array([lo.mean(), hi.mean()]), np.array([lo.std(), hi.std()]), np.full(2, 0.5)
    for _ in range(n_iter):  # EM for a two-component normal mixture (e.g. Bishop 2006, sec. 9.2.2)
        dens = w * np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2) / sd
        resp = dens / dens.sum(axis=1, keepdims=True)
        n_k = resp.sum(axis=0)
        w, mu = n_k / len(x), (resp * x[:, None]).sum(axis=0) / n_k
        sd = np.sqrt((resp * (x[:, None] - mu) ** 2).sum(axis=0) / n_k)
    grid = np.linspace(mu.min(), mu.max(), 2001)
    log_ratio = np.log(w / sd) - 0.5 * ((grid[:, None] - mu) / sd) ** 2
    return float(grid[np.argmin(np.abs(log_ratio[:, 0] - log_ratio[:, 1]))])


@dataclass
class Realism:
    """Per colour: KS distance (weighted, and unweighted), medians and IQRs (sim weighted, real); per z bin: median
    g-r (sim, real, the real one's bootstrap sd, count), its quartiles (``q25``/``q75``: sim, real, sd) and red share
    above the real bin's :func:`valley` (``red``: sim, real, binomial sd); the unweighted r-magnitude and z
    marginals (KS, sim median - real median)."""

    colours: pd.DataFrame
    g_r_by_z: pd.DataFrame
    marginals: pd.DataFrame = field(default_factory=pd.DataFrame)
    extra: dict[str, Any] = field(default_factory=dict)

    def median_limits(self, median_target: float = MEDIAN_TARGET) -> pd.Series:
        """Per z bin, the median g-r target: ``median_target``, or twice the real median's bootstrap sd where that is
        larger (the z 0.20-0.30 bin: 125 real galaxies, sd 0.039; a closer match there would be a match to noise)."""
        return np.maximum(median_target, 2 * self.g_r_by_z["real_sd"])

    def bimodality_failures(self) -> list[str]:
        """The quartiles (within :data:`QUARTILE_TARGET` or 2 real sd) and red shares (within
        :data:`RED_SHARE_TARGET` or 2 real sd) per z bin that miss: what matching medians can hide (a red share
        too high with both peaks too blue)."""
        g = self.g_r_by_z
        bad = []
        for col, target in (("q25", QUARTILE_TARGET), ("q75", QUARTILE_TARGET), ("red", RED_SHARE_TARGET)):
            diff, lim = g[f"sim_{col}"] - g[f"real_{col}"], np.maximum(target, 2 * g[f"{col}_sd"])
            bad += [f"g-r {col} at z {b}: sim - real = {d:+.3f} (|.| >= {m:.3f})"
                    for (b, d), m in zip(diff.items(), lim, strict=True) if abs(d) >= m]
        return bad

    def passed(self, ks_target: float = KS_TARGET, median_target: float = MEDIAN_TARGET) -> bool:
        return bool((self.colours["ks"] < ks_target).all()
                    and (self.g_r_by_z["diff"].abs() < self.median_limits(median_target)).all())

    def failures(self, ks_target: float = KS_TARGET, median_target: float = MEDIAN_TARGET) -> list[str]:
        bad = [f"{c}: KS {k:.3f} >= {ks_target}" for c, k in self.colours["ks"].items() if k >= ks_target]
        bad += [f"g-r median at z {b}: sim - real = {d:+.3f} (|.| >= {lim:.3f})"
                for (b, d), lim in zip(self.g_r_by_z["diff"].items(), self.median_limits(median_target), strict=True)
                if abs(d) >= lim]
        return bad

    def table(self) -> str:
        """The plain-text realism table (what ``skybench realism`` and ``make run`` print)."""
        lines = ["colour   KS     sim median  sim IQR   real median  real IQR   KS unweighted",
                 *(f"{c:<7} {r.ks:6.3f}  {r.sim_median:9.3f}  {r.sim_iqr:8.3f}  {r.real_median:10.3f}  "
                   f"{r.real_iqr:8.3f}  {r.ks_unweighted:6.3f}" for c, r in self.colours.iterrows()),
                 "", "before reweighting (not a target; the reweighting above removes these)",
                 "marginal   KS    sim median - real median",
                 *(f"{m:<9} {r.ks:6.3f}  {r.median_diff:+8.3f}" for m, r in self.marginals.iterrows()),
                 "", "z bin       g-r sim  g-r real   diff   real sd   n_real",
                 *(f"{b:<10} {r.sim:8.3f}  {r.real:8.3f}  {r['diff']:+6.3f}  {r.real_sd:7.3f}  {int(r.n_real):6d}"
                   for b, r in self.g_r_by_z.iterrows()),
                 "", "what the medians hide: g-r quartiles, red share above the real bin's red/blue valley",
                 "z bin      valley  red sim  real    sd    q25 sim  real    sd    q75 sim  real    sd",
                 *(f"{b:<10} {r.valley:6.3f}  {r.sim_red:6.3f} {r.real_red:5.3f} {r.red_sd:5.3f}   "
                   f"{r.sim_q25:6.3f} {r.real_q25:5.3f} {r.q25_sd:5.3f}   {r.sim_q75:6.3f} {r.real_q75:5.3f} "
                   f"{r.q75_sd:5.3f}" for b, r in self.g_r_by_z.iterrows() if "valley" in r)]
        verdict = "PASS" if self.passed() else "FAIL: " + "; ".join(self.failures())
        lines += ["", f"targets: KS < {KS_TARGET}, |median g-r diff| < {MEDIAN_TARGET} (or 2 real sd where larger): "
                      f"{verdict}"]
        if "valley" in self.g_r_by_z:
            bad = self.bimodality_failures()
            lines.append(f"bimodality: |g-r quartile diff| < {QUARTILE_TARGET}, |red share diff| < {RED_SHARE_TARGET} "
                         f"(or 2 real sd where larger): {'FAIL: ' + '; '.join(bad) if bad else 'PASS'}")
        return "\n".join(lines)


def _colours(df: pd.DataFrame) -> dict[str, np.ndarray]:
    return {f"{a}-{b}": df[f"mag_{a}"].to_numpy(np.float64) - df[f"mag_{b}"].to_numpy(np.float64)
            for a, b in COLOURS}


def compare(sim: pd.DataFrame, real: pd.DataFrame) -> Realism:
    """The realism of ``sim`` (columns z, mag_u..mag_z) against ``real`` (same columns)."""
    w = match_weights(sim["mag_r"].to_numpy(), sim["z"].to_numpy(), real["mag_r"].to_numpy(), real["z"].to_numpy())
    keep = w > 0
    sc, rc = _colours(sim), _colours(real)
    rows = {}
    for name in sc:
        x, y = sc[name][keep], rc[name]
        q = np.quantile(y, [0.25, 0.5, 0.75])
        lo, hi = (_weighted_quantile(x, w[keep], p) for p in (0.25, 0.75))
        rows[name] = {"ks": weighted_ks(x, w[keep], y), "sim_median": weighted_median(x, w[keep]),
                      "sim_iqr": hi - lo,
                      "real_median": q[1], "real_iqr": q[2] - q[0],
                      "ks_unweighted": float(ks_2samp(sc[name], y).statistic)}
    marginals = {col: {"ks": float(ks_2samp(sim[c].to_numpy(), real[c].to_numpy()).statistic),
                       "median_diff": float(np.median(sim[c]) - np.median(real[c]))}
                 for col, c in (("r [mag]", "mag_r"), ("z", "z"))}
    zs, zr = sim["z"].to_numpy(), real["z"].to_numpy()
    bins = {}
    for lo_z, hi_z in Z_BINS:
        ms = keep & (zs >= lo_z) & (zs < hi_z)
        mr = (zr >= lo_z) & (zr < hi_z)
        xs, ws, xr = sc["g-r"][ms], w[ms], rc["g-r"][mr]
        s = weighted_median(xs, ws) if ms.any() else float("nan")
        r = float(np.median(xr)) if mr.any() else float("nan")
        cut = valley(xr)
        red = float(np.mean(xr > cut))
        bins[f"{lo_z:.2f}-{hi_z:.2f}"] = {
            "sim": s, "real": r, "diff": s - r, "real_sd": median_sd(xr), "n_real": int(mr.sum()),
            "n_sim": int(ms.sum()), "valley": cut, "sim_red": float(ws[xs > cut].sum() / ws.sum()), "real_red": red,
            "red_sd": float(np.sqrt(red * (1 - red) / len(xr))),  # binomial standard error of a share
            **{f"{k}_q{p}": v for p in (25, 75) for k, v in (
                ("sim", _weighted_quantile(xs, ws, p / 100)), ("real", float(np.quantile(xr, p / 100))))},
            **{f"q{p}_sd": quantile_sd(xr, p / 100) for p in (25, 75)}}
    return Realism(pd.DataFrame(rows).T, pd.DataFrame(bins).T, pd.DataFrame(marginals).T, {"weights": w})


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    c = np.cumsum(w[order])
    return float(x[order][min(np.searchsorted(c, q * c[-1]), len(x) - 1)])


def plot(sim: pd.DataFrame, real: pd.DataFrame, result: Realism, path: Path | str) -> Path:
    """Histograms of the four colours (sim reweighted vs real) and g-r against z, saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = result.extra["weights"]
    sc, rc = _colours(sim), _colours(real)
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.8))
    for ax, name in zip(axes[:4], sc, strict=True):
        lo, hi = np.quantile(rc[name], [0.005, 0.995])
        bins = np.linspace(lo - 0.2, hi + 0.2, 50)
        ax.hist(rc[name], bins, density=True, histtype="step", color="k", label="real MGS train")
        ax.hist(sc[name], bins, weights=w, density=True, histtype="step", color="C3", label="simulated")
        ax.set_title(f"{name}  KS {result.colours.loc[name, 'ks']:.3f}")
    axes[0].legend(fontsize=8)
    ax = axes[4]
    ax.scatter(real["z"], rc["g-r"], s=1, c="k", alpha=0.3, label="real")
    keep = w > 0
    ax.scatter(sim["z"][keep], sc["g-r"][keep], s=1, c="C3", alpha=0.3, label="simulated")
    mids = [np.mean(b) for b in Z_BINS]
    ax.plot(mids, result.g_r_by_z["real"], "ko-", ms=4)
    ax.plot(mids, result.g_r_by_z["sim"], "s-", color="C3", ms=4)
    ax.set(xlim=(0, 0.32), ylim=(0, 1.6), xlabel="z", ylabel="g-r", title="median g-r per z bin")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


MIN_SAMPLE = 20_000  # galaxies the realism figures are measured on, at least


def simulated_sample(track: str, profile: str = "demo", seed: int = 0) -> pd.DataFrame:
    """The train split of ``track``'s ``profile`` (release seed ``seed``) as the release would hold it, extended to
    :data:`MIN_SAMPLE` galaxies (the same population and seed): metadata with z and the catalogue magnitudes
    (features only; no images are drawn). The targets are the population's: the 4,000 of the demo's train split
    leave a bin's median g-r a standard deviation of ~0.013 mag across seeds (0.03 is the target), 20,000 ~0.006."""
    from skybench.physics.backend import get_backend
    from skybench.tasks.photoz.config import GalaxyPopulation, PhotozTrack
    from skybench.tasks.photoz.simulator import GalaxySimulator
    from skybench.tracks import load_track

    t = load_track(track)
    if not isinstance(t, PhotozTrack) or not isinstance(t.population, GalaxyPopulation):
        raise ValueError(f"track {track!r} is not a simulated photo-z track; the realism check compares a simulated "
                         "population with the real MGS")
    t = t.model_copy(update={"inputs": ["features"]})
    n = max(t.split_sizes(profile).train, MIN_SAMPLE)
    return GalaxySimulator(t, get_backend("numpy")).simulate(seed, "train", 0, n)[1]


def log_realism(track: str, result: Realism, png: Path) -> str:
    """Log the realism figures (metrics ``ks_<colour>``, ``g_r_diff_<zbin>``), the table and the plot ``png`` to
    the track's organiser experiment, in one run tagged ``skybench.kind = realism`` (the leaderboard reads only
    ``evaluation`` runs). Returns the run id."""
    from skybench.tracking import KIND_TAG, client, ensure_organiser_experiment

    c = client()
    exp_id = ensure_organiser_experiment(track)
    run_id = c.create_run(exp_id, run_name=f"realism {track}",
                          tags={KIND_TAG: "realism", "skybench.track": track}).info.run_id
    for name, row in result.colours.iterrows():
        c.log_metric(run_id, f"ks_{name}", float(row["ks"]))
    for name, row in result.g_r_by_z.iterrows():
        c.log_metric(run_id, f"g_r_diff_z{name}", float(row["diff"]))
    for name, row in result.colours.iterrows():
        c.log_metric(run_id, f"ks_unweighted_{name}", float(row["ks_unweighted"]))
    for name, key in (("r [mag]", "mag_r"), ("z", "z")):
        c.log_metric(run_id, f"ks_unweighted_{key}", float(result.marginals.loc[name, "ks"]))
        c.log_metric(run_id, f"median_diff_{key}", float(result.marginals.loc[name, "median_diff"]))
    c.log_metric(run_id, "passed", float(result.passed()))
    c.log_artifact(run_id, str(png))
    c.log_text(run_id, result.table(), "realism.txt")
    c.set_terminated(run_id, "FINISHED")
    return run_id


def report(track: str, *, log: bool = True, profile: str = "demo", seed: int = 0) -> tuple[str, bool, str]:
    """What ``skybench realism TRACK`` does for a photo-z track: the table of :func:`compare` for the ``profile``
    train split (release seed ``seed``) against the real MGS train split, logged to MLflow with its plot when
    ``log``. Returns (text, passed, a line about the MLflow run)."""
    import tempfile

    from skybench.tracks import project_root

    sim, real = simulated_sample(track, profile, seed), read_real_train(project_root())
    result = compare(sim, real)
    text = f"{track} ({profile} train split, seed {seed}) vs the real MGS train split:\n{result.table()}"
    line = ""
    if log:
        with tempfile.TemporaryDirectory(prefix="skybench-realism-") as tmp:
            run_id = log_realism(track, result, plot(sim, real, result, Path(tmp) / "realism.png"))
        line = f"logged to MLflow run {run_id}"
    return text, result.passed(), line
