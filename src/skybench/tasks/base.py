"""The contract every science task implements, checked when the task is registered.

A task is one folder ``skybench/tasks/<name>/`` whose ``__init__.py`` defines a :class:`Task` subclass: its typed
track configuration, its simulator, its scorer (simulated and real test sets) and the output kind its
submissions return. Like lenstronomy's ``LensProfileBase`` and scikit-learn's estimator API, the abstract methods
are the whole interface: the harness, the release writer and the CLI call nothing else, and
``tests/contract/`` runs one suite over every registered task (a new task gets those tests for free).
Tasks never import one another; what they share lives in :mod:`skybench.common` and :mod:`skybench.physics`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, get_args, get_origin

import numpy as np

if TYPE_CHECKING:
    from skybench.release.reader import HiddenSplit
    from skybench.testkey import ObjectSeeds
    from skybench.tracks import Track


class Simulator(Protocol):
    """What a task's simulator class provides; built as ``cls(track, backend)``."""

    hidden_arrays: ClassVar[tuple[str, ...]]  # per-object arrays that are answers (never in the published test split)
    label_columns: ClassVar[list[str]]  # metadata columns that are labels (the first is the training target)
    # Optional ``tables``: names of per-split tables of several rows per object (the objects in a detection tile),
    # returned by ``simulate`` as a third element {name: DataFrame}: public for train/val, hidden for test.

    @classmethod
    def arrays(cls, track: Track) -> dict[str, tuple[int, ...]]:
        """Array name -> shape of one object (``images``: (bands, H, W), ...)."""
        ...

    @classmethod
    def release_info(cls, track: Track) -> dict[str, Any]:
        """Extra manifest entries (the degradation, feature names, ...)."""
        ...

    def simulate(self, seeds: ObjectSeeds | int, split: str, start: int, stop: int) -> Any:
        """(arrays, metadata with ``id``[, tables]) for objects ``start..stop`` of ``split``, each from its own
        seed."""
        ...


