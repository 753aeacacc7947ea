"""How real the simulated lens cut-outs look, and whether the ranking on simulations carries over to real skies
(``skybench realism lens-space`` / ``lens-ground``, stage ``realism-lens``, notebook 06).

1. **Per-object statistics** (:func:`object_statistics`, in the track's reference band, :func:`reference_band`) of
   four groups side by side: simulated lenses and non-lenses (the release's public **train** split and its labels)
   and real lenses and non-lenses (the track's real set, ``skybench import-real-set``): flux within 2" and in the
   whole frame (as magnitudes), the CAS concentration and asymmetry (:func:`concentration`, :func:`asymmetry`), the
   peak S/N, the border noise and the shape of its power spectrum (:func:`border_power`), and for a multi-band
   track the colours of the 2" fluxes. Per statistic: median and IQR per group and the two-sample Kolmogorov-Smirnov
   distance simulated vs real per class (``scipy.stats.ks_2samp``).
2. **Ranking on simulations vs on real data** (:func:`rank_agreement`): per evaluated entry its simulated AUROC and
   its ``real_lens_recall``, ``real_fpr``, ``real_auroc`` (the leaderboard stage's ``metrics.json``: the phase's
   part of the test set, as the leaderboard shows them), and Spearman's rho between the simulated ranking and each
   real ranking.

The classifier statistics of ``tests/test_real_indistinguishable.py`` (:func:`band_stats`, :data:`NAMES`,
:data:`GROUPS`, :func:`features`) live here too: one home for the per-object statistics of lens cut-outs."""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.ndimage import gaussian_filter
from scipy.stats import ks_2samp, spearmanr

from skybench.common import robust_sigma

if TYPE_CHECKING:
    from skybench.tasks.lens.config import LensTrack

BORDER = 10  # pixels: the frame's border strips, where the noise is measured
APERTURE = 2.0  # arcsec: the flux the real sets are matched on (skybench.real_hst.APERTURE_RADIUS)
GROUP_NAMES = ("sim lens", "sim non-lens", "real lens", "real non-lens")
MAX_PER_GROUP = 300  # simulated objects per group (a seeded random subset): the real groups are far smaller
REAL_METRICS = ("real_lens_recall", "real_fpr", "real_auroc")
LOWER_IS_BETTER = frozenset({"real_fpr"})


