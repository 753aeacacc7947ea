"""Real-lens recall is a binomial proportion on a few dozen lenses: its Wilson 95% interval (issue 16)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from skybench.tasks.lens.score import real_lens_recall, wilson_interval


@pytest.mark.parametrize(("k", "n"), [(0, 30), (1, 30), (17, 30), (29, 30), (30, 30), (7, 12), (250, 1000), (1, 1)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    want = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((want.low, want.high), abs=1e-12)


def test_wilson_interval_known_value_and_edges() -> None:
    # Newcombe 1998 (Stat. Med. 17, 857), Table I: 81/263 -> 0.2553, 0.3662
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(0, 20)[1] > 0.1  # not empty at 0 successes
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_score_real_reports_the_interval_beside_the_recall(tmp_path) -> None:
    from skybench.tasks.lens.score import score_real

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(500), np.zeros(500)].astype(int)
    scores = labels + rng.normal(0, 0.5, labels.size)
    real = rng.normal(0.8, 0.5, 40)

    class Hidden:  # the HiddenSplit interface score_real uses: truth(ids)
        def truth(self, ids: np.ndarray) -> pd.DataFrame:
            return pd.DataFrame({"is_lens": labels[ids]})

    ids = np.arange(labels.size)
    m = score_real(None, ids, scores, Hidden(), np.arange(40), real, Hidden(), tmp_path)  # type: ignore[arg-type]
    recall = real_lens_recall(pd.DataFrame({"is_lens": labels}), scores, real)
    k = round(recall * 40)
    want = binomtest(k, 40).proportion_ci(method="wilson")
    assert m["real_lens_recall"] == recall
    assert (m["real_lens_recall_ci_low"], m["real_lens_recall_ci_high"]) == pytest.approx((want.low, want.high))
    assert m["real_lens_recall_ci_low"] < recall < m["real_lens_recall_ci_high"]
