"""The task registry and the typed track configuration: a task is checked when it is registered, a track YAML is
validated once into its task's model, and tasks never import one another."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import yaml

import skybench.tasks as registry
from skybench.tasks import BUILTIN, get_task, register, task_names
from skybench.tasks.base import PackageTask, Task
from skybench.tasks.detect.config import DetectLabel, DetectPopulation, DetectTrack
from skybench.tasks.enhance.config import Degradation, EnhancePopulation, EnhanceTrack
from skybench.tasks.generate.config import GenerateScoring, GenerateTrack, MapPopulation
from skybench.tasks.lens.config import LensLabel, LensPopulation, LensTrack
from skybench.tasks.photoz.config import CataloguePopulation, GalaxyPopulation, PhotozTrack
from skybench.tracks import Track, load_track

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "src" / "skybench" / "tasks"


class ToyTrack(Track):
    task: Literal["toy-registry"]
    population: dict[str, float]
    label: dict[str, str]


class _Complete(Task):
    name = "toy-registry"
    track_model = ToyTrack
    output_kinds = ("point",)

    def simulator(self) -> Any:
        return object

    def score(self, track, ids, predictions, truth, out_dir):  # type: ignore[no-untyped-def]
        return {}

    def score_real(self, track, ids, predictions, truth, real_ids, real_predictions, real_truth, out_dir):  # type: ignore[no-untyped-def]
        return {}

    def oracle(self, track, truth, ids):  # type: ignore[no-untyped-def]
        return np.zeros(len(ids))

    def score_resamples(self, track, ids, predictions, truth, indices):  # type: ignore[no-untyped-def]
        return np.zeros(len(indices))


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test are forgotten after it."""
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))


def _yaml_like(track: str, tmp_path: Path, **changes: Any) -> Path:
    raw = yaml.safe_load((ROOT / "benchmarks" / f"{track}.yaml").read_text()) | changes
    path = tmp_path / f"{raw.get('name', 'x')}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# --- registration checks the contract -------------------------------------------------------------------------

def test_a_task_without_a_method_fails_when_registered_naming_it(clean_registry):
    class NoOracle(Task):
        name = "no-oracle"
        track_model = ToyTrack
        output_kinds = ("point",)

        def simulator(self) -> Any:
            return object

        def score(self, track, ids, predictions, truth, out_dir):  # type: ignore[no-untyped-def]
            return {}

        def score_real(self, track, ids, predictions, truth, real_ids, real_predictions, real_truth, out_dir):  # type: ignore[no-untyped-def]
            return {}

    with pytest.raises(TypeError, match="NoOracle does not implement oracle"):
        register(NoOracle)
    assert "no-oracle" not in task_names()


def test_a_task_without_a_class_variable_fails_when_registered_naming_it(clean_registry):
    methods = {k: v for k, v in vars(_Complete).items() if k in ("simulator", "score", "score_real", "oracle",
                                                                  "score_resamples")}
    bare = type("Bare", (Task,), {"name": "bare", "track_model": ToyTrack, **methods})  # no output_kinds
    with pytest.raises(TypeError, match="Bare does not set the class variable 'output_kinds'"):
        register(bare)
    assert "bare" not in task_names()


def test_a_track_model_must_narrow_task_to_the_tasks_name(clean_registry):
    class Loose(_Complete):
        name = "loose"  # its track model says task: Literal["toy-registry"]

    with pytest.raises(TypeError, match=r"Loose: its track_model must declare task: Literal\['loose'\]"):
        register(Loose)

    class Untyped(_Complete):
        track_model = Track  # task: str

    with pytest.raises(TypeError, match="Untyped: its track_model must declare task: Literal"):
        register(Untyped)


def test_two_classes_cannot_claim_one_name(clean_registry):
    register(_Complete)
    register(_Complete)  # the same class again is fine

    class Other(_Complete):
        pass

    with pytest.raises(ValueError, match="already registered by"):
        register(Other)


