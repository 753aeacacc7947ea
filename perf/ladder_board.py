"""What the Ladder costs the challenge server (``open_board: ladder``, skybench.server.ladder): the open board
and one team's list of submissions, against the plain public board (``open_board: scores``) on the same database
and MLflow store, in one run.

    python perf/ladder_board.py [--teams 8 --submissions 10 --size 2000 --repeats 5]

Makes a lens-space release of ``--size`` objects, then ``--teams`` x ``--submissions`` finished open-phase
submissions (SQLite rows and organiser MLflow runs with saved predictions of varied quality). Prints: the first
ladder (every paired bootstrap step computed: the cost when jobs finish), the board with the ladder warm, after a
restart (the verdicts read back from the database), and the reference, each as seconds per request and as a ratio
to the reference."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teams", type=int, default=8)
    ap.add_argument("--submissions", type=int, default=10, help="finished submissions per team")
    ap.add_argument("--size", type=int, default=2000, help="objects in the release (its test split: a share)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="skybench-ladder-perf-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    root = tmp / "project"
    (root / "releases").mkdir(parents=True)
    (root / "benchmarks").symlink_to(Path(__file__).resolve().parents[1] / "benchmarks")
    os.environ["SKYBENCH_ROOT"] = str(root)

    from sklearn.metrics import roc_auc_score

    from skybench import tracking
    from skybench.release import release_digest
    from skybench.release.reader import open_release
    from skybench.server import ladder, phases
    from skybench.server.auth import add_team
    from skybench.server.config import ChallengeConfig
    from skybench.server.db import Submission, make_engine, sessions, upgrade, utcnow
    from skybench.simulate import simulate_release

    track = "lens-space"
    release = simulate_release(track, root / "releases" / track, size=args.size, progress=False)
    hidden = open_release(release).hidden("test")
    release_sha = release_digest(release)
    truth = hidden.meta(["id", "is_lens"]).sort_values("id")
    y = truth["is_lens"].to_numpy().astype(float)
    t_open = ladder._open_track(track)
    from skybench.tracking.ranks import part_ids

    public = np.isin(truth["id"].to_numpy(), part_ids(t_open, hidden))
    cfg = ChallengeConfig.model_validate({"tracks": {track: {}}, "storage": str(tmp / "store"),
                                          "public_score_digits": 3, "leaderboard_cache_seconds": 0})
    engine = make_engine(cfg.db_url)
    upgrade(engine)
    Session = sessions(engine)
    rng = np.random.default_rng(0)
    t0, n = utcnow(), 0
    with Session() as s:
        teams = {f"team{i}": add_team(s, f"team{i}").team for i in range(args.teams)}
        s.commit()
        for k in range(args.submissions):
            for name, team in teams.items():
                n += 1
                scores = y + rng.normal(0, rng.uniform(0.3, 2.0), y.size)
                folder = tmp / f"p{n}"
                folder.mkdir()
                pd.DataFrame({"id": truth["id"], "score": scores}).to_csv(folder / "predictions.csv", index=False)
                sha = f"{n:064x}"
                auc = float(roc_auc_score(y[public], scores[public]))
                when = t0 + timedelta(seconds=n)
                s.add(Submission(id=f"{n:032x}", team_id=team.id, track=track, name=f"e{k}", sha256=sha,
                                 phase="open", state="finished", received_at=when, queued_at=when, finished_at=when,
                                 metrics={"public_auroc": auc, "private_auroc": auc}))
                tracking.log_evaluation(track, team=name, name=f"e{k}", fmt="csv", status="FINISHED",
                                        metrics={"public_auroc": auc, "private_auroc": auc},
                                        tags={"submission_sha256": sha, "release_sha256": release_sha},
                                        artifacts=[folder / "predictions.csv"],
                                        experiment=tracking.organiser_experiment(track))
        s.commit()

    def timed(fn: Callable[[], object]) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    scores_cfg = cfg.model_copy(update={"open_board": "scores"})
    with Session() as s:
        reference = timed(lambda: phases.live_board(s, scores_cfg, track, "open", fresh=True))
        t = time.perf_counter()
        phases.live_board(s, cfg, track, "open", fresh=True)
        cold = time.perf_counter() - t
        warm = timed(lambda: phases.live_board(s, cfg, track, "open", fresh=True))

        def restarted() -> None:  # a new server process: nothing in memory, the verdicts in the database
            ladder._resamples.cache_clear()
            ladder._open_track.cache_clear()
            ladder._CLIMBS.clear()
            phases.live_board(s, cfg, track, "open", fresh=True)

        restart = timed(restarted)
        sub = s.get(Submission, f"{n:032x}")
        assert sub is not None
        one = timed(lambda: ladder.shown(s, cfg, sub))
    steps = args.teams * (args.submissions - 1)
    print(f"{track}: {args.teams} teams x {args.submissions} submissions, {int(public.sum())} public test objects, "
          f"{t_open.evaluation.rank_resamples} bootstrap resamples")
    print(f"  open board, plain public board (reference):  {reference:8.3f} s")
    print(f"  open board, first ladder ({steps} paired steps): {cold:8.3f} s  ratio {cold / reference:6.2f}"
          f"  ({(cold - reference) / steps * 1e3:.1f} ms per step)")
    print(f"  open board, ladder warm:                     {warm:8.3f} s  ratio {warm / reference:6.2f}")
    print(f"  open board, restarted server (verdicts kept): {restart:8.3f} s  ratio {restart / reference:6.2f}")
    print(f"  one submission's ladder view, warm:          {one * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