class Task(ABC):
    """One science case. Subclasses set the class variables and implement the abstract methods."""

    name: ClassVar[str]  # the ``task:`` value of its track YAMLs
    track_model: ClassVar[type[Track]]  # pydantic model of its track YAML (``task: Literal[name]``)
    output_kinds: ClassVar[tuple[str, ...]]  # ``output.kind`` values its tracks may declare
    # False for a generative task: its score compares the distribution of the predictions with the truth's, so
    # predictions shuffled among objects score the same (the contract suite then skips that check)
    paired: ClassVar[bool] = True

    @abstractmethod
    def simulator(self) -> type[Simulator]:
        """The simulator class (imported lazily: scoring never needs the physics)."""

    @abstractmethod
    def score(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
              out_dir: Path | None) -> dict[str, float]:
        """Metrics of ``predictions`` (aligned with ``ids``) against the hidden ``truth``; organiser-only plots
        and tables go to ``out_dir`` (None: the metrics only, no file written; the harness's public and private
        part scorings, whose files nobody keeps)."""

    @abstractmethod
    def score_real(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                   real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
                   out_dir: Path | None) -> dict[str, float]:
        """Metrics on the track's real set, given the simulated test predictions as well (e.g. a threshold);
        ``out_dir`` as in :meth:`score`."""

    @abstractmethod
    def oracle(self, track: Track, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
        """Perfect predictions for ``ids``: what the scorer must rate best (used by the contract tests)."""

    @abstractmethod
    def score_resamples(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                        indices: np.ndarray) -> np.ndarray:
        """The track's primary metric (``track.metrics.primary``, as :meth:`score` computes it) on each resample:
        row ``r`` of ``indices`` (R, m) holds positions into ``ids``/``predictions``, with repeats (a bootstrap
        draw). Returns (R,) float64, NaN where the metric is undefined on a resample. Vectorised where cheap: the
        leaderboard's rank intervals call it with 1,000 resamples for every entry."""

    def interval_metrics(self, track: Track) -> frozenset[str]:
        """Metrics besides the primary that :meth:`score` reports with a 95% interval (``<m>_ci_low`` / ``_ci_high``):
        where ``metrics.report`` lists one, the leaderboard shows its interval with it, as the primary's (default:
        none)."""
        return frozenset()

    def public_artifacts(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                         out_dir: Path) -> None:
        """Label-dependent files participants may see, from the public part ``ids`` only (default: none)."""
        return None

    def stream_artifacts(self, track: Track, ids: np.ndarray, predictions: np.ndarray, inputs: Path,
                         out_dir: Path) -> None:
        """Files participants may see that show the submission's own outputs: drawn from the published test stream
        only (``ids`` and ``predictions`` in its order, before the real set is split off; ``inputs`` its public
        folder), so which objects they show and how they are named depends on nothing hidden (default: none)."""
        return None

    def split_groups(self, track: Track, truth: HiddenSplit) -> np.ndarray | None:
        """A group label per object of ``truth`` (release order) that the public-private split draws its share
        from separately (e.g. a conditional generator's grid point, so each part has maps of every point);
        None (the default): one group."""
        return None

    def fresh_inputs(self, track: Track, test_dir: Path, manifest: dict[str, Any], submission_sha256: str,
                     out: Path) -> tuple[Path, tuple[Path, ...], int] | None:
        """Input folders drawn for one submission, where a set of outputs more regular than independent ones would
        game the score (:mod:`skybench.tasks.generate.fresh`): (every test object, in ``out``; the re-run's
        folders, each run in a sandbox of its own: the objects again, in parts and another order; the batch size
        to run those at), from the release's ``manifest`` (the organiser's) and the submission's digest. None (the
        default): the public test folder as it is."""
        return None

    def check_rerun(self, first: np.ndarray, again: np.ndarray) -> str:
        """"" when the outputs ``again`` of the re-run of :meth:`fresh_inputs` are the first run's ``first``
        (the same objects, in that order), else why not."""
        return ""


class PackageTask(Task):
    """A :class:`Task` whose simulator class and scorer live in modules named by strings and imported on first
    use, so reading a track imports neither the physics nor the plotting. The scorer module defines ``score``,
    ``score_real``, ``oracle``, ``score_resamples`` and optionally ``public_artifacts``, ``stream_artifacts`` and
    ``split_groups``, with
    the signatures of the methods of the same names (``track`` first, checked to be a :attr:`track_model`), and
    optionally ``INTERVAL_METRICS`` (:meth:`interval_metrics`, the same for every track of the task)."""

    simulator_path: ClassVar[str]  # "package.module:Class"
    scorer_path: ClassVar[str]  # "package.module"

    def simulator(self) -> type[Simulator]:
        module, _, name = self.simulator_path.partition(":")
        cls: type[Simulator] = getattr(importlib.import_module(module), name)
        return cls

    def score(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
              out_dir: Path | None) -> dict[str, float]:
        result: dict[str, float] = self._scorer().score(self._own(track), ids, predictions, truth, out_dir)
        return result

    def score_real(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                   real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
                   out_dir: Path | None) -> dict[str, float]:
        result: dict[str, float] = self._scorer().score_real(self._own(track), ids, predictions, truth, real_ids,
                                                             real_predictions, real_truth, out_dir)
        return result

    def oracle(self, track: Track, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self._scorer().oracle(self._own(track), truth, ids))

    def score_resamples(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                        indices: np.ndarray) -> np.ndarray:
        return np.asarray(self._scorer().score_resamples(self._own(track), ids, predictions, truth, indices))

    def interval_metrics(self, track: Track) -> frozenset[str]:
        self._own(track)
        return frozenset(getattr(self._scorer(), "INTERVAL_METRICS", ()))

    def public_artifacts(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                         out_dir: Path) -> None:
        if (write := getattr(self._scorer(), "public_artifacts", None)) is not None:
            write(self._own(track), ids, predictions, truth, out_dir)

    def stream_artifacts(self, track: Track, ids: np.ndarray, predictions: np.ndarray, inputs: Path,
                         out_dir: Path) -> None:
        if (write := getattr(self._scorer(), "stream_artifacts", None)) is not None:
            write(self._own(track), ids, predictions, inputs, out_dir)

    def split_groups(self, track: Track, truth: HiddenSplit) -> np.ndarray | None:
        groups = getattr(self._scorer(), "split_groups", None)
        labels = None if groups is None else groups(self._own(track), truth)
        return None if labels is None else np.asarray(labels)

    def _scorer(self) -> ModuleType:
        return importlib.import_module(self.scorer_path)

    def _own(self, track: Track) -> Any:
        if not isinstance(track, self.track_model):
            raise TypeError(f"track {track.name!r} is a {type(track).__name__}, not a {self.track_model.__name__}")
        return track


def check_task(cls: type[Task]) -> None:
    """Raise TypeError naming what ``cls`` lacks: an abstract method left unimplemented or a class variable."""
    if missing := sorted(getattr(cls, "__abstractmethods__", ())):
        raise TypeError(f"task {cls.__name__} does not implement {', '.join(missing)} (skybench.tasks.base.Task)")
    needed = ("name", "track_model", "output_kinds", *(("simulator_path", "scorer_path")
                                                       if issubclass(cls, PackageTask) else ()))
    for attr in needed:
        if not hasattr(cls, attr):
            raise TypeError(f"task {cls.__name__} does not set the class variable {attr!r}")
    field = cls.track_model.model_fields.get("task")
    if field is None or get_origin(field.annotation) is not Literal or get_args(field.annotation) != (cls.name,):
        # load_track discriminates the registered track models on this literal
        raise TypeError(f"task {cls.__name__}: its track_model must declare task: Literal[{cls.name!r}]")
