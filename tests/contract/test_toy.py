"""The toy task end to end, as a new task goes through skybench: registered, its track validated, its release
simulated, a ``python``-format submission run in the sandbox, scored (simulated test set and real set) and
recorded by ``skybench.harness.evaluate``; and the registry refusing an incomplete task."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import toy
import yaml
from helpers import bwrap_works
from toy.config import ToyTrack
from toy.score import rel_flux_metrics

from skybench.harness.evaluate import evaluate
from skybench.harness.visibility import SHOWN_DECIMALS
from skybench.release.reader import open_release
from skybench.simulate import simulate_release
from skybench.tasks import get_task, register, task_names
from skybench.tasks.base import Task
from skybench.tracks import load_track

PREDICT_NAN = "import numpy as np\ndef load(d): return None\ndef predict(m, b): return np.full(len(b), np.nan)\n"


def _raw() -> dict:
    return yaml.safe_load(toy.TRACK_FILE.read_text())


def _submission(folder: Path, name: str, predict: str | None = None) -> Path:
    """The toy baseline copied to ``folder`` as ``tests/<name>`` (its predict.py replaced by ``predict``)."""
    shutil.copytree(toy.BASELINE, folder)
    spec = yaml.safe_load((folder / "submission.yaml").read_text()) | {"team": "tests", "name": name}
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec))
    if predict is not None:
        (folder / "predict.py").write_text(predict)
    for p in (folder, *folder.iterdir()):  # the sandbox runs as an unprivileged uid
        p.chmod(0o755)
    return folder


def _baseline_predictions(images: np.ndarray) -> np.ndarray:
    spec = importlib.util.spec_from_file_location("toy_baseline", toy.BASELINE / "predict.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.predict(module.load(toy.BASELINE), images)


def test_the_toy_task_is_registered_and_its_track_validated() -> None:
    assert "toy" in task_names()
    assert get_task("toy").track_model is ToyTrack
    track = ToyTrack.model_validate(_raw())
    assert track.population.mag == (17.0, 21.0)
    with pytest.raises(ValueError, match="population"):
        ToyTrack.model_validate(_raw() | {"population": {"mag": [21.0, 17.0], "center_sigma": 0.2}})
    with pytest.raises(ValueError, match="task"):
        ToyTrack.model_validate(_raw() | {"task": "lens"})


def test_load_track_validates_a_registered_task_with_its_track_model() -> None:
    assert type(load_track(toy.TRACK_FILE)) is ToyTrack


def test_a_task_lacking_a_method_is_refused_when_registered() -> None:
    class Incomplete(Task):  # no score_real, no oracle
        name = "incomplete"
        track_model = ToyTrack
        output_kinds = ("point",)

        def simulator(self):
            raise NotImplementedError

        def score(self, *args: object) -> dict[str, float]:
            return {}

    with pytest.raises(TypeError, match="oracle, score_real"):
        register(Incomplete)
    assert "incomplete" not in task_names()

    class Impostor(toy.ToyTask):  # another class under a registered name
        pass

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)
    assert type(get_task("toy")) is toy.ToyTask


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
def test_a_toy_submission_is_run_in_the_sandbox_scored_and_recorded(tmp_path: Path, monkeypatch) -> None:
    # A project of its own: benchmarks/toy.yaml (a submission must name a known track), its releases, submissions.
    project = tmp_path / "project"
    (project / "benchmarks").mkdir(parents=True)
    shutil.copy(toy.TRACK_FILE, project / "benchmarks" / "toy.yaml")
    monkeypatch.setenv("SKYBENCH_ROOT", str(project))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")  # never used: publish=False
    raw = _raw()
    real = simulate_release(ToyTrack.model_validate(raw), project / "releases" / "toy-real", seed=5, size=16,
                            progress=False, workers=1, backend="numpy")
    track = ToyTrack.model_validate(raw | {"evaluation": {**raw["evaluation"], "real_set": "releases/toy-real"}})
    release = simulate_release(track, project / "releases" / "toy", seed=4, size=40, progress=False, workers=1,
                               backend="numpy", real_set=True)
    assert open_release(release).manifest["real_set"]["folded_in"]
    subs = project / "submissions" / "tests"
    good = _submission(subs / "psf-flux", "psf-flux")
    nan = _submission(subs / "nan", "nan", PREDICT_NAN)
    subs.chmod(0o755)

    out = project / "results" / "toy" / "evaluations"
    outcomes = {o.name: o for o in evaluate([good, nan], track, release, out=out, publish=False, force=True)}

    assert outcomes["nan"].status == "FAILED" and "non-finite" in outcomes["nan"].reason
    assert "\n" not in outcomes["nan"].reason
    ok = outcomes["psf-flux"]
    assert ok.status == "FINISHED", ok.reason
    record = json.loads((ok.record / "evaluation.json").read_text())
    # n: the whole stream the model was given (40 simulated and the real set): the simulated count alone would give
    # the real set's size away
    assert record["status"] == "FINISHED" and record["n"] == 40 + open_release(release).manifest["real_set"]["real"]
    # The same metrics as the baseline run here, in this process: on the simulated test set (the same release
    # without the real set folded in) and on the real set.
    plain = simulate_release(ToyTrack.model_validate(raw), tmp_path / "plain", seed=4, size=40, progress=False,
                             workers=1, backend="numpy")
    for rel, prefix in ((plain, ""), (real, "real_")):
        r = open_release(rel)
        ids = r.meta("test")["id"].to_numpy()
        flux = r.hidden("test").truth(ids, ["flux"])["flux"].to_numpy(np.float64)
        expected = rel_flux_metrics(flux, _baseline_predictions(np.asarray(r.images("test"))))
        for k, v in expected.items():
            # the participant record: to SHOWN_DECIMALS while the track is open
            assert record["metrics"][f"{prefix}{k}"] == pytest.approx(v, abs=0.5 * 10**-SHOWN_DECIMALS + 1e-9), k
    assert 0 < record["metrics"]["median_rel_flux_error"] < 0.5  # a real measurement, not the oracle's 0
