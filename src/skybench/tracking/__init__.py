"""The one MLflow logger of skybench: one run per (submission, release) evaluation.

Conventions:

* the store is ``$MLFLOW_TRACKING_URI`` (read at every call), else ``<project root>/mlflow.db`` (sqlite);
  artifacts of a sqlite store go next to the database, under ``mlartifacts/<experiment>``;
* leaderboard runs live in ``skybench-<track>``, training curves in ``skybench-training-<track>``;
* ``skybench-<track>`` holds what participants may see of each evaluation (:mod:`skybench.harness.visibility`); the
  full record (every metric, per-object tables, full ROC) goes to ``skybench-<track>-organiser``
  (:func:`organiser_experiment`), whose artifacts live apart (``$SKYBENCH_ORGANISER_ARTIFACTS`` or
  ``mlartifacts/skybench-<track>-organiser``). Grant teams read access to ``skybench-<track>`` only (MLflow's
  experiment permissions with ``--app-name basic-auth`` and ``default_permission = NO_PERMISSIONS``: its default,
  READ, opens every experiment without a grant, docs/SCALE.md) and keep the organiser artifact path unreadable to
  them (file permissions or the object store's ACL);
* a run is *complete* when its MLflow status is ``FINISHED``. The submission's outcome is the ``status``
  tag (``FINISHED`` or ``FAILED``, with ``failure_reason``): a failing submission is a complete record too.
  A run whose logging crashed ends ``FAILED``/``KILLED`` (or stays ``RUNNING`` after a hard kill) and is
  ignored by :func:`find_evaluation` and the leaderboard;
* :func:`find_evaluation` returns a complete run of the same (submission, release) and, with ``match``, the
  same further tags (real set, track definition, scorer code, skybench version: a change of any re-scores),
  failed outcomes included: evaluation is deterministic, so an unchanged failing submission is skipped too;
  a fixed resubmission has a new ``submission_sha256`` and is evaluated. Pass ``include_failed=False`` to
  retry. A failure of the machine (tag ``failure_kind`` = ``infrastructure``) is for the caller to retry.
* Under concurrency call :func:`ensure_experiment` once (creates the database and the experiment)
  before starting parallel jobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from skybench.tracks import git_commit, project_root

__all__ = [
    "ensure_experiment",
    "ensure_organiser_experiment",
    "experiment_name",
    "find_evaluation",
    "git_commit",
    "latest_evaluation",
    "log_evaluation",
    "organiser_experiment",
    "tracking_uri",
    "training_experiment",
    "unreachable",
]

KIND_TAG = "skybench.kind"
# MLflow 3's UI opens an experiment on its runs ("Model training") rather than the GenAI traces overview when it
# has this tag (the UI's own setExperimentTag key and ExperimentKind.CUSTOM_MODEL_DEVELOPMENT; skybench.tracking.ui)
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
_MAX_TAG = 5000  # MLflow caps tag values at 8000 characters
MAX_RUN_NAME = 250  # MLflow's runs.name is VARCHAR(250): PostgreSQL refuses a longer name, SQLite keeps it


def run_name(text: str) -> str:
    """``text`` as an MLflow run name: one too long (a team and an entry name of up to 255 characters each) is cut,
    with the sha256 of the whole, so that different names stay different."""
    if len(text) <= MAX_RUN_NAME:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{text[:MAX_RUN_NAME - 35]}...{digest}"


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else an absolute sqlite path under the project root."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    return f"sqlite:///{(project_root() / 'mlflow.db').resolve()}"


def experiment_name(track: str) -> str:
    """Leaderboard experiment of a track."""
    return f"skybench-{track}"


def organiser_experiment(track: str) -> str:
    """Organiser-only experiment of a track: the full evaluation records (see :mod:`skybench.harness.visibility`)."""
    return f"skybench-{track}-organiser"


def training_experiment(track: str) -> str:
    """Training-curve experiment of a track (kept apart from the leaderboard)."""
    return f"skybench-training-{track}"


def client() -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri())


def _artifact_location(uri: str, name: str) -> str | None:
    """For a sqlite file store: ``<db dir>/mlartifacts/<name>``; otherwise the server's default."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.parent / "mlartifacts" / name).resolve().as_uri()


