"""``challenge.yaml``: what a challenge server enforces (tracks, phases, quotas, storage, limits)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skybench.twins import twin_groups

Phase = Literal["pending", "open", "closed", "final"]
PHASES: tuple[Phase, ...] = ("pending", "open", "closed", "final")


def shown_as_open(phase: str) -> bool:
    """Whether teams see scores as while a track is open (the Ladder or rounded scores, no plots): ``open``, and
    ``pending``, before it or a track an admin paused (``phase set TRACK pending``): what was submitted while
    open must not be shown in full then."""
    return phase in ("pending", "open")


class ConfigError(ValueError):
    """``challenge.yaml`` is invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quota(_Strict):
    per_day: int = Field(5, ge=0)  # counted submissions per team, track and UTC day
    per_phase: int = Field(100, ge=0)  # counted submissions per team and track in one phase


class TrackConfig(_Strict):
    open: bool = True  # accepts submissions at all (a track can be listed but not run)
    # The start of each phase (UTC; a date without a zone is read as UTC). Before `open` the track is pending;
    # a phase left out is never entered by date (``skybench admin phase`` can still move it).
    phases: dict[Literal["open", "closed", "final"], datetime] = Field(default_factory=dict)
    quota: Quota = Quota()
    final_entries: int | None = Field(None, ge=1)  # K for this track; None: the challenge's

    @field_validator("phases")
    @classmethod
    def _ordered(cls, v: dict[str, datetime]) -> dict[str, datetime]:
        v = {k: (t if t.tzinfo else t.replace(tzinfo=timezone.utc)) for k, t in v.items()}
        dates = [v[p] for p in ("open", "closed", "final") if p in v]
        if dates != sorted(dates):
            raise ValueError("phase dates must be in the order open <= closed <= final")
        return v

    def phase_at(self, when: datetime) -> Phase:
        """The phase the dates give at ``when`` (aware)."""
        now: Phase = "pending"
        for p in ("open", "closed", "final"):
            start = self.phases.get(p)
            if start is not None and start <= when:
                now = p
        if not self.phases:
            now = "open"  # no dates: open until an admin closes it
        return now


class UploadLimits(_Strict):
    max_bytes: int = Field(256 * 1024**2, ge=1)  # the uploaded archive
    max_files: int = Field(1000, ge=1)  # files and folders in it
    max_unpacked_bytes: int = Field(1024**3, ge=1)  # sum of the unpacked file sizes
    max_depth: int = Field(16, ge=1)  # folder nesting
    max_in_flight: int = Field(2, ge=1)  # one team's uploads in progress at once (per server process)
    # uploads of one team refused after they were unpacked (a wrong submission.yaml, a bad folder) per UTC hour,
    # all tracks together; then 429 until the hour ends: such refusals cost no quota, but unpacking does cost
    max_refused_per_hour: int = Field(10, ge=1)


class AuthLimits(_Strict):
    max_failures: int = Field(10, ge=1)  # failed token checks per client ...
    window_seconds: int = Field(300, ge=1)  # ... in this many seconds; then 429 until the window passes
    # argon2 checks (~64 MiB and up to ~0.8 s of a core each) running at once in a server process; one more waits
    # up to 2 s for a slot, then is answered 503: a flood of log-ins cannot take every core and thread
    max_hashing: int = Field(4, ge=1)