# ------------------------------------------------------------------ the classifier statistics (trust test)
def band_stats(x: np.ndarray, scale: float) -> list[float]:
    """Public statistics of one band (H, W) of pixel scale ``scale`` arcsec (:data:`NAMES`)."""
    n = x.shape[0]
    c = (np.arange(n) - (n - 1) / 2.0) * scale
    r = np.hypot(c[:, None], c[None, :])
    border = np.ones(x.shape, dtype=bool)
    border[BORDER:-BORDER, BORDER:-BORDER] = False
    b = x[border]
    bmed = float(np.median(b))
    mad = robust_sigma(b, center=bmed)
    xf = np.where(np.isfinite(x), x, 0.0).astype(np.float64)
    f1, f2, f4 = (float(xf[r <= a].sum()) for a in (1.0, 2.0, 4.0))
    tot = float(xf.sum())
    w = np.clip(xf - bmed, 0.0, None) * (r <= 3.0)
    ws = w.sum() + 1e-12
    size2 = float((w * r**2).sum() / ws)
    centroid_y, centroid_x = float((w * c[:, None]).sum() / ws), float((w * c[None, :]).sum() / ws)
    # the float32 pixels' last mantissa bit: 1 on half of them when each is a float64 value rounded once; float32
    # arithmetic (round half to even) leaves fewer odd ones
    odd = float(np.mean(np.asarray(x, dtype=np.float32).view(np.uint32) & 1))
    # noise: lag-1 correlation and power at several smoothing scales in the border strips (10 px wide)
    strips = [xf[:BORDER], xf[-BORDER:], xf[:, :BORDER].T, xf[:, -BORDER:].T]
    d1 = np.concatenate([(s[:, 1:] - s[:, :-1]).ravel() for s in strips])
    d2 = np.concatenate([(s[:, 2:] - s[:, :-2]).ravel() for s in strips])
    corr1 = 1.0 - float(np.var(d1)) / (2.0 * float(np.var(b)) + 1e-30)
    corr2 = 1.0 - float(np.var(d2)) / (2.0 * float(np.var(b)) + 1e-30)
    smooth = [float(np.std(gaussian_filter(xf, s)[border])) for s in (1.0, 2.0, 4.0)]
    vals = np.unique(x[border])
    return [tot, f1, f2, f4, f1 / (f4 + 1e-12), float(xf.max()), float(xf.min()), float(xf[n // 2, n // 2]),
            bmed, mad, float(np.std(b)), float(np.mean(np.abs(b - bmed))), corr1, corr2,
            *(s / (mad + 1e-30) for s in smooth), size2,
            float(np.mean(~np.isfinite(x))), float(np.mean(x == 0)), len(vals) / b.size,
            float(np.max(np.abs(b - bmed))) / (mad + 1e-30), odd, centroid_y, centroid_x]


NAMES = ("total", "flux_1", "flux_2", "flux_4", "concentration", "max", "min", "centre", "border_median",
         "border_mad", "border_std", "border_mean_abs_dev", "lag1_corr", "lag2_corr", "smooth1", "smooth2", "smooth4",
         "size2", "nonfinite", "zero", "distinct", "border_max_dev", "odd_mantissa", "centroid_y", "centroid_x")
GROUPS = {"all": NAMES,
          "noise": ("border_mad", "border_std", "border_mean_abs_dev", "lag1_corr", "lag2_corr", "smooth1", "smooth2",
                    "distinct", "nonfinite", "zero", "odd_mantissa"),
          "flux": ("total", "flux_1", "flux_2", "flux_4")}


def features(images: np.ndarray, scale: float, group: str = "all") -> np.ndarray:
    """(N, features) per-object statistics: every band's of ``GROUPS[group]``, then (all) the colours
    (aperture-flux ratios) between bands."""
    keep = [NAMES.index(n) for n in GROUPS[group]]
    rows = []
    for im in images:
        per = [band_stats(band, scale) for band in im]
        row = [p[j] for p in per for j in keep]
        for i in range(len(per) - 1 if group == "all" else 0):
            row += [-2.5 * np.log10(max(per[i][2], 1e-6) / max(per[i + 1][2], 1e-6)),
                    -2.5 * np.log10(max(per[i][0], 1e-6) / max(per[i + 1][0], 1e-6))]
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


# ------------------------------------------------------------------ the report's statistics (vectorised)
@dataclass(frozen=True)
class Geometry:
    """Pixel radii (pixels, from the frame centre), the border mask, and the curve-of-growth matrix of an
    (n, n) frame: ``growth[k] @ image.ravel()`` is the flux within radius ``radii[k]`` (pixel fractions by 8x8
    sub-pixel sampling)."""

    r: np.ndarray
    border: np.ndarray
    radii: np.ndarray
    growth: sparse.csr_matrix  # (len(radii), n * n)
    r_total: float  # the inner disc (to the border strips): the "total" flux of the CAS concentration


@functools.lru_cache(maxsize=8)
def geometry(n: int, sub: int = 8, step: float = 0.25) -> Geometry:
    c = np.arange(n) - (n - 1) / 2.0
    r = np.hypot(c[:, None], c[None, :])
    border = np.ones((n, n), dtype=bool)
    border[BORDER:-BORDER, BORDER:-BORDER] = False
    r_total = (n - 1) / 2.0 - BORDER
    radii = np.arange(step, r_total + step / 2, step)
    # sub-pixel radii of every pixel; only pixels within r_total + 1 can be partly inside
    o = (np.arange(sub) + 0.5) / sub - 0.5
    near = np.flatnonzero(r.ravel() <= r_total + 1.0)
    sy, sx = c[near // n][:, None, None] + o[:, None], c[near % n][:, None, None] + o[None, :]
    rs = np.hypot(sy, sx).reshape(len(near), -1)
    growth = np.zeros((len(radii), n * n))
    for k, rad in enumerate(radii):
        growth[k, near] = (rs <= rad).mean(axis=1)
    return Geometry(r, border, radii, sparse.csr_matrix(growth), float(r_total))


def _background(x: np.ndarray, g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Per object (N,): the border median and the border noise 1.4826 MAD of (N, H, W) ``x``."""
    b = x[:, g.border]
    med = np.median(b, axis=1)
    return med, robust_sigma(b, axis=1, center=med[:, None])


def _radius_at(growth: np.ndarray, radii: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Per row of ``growth`` (N, K): the first radius where it reaches ``frac`` (N,) of its total, interpolated
    linearly between the sampled radii (NaN where never reached)."""
    out = np.full(len(growth), np.nan)
    for i, (curve, f) in enumerate(zip(growth, frac, strict=True)):
        k = int(np.argmax(curve >= f))
        if curve[k] < f:
            continue
        if k == 0:
            out[i] = radii[0] * f / curve[0] if curve[0] > 0 else radii[0]
        else:
            out[i] = np.interp(f, [curve[k - 1], curve[k]], [radii[k - 1], radii[k]])
    return out


def growth_radii(x: np.ndarray, fractions: tuple[float, ...] = (0.2, 0.5, 0.8)) -> np.ndarray:
    """(N, len(fractions)) radii in pixels enclosing those fractions of the flux within the inner disc (radius to
    the border strips) about the frame centre, background (border median) subtracted; NaN where that flux is not
    positive."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    g = geometry(x.shape[-1])
    med, _ = _background(x, g)
    curves = np.asarray((g.growth @ (x - med[:, None, None]).reshape(len(x), -1).T).T)  # (N, K)
    total = curves[:, -1]
    out = np.full((len(x), len(fractions)), np.nan)
    ok = total > 0
    for j, f in enumerate(fractions):
        out[ok, j] = _radius_at(curves[ok], g.radii, f * total[ok])
    return out


def concentration(x: np.ndarray, radii: np.ndarray | None = None) -> np.ndarray:
    """CAS concentration C = 5 log10(r80 / r20) (Bershady, Jangren & Conselice 2000; Conselice 2003, ApJS 147, 1,
    eq. 1), r20 and r80 the radii of the circles about the frame centre holding 20% and 80% of the flux within the
    inner disc (:func:`growth_radii`; not 1.5 Petrosian radii: the frames are too small for the biggest galaxies').
    A circular Gaussian gives 5 log10(sqrt(ln 5 / ln 1.25)) = 2.14, an exponential disc 2.8. ``radii``: (N, 2) r20
    and r80 when already measured."""
    r = growth_radii(x, (0.2, 0.8)) if radii is None else radii
    return 5.0 * np.log10(r[:, 1] / r[:, 0])


def asymmetry(x: np.ndarray, r50: np.ndarray | None = None) -> np.ndarray:
    """CAS asymmetry A = (sum |I - I_180| - B_180) / sum |I| (Conselice 2003, ApJS 147, 1, eq. 2; Conselice,
    Bershady & Jangren 2000) in the circle of radius 3 r50 (about 1.5 Petrosian radii for Sersic n 1-4) about the
    frame centre (the cut-outs are centred on the deflector: no search for the centre minimising A), I_180 the
    frame rotated by 180 degrees, B_180 the same sum over the border strips (noise only), scaled to the circle's
    pixel count. 0 for a symmetric object; its noise averages out. ``r50``: (N,) half-light radii in pixels when
    already measured."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    g = geometry(x.shape[-1])
    med, _ = _background(x, g)
    x = x - med[:, None, None]
    diff = np.abs(x - x[:, ::-1, ::-1])  # 180 degrees about the centre pixel (odd frames) or the frame centre
    r50 = growth_radii(x, (0.5,))[:, 0] if r50 is None else r50
    rad = np.clip(np.nan_to_num(3.0 * r50, nan=g.r_total), 3.0, g.r_total)
    ap = g.r[None] <= rad[:, None, None]
    n_ap = ap.sum(axis=(1, 2))
    noise = diff[:, g.border].mean(axis=1) * n_ap
    denom = (np.abs(x) * ap).sum(axis=(1, 2))
    return ((diff * ap).sum(axis=(1, 2)) - noise) / np.where(denom > 0, denom, np.nan)


def border_power(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D power spectrum of the border strips ((N, H, W) frames): the frequencies (cycles per pixel, zero
    excluded) and (N, F) the power per object, each strip row's mean removed, averaged over the 4 x BORDER rows,
    in units of the strips' variance, so white noise is flat at 1 (Parseval); correlated noise (resampling,
    drizzling, a broad PSF) and light in the border raise the low frequencies."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    rows = np.concatenate([x[:, :BORDER], x[:, -BORDER:], np.swapaxes(x[:, :, :BORDER], 1, 2),
                           np.swapaxes(x[:, :, -BORDER:], 1, 2)], axis=1)  # (N, 4 BORDER, L)
    rows = rows - rows.mean(axis=2, keepdims=True)
    length = rows.shape[-1]
    power = (np.abs(np.fft.rfft(rows, axis=2)) ** 2 / length).mean(axis=1)[:, 1:]
    var = rows.var(axis=(1, 2))
    return np.fft.rfftfreq(length)[1:], power / np.where(var > 0, var, np.nan)[:, None]


def noise_lowk(x: np.ndarray) -> np.ndarray:
    """Border noise power in the lowest third of the frequencies over that in the highest third
    (:func:`border_power`): 1 for white noise."""
    _, p = border_power(x)
    third = p.shape[1] // 3
    return p[:, :third].mean(axis=1) / p[:, -third:].mean(axis=1)


def reference_band(track: LensTrack) -> int:
    """The band the real sets are matched in (r, else the first), as :func:`skybench.tasks.lens.real_nonlens.
    reference_band` (not imported: it would make the simulator this report's code; a test checks they agree)."""
    return track.band_names.index("r") if "r" in track.band_names else 0


def object_statistics(images: np.ndarray, track: LensTrack, batch: int = 256) -> pd.DataFrame:
    """Per object of (N, bands, H, W) ``images`` (e-/s) of ``track``: ``mag_2`` (within 2"), ``mag_total`` (the
    frame, background subtracted), ``concentration``, ``asymmetry``, ``peak_snr`` (brightest pixel within 2" above
    the border median, in border sigma), ``noise_sigma`` (e-/s), ``noise_lowk`` in the reference band, and for
    several bands the colours of adjacent bands' 2" magnitudes (``g-r``...); NaN where a flux is not positive."""
    images = np.asarray(images)
    bands = track.survey.bands
    ref = reference_band(track)
    parts = []
    for start in range(0, len(images), batch):
        x = np.nan_to_num(np.asarray(images[start:start + batch], dtype=np.float64))
        g = geometry(x.shape[-1])
        aperture = g.r * track.survey.pixel_scale <= APERTURE
        per_band = []
        for b in range(x.shape[1]):
            med, sigma = _background(x[:, b], g)
            per_band.append((x[:, b] - med[:, None, None], med, sigma))
        xr, _, sigma = per_band[ref]
        radii = growth_radii(x[:, ref], (0.2, 0.5, 0.8))
        zp = bands[ref].zero_point
        cols: dict[str, np.ndarray] = {
            "mag_2": _mag(xr[:, aperture].sum(axis=1), zp),
            "mag_total": _mag(xr.sum(axis=(1, 2)), zp),
            "concentration": concentration(x[:, ref], radii[:, [0, 2]]),
            "asymmetry": asymmetry(x[:, ref], radii[:, 1]),
            "peak_snr": xr[:, aperture].max(axis=1) / np.where(sigma > 0, sigma, np.nan),
            "noise_sigma": sigma,
            "noise_lowk": noise_lowk(x[:, ref]),
        }
        for b in range(len(per_band) - 1):
            m1 = _mag(per_band[b][0][:, aperture].sum(axis=1), bands[b].zero_point)
            m2 = _mag(per_band[b + 1][0][:, aperture].sum(axis=1), bands[b + 1].zero_point)
            cols[f"{bands[b].name}-{bands[b + 1].name}"] = m1 - m2
        parts.append(pd.DataFrame(cols))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _mag(flux: np.ndarray, zero_point: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, -2.5 * np.log10(np.where(flux > 0, flux, 1.0)) + zero_point, np.nan)


# ------------------------------------------------------------------ the four groups and their comparison
@dataclass
class Groups:
    """Per group (:data:`GROUP_NAMES`): the per-object statistics and the border power spectra."""

    stats: dict[str, pd.DataFrame]
    spectra: dict[str, np.ndarray]  # (N, F) per group
    freqs: np.ndarray
    notes: list[str] = field(default_factory=list)


def measure(track: LensTrack, sim_images: np.ndarray, sim_labels: np.ndarray, real_images: np.ndarray,
            real_labels: np.ndarray) -> Groups:
    """The statistics of the four groups: simulated and real objects split by their ``is_lens`` labels."""
    ref = reference_band(track)
    stats, spectra = {}, {}
    freqs = border_power(np.zeros((1, *np.asarray(sim_images).shape[-2:])))[0]
    for name, images, labels, v in (("sim lens", sim_images, sim_labels, 1), ("sim non-lens", sim_images,
                                                                            sim_labels, 0),
                                    ("real lens", real_images, real_labels, 1),
                                    ("real non-lens", real_images, real_labels, 0)):
        sel = np.asarray(images)[np.asarray(labels) == v] if len(labels) else np.asarray(images)[:0]
        stats[name] = object_statistics(sel, track)
        spectra[name] = border_power(sel[:, ref])[1] if len(sel) else np.empty((0, len(freqs)))
    return Groups(stats, spectra, freqs)


def summary(groups: Groups) -> pd.DataFrame:
    """Per statistic (rows): median and IQR per group, counts, and the KS distance simulated vs real per class."""
    names = list(dict.fromkeys(c for df in groups.stats.values() for c in df.columns))
    rows = {}
    for stat in names:
        row: dict[str, float] = {}
        vals = {g: _finite(df[stat]) if stat in df else np.empty(0) for g, df in groups.stats.items()}
        for g, v in vals.items():
            q = np.quantile(v, [0.25, 0.5, 0.75]) if len(v) else np.full(3, np.nan)
            row |= {f"{g} median": q[1], f"{g} iqr": q[2] - q[0], f"{g} n": len(v)}
        for cls in ("lens", "non-lens"):
            a, b = vals[f"sim {cls}"], vals[f"real {cls}"]
            row[f"ks {cls}"] = float(ks_2samp(a, b).statistic) if len(a) and len(b) else math.nan
        rows[stat] = row
    return pd.DataFrame(rows).T


def _finite(s: pd.Series) -> np.ndarray:
    v = s.to_numpy(np.float64)
    return v[np.isfinite(v)]


def summary_table(table: pd.DataFrame) -> str:
    """The plain-text statistics table: median and IQR per group, KS simulated vs real per class."""
    head = f"{'statistic':<14}" + "".join(f"{g:>20}" for g in GROUP_NAMES) + f"{'KS lens':>9}{'KS non':>8}"
    sub = f"{'':<14}" + f"{'median     IQR':>20}" * len(GROUP_NAMES)
    lines = [head, sub]
    for stat, row in table.iterrows():
        cells = "".join(f"{_g(row[f'{g} median'])} {_g(row[f'{g} iqr'])}".rjust(20) for g in GROUP_NAMES)
        lines.append(f"{stat!s:<14}{cells}{_g(row['ks lens'], 9)}{_g(row['ks non-lens'], 8)}")
    counts = ", ".join(f"{g} {int(table[f'{g} n'].max()) if len(table) else 0}" for g in GROUP_NAMES)
    return "\n".join([*lines, f"objects: {counts}"])


def _g(v: float, width: int = 9) -> str:
    return f"{'-':>{width}}" if not np.isfinite(v) else f"{v:>{width}.3g}"


# ------------------------------------------------------------------ ranking on simulations vs on real data
@dataclass
class RankAgreement:
    """Per entry (rows, best simulated first): the simulated primary metric and rank, the real metrics and the
    ranks by each; ``rho``: per real metric, Spearman's rho between the simulated and the real ranking and the
    number of entries with both values (NaN below 3, or when one side is constant)."""

    table: pd.DataFrame
    rho: dict[str, tuple[float, int]]
    primary: str
    note: str = ""  # why there are no entries, when that is known

    def text(self) -> str:
        if not len(self.table):
            return f"ranking on simulations vs real data: no evaluated entries{f' ({self.note})' if self.note else ''}"
        t = self.table
        cols = [self.primary, *REAL_METRICS]
        lines = [f"{'entry':<28}{'sim rank':>9}" + "".join(f"{c:>18}" for c in cols)]
        for entry, row in t.iterrows():
            lines.append(f"{str(entry)[:27]:<28}{int(row['sim_rank']):>9}"
                         + "".join(f"{_g(row[c], 10)} {_rank(row, c)}".rjust(18) for c in cols))
        lines.append("(real metrics: value, then the entry's rank by it; real_fpr ranks lower first)")
        for m, (rho, n) in self.rho.items():
            lines.append(f"Spearman rho, simulated {self.primary} ranking vs {m} ranking: "
                         + (f"{rho:+.2f} (n = {n})" if np.isfinite(rho) else f"undefined (n = {n})"))
        return "\n".join(lines)


def _rank(row: pd.Series, c: str) -> str:
    r = row.get(f"rank_{c}", math.nan)
    return f"({int(r)})" if pd.notna(r) and c in REAL_METRICS else "   "


def rank_agreement(entries: pd.DataFrame, primary: str = "auroc", higher_is_better: bool = True) -> RankAgreement:
    """``entries``: one row per evaluated entry (index: ``team/name``) with the ``primary`` simulated metric and
    any of :data:`REAL_METRICS` (missing or NaN where undefined). Ranks: 1 = best, ties share the average rank;
    rho = ``scipy.stats.spearmanr`` of the simulated and the real metric, the real one negated where lower is
    better, so +1 means the same ranking."""
    t = entries.copy()
    for c in (primary, *REAL_METRICS):
        t[c] = pd.to_numeric(t[c], errors="coerce") if c in t else math.nan
    t = t[t[primary].notna()]
    sign = 1.0 if higher_is_better else -1.0
    t = t.assign(sim_rank=(-sign * t[primary]).rank(method="min")).sort_values(["sim_rank"], kind="stable")
    rho = {}
    for m in REAL_METRICS:
        real = -t[m] if m in LOWER_IS_BETTER else t[m]
        t[f"rank_{m}"] = (-real).rank(method="average")
        both = t[primary].notna() & t[m].notna()
        n = int(both.sum())
        value = math.nan
        if n >= 3:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a constant column: rho undefined (NaN)
                value = float(spearmanr(sign * t.loc[both, primary], real[both]).statistic)
        rho[m] = (value, n)
    return RankAgreement(t, rho, primary)


def read_entries(metrics_json: Path) -> pd.DataFrame:
    """The leaderboard stage's ``metrics.json`` ({"team/name": {metric: value}}, ranked entries) as a frame."""
    data = json.loads(Path(metrics_json).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{metrics_json}: not a leaderboard metrics file ({{'team/name': {{metric: value}}}})")
    return pd.DataFrame.from_dict(data, orient="index")


# ------------------------------------------------------------------ the report
@dataclass
class LensRealism:
    track: str
    groups: Groups
    table: pd.DataFrame
    ranks: RankAgreement
    header: str = ""

    def text(self) -> str:
        return "\n".join([self.header, summary_table(self.table), "", self.ranks.text()]).strip("\n")


def load_groups(track: LensTrack, release: Path, real: Path | None, max_per_group: int = MAX_PER_GROUP,
                seed: int = 0) -> tuple[Groups, str]:
    """The four groups of ``track``: the public train split of the simulated ``release`` (at most
    ``max_per_group`` lenses and as many non-lenses, a seeded random subset) and the whole real set ``real``
    (test split, hidden ``is_lens``; absent or empty: no real groups). Returns the groups and a one-line header."""
    from skybench.release import layout, open_release

    sim = open_release(release)
    labels = sim.labels("train").astype(int)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == v))[:max_per_group] for v in (0, 1)]))
    sim_images, sim_labels = sim.images("train")[keep], labels[keep]
    shape = sim_images.shape[1:]
    real_images, real_labels = np.empty((0, *shape), np.float32), np.empty(0, int)
    real_note = "no real set" if real is None else f"no real set ({_shown(real)} is not a release)"
    if real is not None and layout.is_release(real):
        r = open_release(real)
        n = r.manifest["counts"].get("test", 0)
        if n:
            ids = r.meta("test")["id"].to_numpy()
            real_labels = r.hidden("test").truth(ids, ["is_lens"])["is_lens"].to_numpy().astype(int)
            real_images = r.images("test")[:]
        n_lens = int((real_labels == 1).sum())
        real_note = f"real: {_shown(real)} (the real set): {n_lens} lenses, {len(real_labels) - n_lens} non-lenses"
        if not n:
            real_note = f"real: {_shown(real)} (the real set): empty ({r.manifest.get('note', 'no objects')})"
    header = (f"{track.name}, band {track.band_names[reference_band(track)]}, simulated vs real:\n"
              f"  simulated: {_shown(release)} train split: {int((sim_labels == 1).sum())} lenses, "
              f"{int((sim_labels == 0).sum())} non-lenses of {len(labels)} (subset seed {seed})\n  {real_note}")
    return measure(track, sim_images, sim_labels, real_images, real_labels), header