def ensure_experiment(name: str) -> str:
    """Id of experiment ``name``, created if missing (safe if another process creates it meanwhile)."""
    c = client()
    if exp := c.get_experiment_by_name(name):
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=_artifact_location(tracking_uri(), name),
                                   tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except MlflowException:
        if exp := c.get_experiment_by_name(name):  # lost a creation race
            return exp.experiment_id
        raise


def ensure_organiser_experiment(track: str) -> str:
    """Id of :func:`organiser_experiment`, created if missing with its own artifact location:
    ``$SKYBENCH_ORGANISER_ARTIFACTS`` (a URI or path the teams cannot read) if set, else as
    :func:`ensure_experiment`."""
    name = organiser_experiment(track)
    c = client()
    if exp := c.get_experiment_by_name(name):
        return exp.experiment_id
    if not (where := os.environ.get("SKYBENCH_ORGANISER_ARTIFACTS")):
        return ensure_experiment(name)
    location = where if "://" in where else (Path(where) / name).resolve().as_uri()
    try:
        return c.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except MlflowException:
        if exp := c.get_experiment_by_name(name):  # lost a creation race
            return exp.experiment_id
        raise


def _quoted(value: str) -> str:
    if "'" in value or "\\" in value:
        raise ValueError(f"tag value not allowed in an MLflow filter: {value!r}")
    return f"'{value}'"


def find_evaluation(
    track: str, submission_sha256: str, release_sha256: str, *, include_failed: bool = True,
    match: Mapping[str, str] | None = None, experiment: str | None = None, team: str | None = None,
    name: str | None = None, latest_only: bool = False,
) -> Run | None:
    """The latest complete evaluation run of this (submission, release) whose tags also equal ``match``
    (a missing tag counts as "") and, when given, of entry ``team``/``name`` (another team's verbatim copy has the
    same bytes), or None; in ``experiment`` (default: the track's participant experiment). With ``latest_only``
    (needs ``team`` and ``name``), None unless that run is also the entry's latest on the release, whatever its
    submission (a folder set back to an earlier version must be evaluated and logged again)."""
    c = client()
    exp = c.get_experiment_by_name(experiment or experiment_name(track))
    if exp is None:
        return None
    query = (
        f"tags.`{KIND_TAG}` = 'evaluation'"
        f" and tags.submission_sha256 = {_quoted(submission_sha256)}"
        f" and tags.release_sha256 = {_quoted(release_sha256)}"
        " and attributes.status = 'FINISHED'"
    )
    if not include_failed:
        query += " and tags.status = 'FINISHED'"
    runs = c.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1000)
    want = dict(match or {})
    who = {k: v for k, v in (("team", team), ("name", name)) if v is not None}
    run = next((r for r in runs if all(r.data.tags.get(k, "") == v for k, v in want.items())
                and all(r.data.params.get(k) == v for k, v in who.items())), None)
    if run is None or not latest_only:
        return run
    if team is None or name is None:
        raise ValueError("latest_only needs team and name")
    latest = latest_evaluation(track, release_sha256, team, name, experiment=experiment)
    return run if latest is not None and latest.info.run_id == run.info.run_id else None


def latest_evaluation(track: str, release_sha256: str, team: str, name: str, experiment: str | None = None
                      ) -> Run | None:
    """The latest complete evaluation run of entry ``team``/``name`` on this release, whatever its submission
    (the one the leaderboard shows when it finished), or None."""
    c = client()
    exp = c.get_experiment_by_name(experiment or experiment_name(track))
    if exp is None:
        return None
    query = (f"tags.`{KIND_TAG}` = 'evaluation' and tags.release_sha256 = {_quoted(release_sha256)}"
             " and attributes.status = 'FINISHED'")
    if not any(q in team + name for q in "'\\"):  # a FAILED record's folder name may hold any character
        query += f" and params.team = {_quoted(team)} and params.name = {_quoted(name)}"
    token = None
    while True:
        page = c.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"],
                             max_results=1000, page_token=token)
        if run := next((r for r in page if (r.data.params.get("team"), r.data.params.get("name")) == (team, name)),
                       None):
            return run
        if not (token := page.token):
            return None


def _finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