class ChallengeConfig(_Strict):
    tracks: dict[str, TrackConfig]
    storage: Path = Path("challenge-store")  # relative to the yaml's folder
    database_url: str | None = None  # None: sqlite:///<storage>/skybench.db
    public_score_digits: int | None = Field(None, ge=0, le=12)  # round scores shown while open (at most, default 4)
    # What teams see while a track is open: every public metric of each submission ("scores"), or only the
    # Ladder's score (skybench.server.ladder), which moves only on a real improvement
    open_board: Literal["scores", "ladder"] = "ladder"
    ladder_step: float | None = Field(None, gt=0)  # the Ladder's fixed step; None: the paired bootstrap's sd
    upload: UploadLimits = UploadLimits()
    auth: AuthLimits = AuthLimits()
    # Several hosts (PostgreSQL): each server and worker refuses to start when its clock is this far off the
    # database server's (db.check_clock); they order uploads, leases and evaluations by their own clocks.
    max_clock_skew_seconds: float = Field(2.0, gt=0)
    lease_seconds: int = Field(900, ge=5)  # a job whose worker sent no heartbeat for this long is re-run
    max_attempts: int = Field(3, ge=1)  # claims of one job before it fails for good (a worker dies each time)
    # a job the machine failed (no release, a full disk, MLflow away) waits this long before its next attempt,
    # twice as long after each: the organiser has minutes to mend it, not the milliseconds three claims take
    retry_seconds: float = Field(60, ge=0)
    final_entries: int = Field(1, ge=1)  # K: final entries a team may pick per track when a track closes
    # How often the server and each worker look at the phase dates (a phase that ended is snapshotted at the
    # first tick or leaderboard request after its date).
    tick_seconds: float = Field(10.0, gt=0)
    # On SIGTERM `skybench serve` stops taking connections and waits this long for requests in flight (a
    # stalled upload among them), then cancels them: a cancelled upload is not acknowledged and keeps nothing.
    shutdown_grace_seconds: int = Field(10, ge=1)
    # The leaderboard read from MLflow is reused this long (0: never) unless a worker finished a job since.
    leaderboard_cache_seconds: float = Field(5.0, ge=0)
    # Board reads (the JSON API's and the track pages, no token needed) per client address (an IPv6 /64) per
    # minute; then 429: a flood of them from one address took the server's threads from the teams
    max_board_reads_per_minute: int = Field(120, ge=1)
    project_root: Path | None = None  # where `submissions/<team>/<name>/` goes; None: skybench's project root
    # Evaluate tracks whose release was made with the public test-set key (the demo profile): anyone can make its
    # test labels again from its published manifest (skybench.testkey). Off: workers refuse them; for trials only.
    public_test_sets: bool = False

    @model_validator(mode="after")
    def _known_tracks(self) -> ChallengeConfig:
        from skybench.tracks import list_tracks

        unknown = sorted(set(self.tracks) - set(list_tracks()))
        if unknown:
            raise ValueError(f"unknown track(s) {', '.join(unknown)} (known: {', '.join(list_tracks())})")
        for group in phase_groups(tuple(self.tracks)):
            if len({tuple(sorted(self.tracks[t].phases.items())) for t in group}) > 1:
                raise ValueError(f"tracks {', '.join(group)} share their test objects or real set "
                                 "(and its public-private split), or one evaluates the other's submissions "
                                 "(evaluation.also_from): give them the same phase dates (one in `final` shows "
                                 "every submission's private scores, the other's labels, while the other still "
                                 "takes submissions)")
        return self

    def twins(self, track: str) -> list[str]:
        """``track`` and the tracks of this challenge that move through phases with it (:func:`phase_groups`)."""
        return next((list(g) for g in phase_groups(tuple(self.tracks)) if track in g), [track])

    @property
    def open_digits(self) -> int:
        """Decimals of every score shown while a track is open (boards, the JSON API, a team's submissions, the
        Ladder's score): ``public_score_digits``, at most and by default 4."""
        from skybench.harness.visibility import SHOWN_DECIMALS

        return SHOWN_DECIMALS if self.public_score_digits is None else min(self.public_score_digits, SHOWN_DECIMALS)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.storage / 'skybench.db').resolve()}"

    def track(self, name: str) -> TrackConfig:
        try:
            return self.tracks[name]
        except KeyError:
            raise KeyError(f"track {name!r} is not part of this challenge "
                           f"(tracks: {', '.join(self.tracks)})") from None

    def k(self, track: str) -> int:
        return self.track(track).final_entries or self.final_entries


class _ConfigLoader(yaml.SafeLoader):
    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        """A date PyYAML refuses with a plain ValueError (2027-13-10) is a YAML error at its line."""
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(None, None, f"{node.value!r:.60}: {exc}",
                                                    node.start_mark) from exc


def load_config(path: str | Path) -> ChallengeConfig:
    """Read ``challenge.yaml``; relative paths in it are relative to its folder."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror}); copy challenge.example.yaml and edit it") from exc
    except yaml.YAMLError as exc:  # one line: where, and what (PyYAML's own text spans several)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: YAML syntax error{where}: {' '.join(str(problem).split())}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with at least 'tracks'")
    try:
        cfg = ChallengeConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: key '{'.'.join(map(str, e['loc'])) or '(top level)'}': {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from exc
    base = path.resolve().parent
    update: dict[str, object] = {"storage": base / cfg.storage}
    if cfg.project_root is not None:
        update["project_root"] = base / cfg.project_root
    return cfg.model_copy(update=update)


def phase_groups(tracks: tuple[str, ...]) -> list[tuple[str, ...]]:
    """:func:`~skybench.twins.twin_groups` of ``tracks``, each joined with the tracks linked to it by
    ``evaluation.also_from`` (a closed ``lens-space-injected`` shows the private scores of the ``lens-space``
    submissions it evaluates while ``lens-space`` still takes them): the groups that move through phases together,
    as the git flow's ``twins.check_linked_phases`` asks."""
    from skybench.tracks import load_track

    groups = [set(g) for g in twin_groups(tracks)]
    for name in tracks:
        try:
            sources = load_track(name).evaluation.also_from
        except (ValueError, KeyError, OSError):  # not loadable: _known_tracks says so
            continue
        merged = {name} | {t for t in sources if t in tracks}
        if len(merged) < 2:
            continue
        for g in [g for g in groups if g & merged]:
            groups.remove(g)
            merged |= g
        groups.append(merged)
    return [tuple(t for t in tracks if t in g) for g in groups]