def test_unknown_task_names_say_which_exist(tmp_path):
    with pytest.raises(KeyError, match="unknown task 'nope'; known tasks: detect, enhance, generate, lens, photoz"):
        get_task("nope")
    with pytest.raises(ValueError) as err:
        load_track(_yaml_like("lens-space", tmp_path, task="nope"))
    msg = str(err.value)
    assert "\n" not in msg and "unknown task 'nope'" in msg
    assert "known tasks: detect, enhance, generate, lens, photoz" in msg


def test_every_builtin_task_is_registered_with_its_own_name():
    for name in BUILTIN:
        task = get_task(name)
        assert task.name == name and task.track_model.model_fields["task"].annotation == Literal[name]


def test_a_package_task_names_its_modules_and_they_hold_the_scorer_functions(clean_registry):
    class Unnamed(PackageTask):
        name = "toy-registry"
        track_model = ToyTrack
        output_kinds = ("point",)
        simulator_path = "skybench.tasks.lens.simulator:LensSimulator"  # no scorer_path

    with pytest.raises(TypeError, match="Unnamed does not set the class variable 'scorer_path'"):
        register(Unnamed)
    for name in BUILTIN:
        task = get_task(name)
        assert isinstance(task, PackageTask)
        assert task.simulator().__name__ == task.simulator_path.rpartition(":")[2]
        scorer = importlib.import_module(task.scorer_path)
        for function in ("score", "score_real", "oracle", "score_resamples"):
            params = list(inspect.signature(getattr(scorer, function)).parameters)
            method = list(inspect.signature(getattr(Task, function)).parameters)[1:]  # without self
            assert params == method, f"{task.scorer_path}.{function}{params} is not Task.{function}{method}"


def test_a_package_task_refuses_another_tasks_track():
    with pytest.raises(TypeError, match="track 'lens-space' is a LensTrack, not a PhotozTrack"):
        get_task("photoz").oracle(load_track("lens-space"), None, np.arange(3))  # type: ignore[arg-type]


# --- load_track: one validation, typed result ------------------------------------------------------------------

@pytest.mark.parametrize(("track", "model", "population", "label"), [
    ("lens-space", LensTrack, LensPopulation, LensLabel),
    ("lens-ground", LensTrack, LensPopulation, LensLabel),
    ("photoz-catalog", PhotozTrack, GalaxyPopulation, None),
    ("photoz-sdss-mgs", PhotozTrack, CataloguePopulation, None),
    ("enhance", EnhanceTrack, EnhancePopulation, Degradation),
    ("wl-maps", GenerateTrack, MapPopulation, GenerateScoring),
    ("lens-tiles", DetectTrack, DetectPopulation, DetectLabel),
])
def test_load_track_returns_the_tasks_typed_model(track, model, population, label):
    t = load_track(track)
    assert type(t) is model and isinstance(t.population, population)
    if label is not None:
        assert isinstance(t.label, label)
    if isinstance(t, LensTrack):
        assert t.population.lens.theta_E[0] < t.population.lens.theta_E[1] and t.label.name == "is_lens"


def test_a_population_is_validated_against_its_own_tasks_model(tmp_path):
    lens_population = yaml.safe_load((ROOT / "benchmarks" / "lens-space.yaml").read_text())["population"]
    with pytest.raises(ValueError, match="invalid track definition"):
        load_track(_yaml_like("photoz-catalog", tmp_path, population=lens_population))
    bad = yaml.safe_load((ROOT / "benchmarks" / "enhance.yaml").read_text())["population"] | {"typo": 1}
    with pytest.raises(ValueError, match="typo"):
        load_track(_yaml_like("enhance", tmp_path, population=bad))
    # one line, "key.path: message", not pydantic's dump with the union's internal validator names
    with pytest.raises(ValueError) as err:
        load_track(_yaml_like("lens-space", tmp_path, cutout={"size": -5, "supersampling": 2}))
    assert "\n" not in str(err.value) and "cutout.size: Input should be greater than 0" in str(err.value)
    assert "tagged-union" not in str(err.value) and "function-after" not in str(err.value)