def log_evaluation(
    track: str,
    *,
    team: str,
    name: str,
    fmt: str,
    status: Literal["FINISHED", "FAILED"],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    artifacts: Mapping[str, Path] | Sequence[Path] = (),
    reason: str = "",
    experiment: str | None = None,
    start_time: int | None = None,
) -> str:
    """Log one evaluation as one complete run; return its run id.

    ``experiment``: where to log it, by default :func:`experiment_name` (the participant view). ``start_time``
    (ms since the epoch; default now): the run's, by which an entry's latest run is found.
    ``artifacts``: a list of files/directories logged at the artifact root, or ``{subdir: path}``.
    Order: create (RUNNING) -> params/metrics/tags in one batch -> artifacts -> terminate FINISHED.
    Any exception on the way terminates the run FAILED (KILLED on Ctrl-C) and is re-raised.
    """
    from mlflow.entities import Metric, Param, RunTag

    if status not in ("FINISHED", "FAILED"):
        raise ValueError(f"status must be FINISHED or FAILED, got {status!r}")
    c = client()
    exp_id = ensure_experiment(experiment or experiment_name(track))
    run = c.create_run(exp_id, run_name=run_name(f"{team}/{name}"), tags={KIND_TAG: "evaluation"},
                       start_time=start_time)
    run_id = run.info.run_id
    try:
        all_tags = {
            **{k: str(v) for k, v in tags.items()},
            KIND_TAG: "evaluation",
            "skybench.track": track,
            "status": status,
            "failure_reason": reason[:_MAX_TAG],
        }
        ts = run.info.start_time
        c.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, 0) for k, v in _finite_metrics(metrics).items()],
            params=[Param("team", team), Param("name", name), Param("format", fmt)],
            tags=[RunTag(k, v) for k, v in all_tags.items()],
        )
        items = artifacts.items() if isinstance(artifacts, Mapping) else ((None, p) for p in artifacts)
        for subdir, path in items:
            path = Path(path)
            if path.is_dir():
                c.log_artifacts(run_id, str(path), artifact_path=subdir or None)
            else:
                c.log_artifact(run_id, str(path), artifact_path=subdir or None)
    except BaseException as exc:
        end = RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED
        try:
            c.set_terminated(run_id, RunStatus.to_string(end))
        except Exception:  # store unreachable: the run stays RUNNING, still never FINISHED
            pass
        raise
    c.set_terminated(run_id, "FINISHED")
    drop_duplicates(c, exp_id, all_tags, team=team, name=name)
    return run_id


DEDUP_TAGS = ("submission_sha256", "release_sha256", "real_release_sha256", "track_sha256", "scorer_sha256",
              "skybench_version")


def drop_duplicates(c: MlflowClient, exp_id: str, tags: Mapping[str, str], *, team: str, name: str) -> int:
    """Delete all but one complete run of entry ``team``/``name`` with the same :data:`DEDUP_TAGS` (submission,
    release, real set, track definition, scorer code, skybench version); return how many. Only that entry's: a
    refused verbatim copy of another team's folder has the same bytes, and must never delete that team's run.

    Evaluators racing on one submission may each log a run. The keeper is the latest started (ties: the
    highest run id), the same for every evaluator, so whichever finishes last leaves exactly one run and no
    evaluator ever deletes the keeper (it is the newest in every evaluator's view). Deleted runs are MLflow's
    soft deletes (lifecycle ``deleted``): hidden from searches, recoverable with ``mlflow gc``'s counterpart."""
    if not tags.get("submission_sha256") or not tags.get("release_sha256"):
        return 0
    query = (f"tags.`{KIND_TAG}` = 'evaluation' and attributes.status = 'FINISHED'"
             f" and tags.submission_sha256 = {_quoted(tags['submission_sha256'])}"
             f" and tags.release_sha256 = {_quoted(tags['release_sha256'])}")
    runs = [r for r in c.search_runs([exp_id], query, max_results=1000)
            if all(r.data.tags.get(k, "") == tags.get(k, "") for k in DEDUP_TAGS)
            and (r.data.params.get("team"), r.data.params.get("name")) == (team, name)]
    runs.sort(key=lambda r: (r.info.start_time, r.info.run_id))
    for run in runs[:-1]:
        try:
            c.delete_run(run.info.run_id)
        except MlflowException:  # already deleted by another evaluator
            pass
    return max(len(runs) - 1, 0)


