"""Did training on a mixture help on real skies? One baseline before (its track's release only) and after (the mixture,
``--also``), read from their organiser's evaluation records (``results/<track>/private/``: every real object),
compared on the track's real set: ``real_lens_recall`` and ``real_fpr`` at each entry's threshold of 1% false
positives on the simulated test, with their Wilson 95% intervals (``tasks/lens/score.py``), and ``real_auroc``.
Printed by ``skybench report`` at the end of ``make run``
(from ``results/realism/``):

    skybench compare-training --before resnet --after resnet-mix \
        --evaluations results/lens-space/evaluations [--evaluations results/lens-space-realsrc/evaluations] \
        --write results/realism/training-mixture.txt

The first ``--evaluations`` folder is the one judged; the others are shown beside it. A change is called
significant only when the two 95% intervals do not overlap (conservative: both entries score the same objects)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from skybench.harness.record import RECORD, RecordError, read_record, record_dir
from skybench.harness.visibility import private_dir

TEAM = "baselines"
COLUMNS = ("auroc", "real_lens_recall", "real_fpr", "real_auroc")  # shown per entry; the last three with intervals
# metric -> the direction that is better on real skies
JUDGED = {"real_lens_recall": "raise", "real_fpr": "lower"}


def entry_metrics(evaluations: Path, name: str, team: str = TEAM) -> tuple[dict[str, float] | None, str]:
    """(the metrics of ``team/name``'s organiser record for ``evaluations``, "") or (None, why there are none).

    The organiser's record (``results/<track>/private/``) has the metrics on every real object; the participant's
    only those of the public part while the phase is open."""
    path = private_dir(record_dir(evaluations, team, name)) / RECORD
    if not path.is_file():
        return None, f"no record of {team}/{name} in {path.parent.parent}"
    try:
        rec = read_record(path)
    except RecordError as exc:
        return None, str(exc)
    if rec.status != "FINISHED":
        return None, f"{team}/{name} FAILED on {evaluations}: {rec.reason}"
    return {k: float(v) for k, v in rec.metrics.items()}, ""


def _fmt(m: Mapping[str, float], key: str) -> str:
    value = m.get(key, math.nan)
    if not math.isfinite(value):
        return "n/a"
    low, high = m.get(f"{key}_ci_low", math.nan), m.get(f"{key}_ci_high", math.nan)
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if math.isfinite(low) and math.isfinite(high) else f"{value:.3f}"


def verdict(key: str, before: Mapping[str, float], after: Mapping[str, float]) -> tuple[bool | None, str]:
    """(whether ``after`` is better than ``before`` on ``key`` (None: not measured), one sentence saying so)."""
    b, a = before.get(key, math.nan), after.get(key, math.nan)
    if not (math.isfinite(b) and math.isfinite(a)):
        return None, f"{key}: not measured (the real set has none of the objects it needs)"
    if a == b:
        return False, f"{key}: unchanged at {_fmt(after, key)}"
    moved = "raised" if a > b else "lowered"
    overlap = (after.get(f"{key}_ci_low", -math.inf) <= before.get(f"{key}_ci_high", math.inf)
               and before.get(f"{key}_ci_low", -math.inf) <= after.get(f"{key}_ci_high", math.inf))
    better = a > b if JUDGED[key] == "raise" else a < b
    note = "the 95% intervals overlap: not a significant change" if overlap else "the 95% intervals do not overlap"
    return better, f"{key}: {moved} from {_fmt(before, key)} to {_fmt(after, key)} ({note})"


def compare(evaluations: Sequence[Path], before: str, after: str) -> str:
    """The comparison's text: a table of both entries on every folder of ``evaluations``, then the verdict on the
    first."""
    lines = [f"Training on a mixture: {before} (its track's release) vs {after} (the mixture with the realistic "
             "variants), real sets at each entry's 1%-FPR threshold on the simulated test, Wilson 95% intervals",
             (f"  {'evaluated on':<22}{'entry':<14}" + "".join(f"{c:<26}" for c in COLUMNS)).rstrip()]
    judged: dict[str, dict[str, float] | None] = {}
    problems = []
    for i, folder in enumerate(evaluations):
        track = Path(folder).parent.name
        for name in (before, after):
            m, why = entry_metrics(Path(folder), name)
            if i == 0:
                judged[name] = m
            if m is None:
                problems.append(why)
                continue
            lines.append(f"  {track:<22}{name:<14}" + "".join(f"{_fmt(m, c):<26}" for c in COLUMNS).rstrip())
    lines += [f"  ({p})" for p in problems]
    b, a = judged.get(before), judged.get(after)
    first = Path(evaluations[0]).parent.name
    if b is None or a is None:
        lines.append(f"Outcome on {first}: not known (a record is missing or failed; see above)")
        return "\n".join(lines) + "\n"
    results = {key: verdict(key, b, a) for key in JUDGED}
    lines += [f"  {text}" for _, text in results.values()]
    said = []
    for key, (better, _) in results.items():
        want = "raise" if JUDGED[key] == "raise" else "lower"
        said.append(f"did not measure {key}" if better is None else
                    f"{'did' if better else 'did NOT'} {want} {key}")
    lines.append(f"Outcome on {first}: the mixture {' and '.join(said)} for {before}.")
    return "\n".join(lines) + "\n"