def _shown(path: Path) -> str:
    """``path`` relative to the project (the report's text does not depend on where the project is)."""
    from skybench.tracks import project_root

    try:  # not resolved: releases/<track> may be a link to elsewhere
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(project_root())).as_posix()
    except ValueError:
        return str(path)


def compare(track: LensTrack, release: Path, real: Path | None, entries: pd.DataFrame,
            max_per_group: int = MAX_PER_GROUP, seed: int = 0) -> LensRealism:
    groups, header = load_groups(track, release, real, max_per_group, seed)
    return LensRealism(track.name, groups, summary(groups),
                       rank_agreement(entries, track.metrics.primary, track.metrics.higher_is_better), header)


def plot(result: LensRealism, path: Path | str) -> Path:
    """Histograms of every statistic for the four groups (step, density) and the median border power spectra,
    saved as a PNG at ``path`` (a bare ``Figure``: no pyplot state, so a notebook's backend is left alone)."""
    from matplotlib.figure import Figure

    stats = list(result.table.index)
    ncol = 4
    nrow = -(-(len(stats) + 1) // ncol)
    fig = Figure(figsize=(4.2 * ncol, 3.2 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    colours = {"sim lens": "C3", "sim non-lens": "C0", "real lens": "k", "real non-lens": "C2"}
    styles = {"sim lens": "-", "sim non-lens": "-", "real lens": "--", "real non-lens": "--"}
    for ax, stat in zip(axes.ravel(), stats, strict=False):
        vals = {g: _finite(df[stat]) if stat in df else np.empty(0) for g, df in result.groups.stats.items()}
        everything = np.concatenate(list(vals.values()))
        if not len(everything):
            ax.set_title(f"{stat}: no values")
            continue
        lo, hi = np.quantile(everything, [0.01, 0.99])
        logx = lo > 0 and hi / lo > 30  # peak S/N, noise_lowk: heavy tails
        bins = np.geomspace(lo, hi, 30) if logx else np.linspace(lo, hi if hi > lo else lo + 1, 30)
        if logx:
            ax.set_xscale("log")
        for g, v in vals.items():
            if len(v):
                ax.hist(np.clip(v, bins[0], bins[-1]), bins, density=True, histtype="step", color=colours[g],
                        ls=styles[g], label=f"{g} ({len(v)})")
        row = result.table.loc[stat]
        ax.set_title(f"{stat}  KS lens {_g(row['ks lens'], 1).strip()}, non {_g(row['ks non-lens'], 1).strip()}",
                     fontsize=9)
    axes.ravel()[0].legend(fontsize=7)
    ax = axes.ravel()[len(stats)]
    for g, p in result.groups.spectra.items():
        if len(p):
            ax.plot(result.groups.freqs, np.nanmedian(p, axis=0), color=colours[g], ls=styles[g], label=g)
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.set(xlabel="frequency [1/pixel]", ylabel="border power / variance", yscale="log",
           title="border noise power spectrum (median)")
    for extra in axes.ravel()[len(stats) + 1:]:
        extra.axis("off")
    fig.suptitle(f"{result.track}: simulated vs real")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path


def log_realism(result: LensRealism, png: Path) -> str:
    """Log the KS distances (``ks_<statistic>_<lens|nonlens>``) and rank correlations (``spearman_<metric>``), the
    text report, the statistics table (CSV) and the plot ``png`` to the track's organiser experiment, one run tagged
    ``skybench.kind = realism`` (the leaderboard reads only ``evaluation`` runs), as the photo-z realism does.
    Returns the run id."""
    from skybench.tracking import KIND_TAG, client, ensure_organiser_experiment

    c = client()
    run_id = c.create_run(ensure_organiser_experiment(result.track), run_name=f"realism {result.track}",
                          tags={KIND_TAG: "realism", "skybench.track": result.track}).info.run_id
    for stat, row in result.table.iterrows():
        for cls, key in (("lens", "ks lens"), ("nonlens", "ks non-lens")):
            if np.isfinite(row[key]):
                c.log_metric(run_id, f"ks_{_key(str(stat))}_{cls}", float(row[key]))
    for m, (rho, _) in result.ranks.rho.items():
        if np.isfinite(rho):
            c.log_metric(run_id, f"spearman_{m}", rho)
    c.log_artifact(run_id, str(png))
    c.log_text(run_id, result.text(), "realism.txt")
    c.log_text(run_id, result.table.to_csv(), "realism_statistics.csv")
    c.log_text(run_id, result.ranks.table.to_csv(), "realism_ranks.csv")
    c.set_terminated(run_id, "FINISHED")
    return run_id


def _key(stat: str) -> str:
    return stat.replace("-", "_minus_")


def report(track: str, *, log: bool = True, release: Path | None = None, real: Path | None = None,
           metrics: Path | None = None, max_per_group: int = MAX_PER_GROUP, seed: int = 0) -> tuple[str, bool, str]:
    """What ``skybench realism TRACK`` does for a lens track: the report of :func:`compare` for the release
    (default ``releases/<track>``), the track's real set (default its ``evaluation.real_set``) and the entries of
    ``metrics`` (default ``results/<track>/metrics.json``, written by the leaderboard stage); logged to MLflow with its
    plot when ``log``. Returns (text, passed, a line about the MLflow run): there is no target to pass."""
    import tempfile

    from skybench.tasks.lens.config import LensTrack
    from skybench.tracks import load_track, project_root

    t = load_track(track)
    if not isinstance(t, LensTrack):
        raise ValueError(f"track {track!r} is a {t.task} track, not a lens track")
    root = project_root()
    release = release if release is not None else root / "releases" / t.name
    if real is None and t.evaluation.real_set:
        real = root / t.evaluation.real_set
    metrics = metrics if metrics is not None else root / "results" / t.name / "metrics.json"
    from skybench.release import layout

    if not layout.is_release(release):
        raise FileNotFoundError(f"{release}: no release of {track}; make it with `skybench simulate {track}` "
                                f"(or `dvc repro -s pipelines/lens/dvc.yaml:simulate-lens@{track}`), or give --release")
    entries = read_entries(metrics) if metrics.is_file() else pd.DataFrame()
    result = compare(t, release, real, entries, max_per_group, seed)
    if not metrics.is_file():
        result.ranks.note = (f"no leaderboard metrics at {_shown(metrics)}: `skybench leaderboard {t.name} --write "
                             f"results/{t.name}` (stage leaderboard-lens@{t.name}) writes them")
    line = ""
    if log:
        with tempfile.TemporaryDirectory(prefix="skybench-realism-") as tmp:
            line = f"logged to MLflow run {log_realism(result, plot(result, Path(tmp) / 'realism.png'))}"
    return result.text(), True, line