def unreachable(timeout: float = 10.0) -> str:
    """"" when the tracking store answers, else a one-line reason (used to fail fast, before any work)."""
    uri = tracking_uri()
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.split("+", 1)[0]
    if scheme in _DB_PORTS:  # MLflow retries a dead database for minutes
        return _database_unreachable(uri, timeout)
    if scheme == "sqlite":
        return _sqlite_unreadable(uri, timeout)
    file_store = scheme == "file" or (not scheme and uri not in ("databricks", "databricks-uc", "uc"))  # a path
    if file_store and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        return (f"MLflow tracking URI {uri} is a file store, which MLflow no longer serves; give a database "
                "(sqlite:///mlflow.db) or a server (http://...)")
    if not uri.startswith(("http://", "https://")):
        return ""
    import urllib.error
    import urllib.request

    # /health answers without the store (a server whose database is gone says OK there): also one look-up that
    # reads the store, which answers 200 or 404 (no such experiment) when the store serves. Anything else cannot
    # serve this run: 503 for a database gone (MLflow retries that for minutes), 400 for a store that fails
    # otherwise (a corrupt SQLite file), 401/403 without credentials. No MLflow retries and back-off.
    probe = f"{EVALUATION_PROBE}?experiment_name=skybench-reachability-probe"
    for path, fine in (("/health", (200,)), (probe, (200, 404))):
        detail = ""
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}{path}", timeout=timeout) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            with contextlib.suppress(Exception):  # MLflow's {"error_code": ..., "message": ...}, if it is that
                body = json.loads(exc.read(1 << 16))
                detail = f" ({body['error_code']}: {str(body.get('message', '')).splitlines()[0][:200]})"
        except OSError as exc:
            return f"MLflow server {uri} is unreachable ({getattr(exc, 'reason', exc)})"
        if status not in fine:
            return f"MLflow server {uri} answered HTTP {status} on {path.split('?')[0]}{detail}"
    return ""


EVALUATION_PROBE = "/api/2.0/mlflow/experiments/get-by-name"  # reads the tracking store


_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}  # MLflow's database stores (sqlite aside)


def _sqlite_unreadable(uri: str, timeout: float) -> str:
    """"" when a ``sqlite:`` tracking store is new or can be read within ``timeout`` (not held by an exclusive lock,
    not damaged), else a reason naming its file."""
    import sqlite3

    from sqlalchemy.engine import make_url

    try:
        path = make_url(uri).database
    except Exception:  # noqa: BLE001 - a URI SQLAlchemy cannot parse: MLflow will say why
        return ""
    if not path or path == ":memory:" or not Path(path).exists():
        return ""  # MLflow makes it
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"MLflow store {path} cannot be read ({type(exc).__name__}: {exc})"
    return ""


def _database_unreachable(uri: str, timeout: float) -> str:
    """"" when the database server of a ``postgresql://``-like tracking URI takes a TCP connection (and, for
    PostgreSQL, a log-in and ``SELECT 1`` within ``timeout``: a server that takes connections and never answers
    held MLflow for minutes), else a reason (without the URI's password)."""
    import socket

    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception as exc:  # noqa: BLE001 - a URI SQLAlchemy cannot parse: MLflow will say why
        return f"MLflow tracking URI is not a database URL ({type(exc).__name__})"
    if not url.host:  # a local socket: nothing to probe
        return ""
    shown = url.render_as_string(hide_password=True)
    try:
        with socket.create_connection((url.host, url.port or _DB_PORTS[url.get_backend_name()]), timeout=timeout):
            pass
    except OSError as exc:
        return f"MLflow database {shown} is unreachable ({exc.strerror or exc})"
    if url.get_backend_name() != "postgresql":
        return ""
    import threading

    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    said: list[str] = []

    def probe() -> None:
        try:  # libpq's connect_timeout bounds the log-in; the thread's join everything after it (the dialect's
            # first queries, a server that answers the log-in and then nothing)
            engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": max(1, round(timeout))})
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            finally:
                engine.dispose()
            said.append("")
        except (ImportError, TypeError):  # no driver here, or one without connect_timeout: MLflow says what it says
            said.append("")
        except Exception as exc:  # noqa: BLE001 - any failure to log in and read is this one reason
            why = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            said.append(f"MLflow database {shown} does not answer ({type(exc).__name__}: "
                        f"{why[0][:200] if why else ''})")

    worker = threading.Thread(target=probe, daemon=True, name="skybench-db-probe")
    worker.start()
    worker.join(2 * timeout + 1)  # the log-in's own timeout, then as long again for the rest
    return said[0] if said else f"MLflow database {shown} does not answer (no reply within {2 * timeout + 1:g} s)"