def test_an_output_kind_the_task_does_not_produce_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="output.kind 'image' is not one of the lens task's score"):
        load_track(_yaml_like("lens-space", tmp_path, output={"kind": "image", "shape": ["N", 1, 101, 101]}))


def test_a_plugin_task_loads_its_own_track_model(clean_registry, tmp_path):
    raw = yaml.safe_load((ROOT / "benchmarks" / "photoz-catalog.yaml").read_text())
    raw |= {"name": "toy", "task": "toy-registry", "population": {"a": 1.0}, "label": {"name": "y"},
            "output": {"kind": "point", "shape": ["N"]}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="unknown task 'toy-registry'"):
        load_track(path)
    register(_Complete)
    track = load_track(path)
    assert type(track) is ToyTrack and track.population == {"a": 1.0}
    assert type(load_track("lens-space")) is LensTrack  # the built-in tasks still load


def test_reading_a_track_imports_neither_the_physics_nor_the_scorers():
    code = ("import sys; from skybench.tracks import load_track; [load_track(t) for t in "
            "('lens-space', 'photoz-images', 'enhance', 'wl-maps', 'lens-tiles')]; "
            "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('torch', 'matplotlib', "
            "'sklearn')} | {m for m in sys.modules if m.startswith(('skybench.physics', 'skybench.tasks.lens.s', "
            "'skybench.tasks.photoz.s', 'skybench.tasks.enhance.s', 'skybench.tasks.lens.metrics', "
            "'skybench.tasks.generate.s', 'skybench.tasks.generate.m', 'skybench.tasks.detect.s', "
            "'skybench.tasks.detect.m'))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "SKYBENCH_ROOT": str(ROOT), "PATH": "/usr/bin"})
    assert out.stdout.strip() == "[]", out.stdout


# --- tasks never import one another -----------------------------------------------------------------------------

def _imported_modules(module: str, source: str) -> set[str]:
    """Absolute names of what the module ``module`` (``pkg.__init__`` for a package) imports, anywhere in
    ``source`` (inside functions too), relative imports resolved."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[:-node.level] + ([base] if base else []))
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


def _cross_task_imports(root: Path) -> list[str]:
    tasks = sorted(p.name for p in root.iterdir() if (p / "__init__.py").is_file())
    problems = []
    for task in tasks:
        for path in sorted((root / task).rglob("*.py")):
            module = ".".join(("skybench", "tasks", *path.relative_to(root).with_suffix("").parts))
            for name in sorted(_imported_modules(module, path.read_text())):
                parts = name.split(".")
                if parts[:2] == ["skybench", "tasks"] and len(parts) > 2 and parts[2] in tasks and parts[2] != task:
                    problems.append(f"{path.relative_to(root)} imports {name}")
    return problems


def test_no_task_imports_another_task():
    assert set(BUILTIN) <= {p.name for p in TASKS.iterdir() if (p / "__init__.py").is_file()}
    problems = _cross_task_imports(TASKS)
    assert not problems, problems


def test_the_import_check_sees_relative_and_nested_imports(tmp_path):
    for task in ("lens", "photoz"):
        (tmp_path / task).mkdir()
        (tmp_path / task / "__init__.py").write_text("")
    assert _cross_task_imports(tmp_path) == []
    (tmp_path / "lens" / "x.py").write_text("def f():\n    from ..photoz import score\n")
    (tmp_path / "lens" / "__init__.py").write_text("from .x import f\nimport skybench.tasks.photoz.metrics\n")
    assert _cross_task_imports(tmp_path) == ["lens/__init__.py imports skybench.tasks.photoz.metrics",
                                             "lens/x.py imports skybench.tasks.photoz",
                                             "lens/x.py imports skybench.tasks.photoz.score"]


# --- every task is complete: the photo-z real-set scorer and the oracles ----------------------------------------

@pytest.fixture(scope="module")
def photoz_release(tmp_path_factory) -> Path:
    from skybench.simulate import simulate_release

    out = tmp_path_factory.mktemp("rel") / "photoz-catalog"
    return simulate_release("photoz-catalog", out, profile="demo", seed=5, size=40, progress=False, workers=1)


def test_photoz_oracle_is_the_redshift_itself(photoz_release):
    from skybench.release.reader import open_release

    track, task = load_track("photoz-catalog"), get_task("photoz")
    assert track.output.kind == "pdf"  # a point estimate is a valid answer of a PDF track
    hidden = open_release(photoz_release).hidden()
    ids = hidden.ids()[::-1]
    z = hidden.truth(ids, ["z"])["z"].to_numpy()
    np.testing.assert_array_equal(task.oracle(track, hidden, ids), z)
    point = track.model_copy(update={"output": track.output.model_copy(update={"kind": "point", "grid": None})})
    np.testing.assert_array_equal(task.oracle(point, hidden, ids), z)


def test_photoz_scores_the_real_set_against_its_spectroscopic_redshifts(photoz_release, tmp_path):
    from skybench.harness.score import score_real
    from skybench.release.reader import open_release
    from skybench.tasks.photoz.metrics import pdf_grid

    track = load_track("photoz-catalog")
    hidden = open_release(photoz_release).hidden()
    ids = hidden.ids()
    z = hidden.truth(ids, ["z"])["z"].to_numpy()
    real_ids, real_z = ids[:25], z[:25]
    m = score_real(track, ids, z, hidden, real_ids, real_z + 0.1 * (1 + real_z), hidden, tmp_path)
    assert m["real_bias_mean"] == pytest.approx(0.1) and m["real_outlier_frac"] == 1.0
    assert m["real_n_objects"] == 25 and m["real_sigma_mad"] == pytest.approx(0.0, abs=1e-12)
    _, edges = pdf_grid(track.output.grid)  # all the probability in the bin holding z
    pdf = np.eye(len(edges) - 1)[np.clip(np.searchsorted(edges, real_z, side="right") - 1, 0, len(edges) - 2)]
    m = score_real(track, ids, z, hidden, real_ids, pdf, hidden, tmp_path)
    assert {"real_pit_ks", "real_crps", "real_cde_loss"} <= set(m) and abs(m["real_bias_mean"]) < 0.01
    assert (tmp_path / "zphot_real.csv").is_file() and (tmp_path / "pit_real.png").is_file()
    assert not (tmp_path / "metrics.json").exists()  # the simulated test set's file is score()'s alone


def test_lens_oracle_scores_perfectly(tiny_space_release, tmp_path):
    from skybench.harness.score import score
    from skybench.release.reader import open_release

    track = load_track("lens-space")
    hidden = open_release(tiny_space_release).hidden()
    ids = hidden.ids()[::-1]
    m = score(track, ids, get_task("lens").oracle(track, hidden, ids), hidden, tmp_path)
    assert m["auroc"] == 1.0 and m["tpr0"] == 1.0 and m["average_precision"] == 1.0


def test_enhance_oracle_is_the_truth_of_each_id(tmp_path):
    from skybench.release.reader import open_release
    from skybench.simulate import simulate_release

    rel = simulate_release("enhance", tmp_path / "enhance", profile="demo", seed=2, size=6, progress=False,
                           workers=1)
    track, hidden = load_track("enhance"), open_release(rel).hidden()
    ids = hidden.ids()[[3, 0, 5]]
    truth = get_task("enhance").oracle(track, hidden, ids)
    order = {int(i): k for k, i in enumerate(hidden.ids())}
    np.testing.assert_array_equal(truth, np.asarray(hidden.array("truth"))[[order[int(i)] for i in ids]])
    m = get_task("enhance").score(track, ids, truth, hidden, tmp_path / "scored")
    assert m["psnr"] == np.inf and m["flux_rel_error"] == 0.0 and m["chi2"] == 0.0
