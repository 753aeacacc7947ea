"""scripts/repro.py: `make run`'s `dvc repro`, independent stages at the same time, on a small real DVC project."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import mlflow_store

ROOT = Path(__file__).resolve().parents[1]
# two stages that each wait for the other to have started: they finish only when they run at the same time
RENDEZVOUS = "touch {me}.on; for i in $(seq 600); do [ -e {other}.on ] && break; sleep 0.1; done; " \
             "[ -e {other}.on ] && echo {me} > {me}.txt"
DVC_YAML = {
    "a": {"cmd": RENDEZVOUS.format(me="a", other="b"), "outs": ["a.txt"]},
    "b": {"cmd": RENDEZVOUS.format(me="b", other="a"), "outs": ["b.txt"]},
    "c": {"cmd": "cat a.txt b.txt > c.txt", "deps": ["a.txt", "b.txt"], "outs": ["c.txt"]},
}


def _project(tmp_path: Path, stages: dict[str, dict]) -> tuple[Path, dict[str, str]]:
    import yaml

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": mlflow_store(tmp_path), "SKYBENCH_ROOT": str(tmp_path)}
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, env=env, check=True)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    return tmp_path, env


def _repro(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "repro.py"), *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_independent_stages_run_together_and_dvc_records_them(tmp_path: Path) -> None:
    project, env = _project(tmp_path, DVC_YAML)
    res = _repro(project, env, "--jobs", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (project / "c.txt").read_text() == "a\nb\n"
    assert "3 stages up to date" in res.stdout and "c: ran" in res.stdout
    status = subprocess.run(["dvc", "status"], cwd=project, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout  # dvc.lock names every output
    again = _repro(project, env, "--jobs", "2")
    assert again.returncode == 0 and again.stdout.count(": unchanged") == 3, again.stdout


@pytest.mark.slow
def test_a_failing_stage_stops_what_depends_on_it_and_says_where(tmp_path: Path) -> None:
    stages = {"ok": {"cmd": "echo fine > ok.txt", "outs": ["ok.txt"]},
              "bad": {"cmd": "echo 'no such input: x.fits' >&2; exit 3", "outs": ["bad.txt"]},
              "after": {"cmd": "cp bad.txt after.txt", "deps": ["bad.txt"], "outs": ["after.txt"]}}
    project, env = _project(tmp_path, stages)
    res = _repro(project, env, "--jobs", "2")
    assert res.returncode == 1
    assert "bad: FAILED (exit" in res.stderr and "no such input: x.fits" in res.stderr, res.stderr
    assert "not started: 1 stages downstream" in res.stderr
    assert (project / "ok.txt").read_text() == "fine\n" and not (project / "after.txt").exists()
    assert "ok: ran" in res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("given", [None, "3"])
def test_stages_get_one_thread_unless_told_otherwise(tmp_path: Path, given: str | None) -> None:
    project, env = _project(tmp_path, {"t": {"cmd": "echo $OMP_NUM_THREADS > t.txt", "outs": ["t.txt"]}})
    env.pop("OMP_NUM_THREADS", None)
    if given:
        env["OMP_NUM_THREADS"] = given
    res = _repro(project, env, "--jobs", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (project / "t.txt").read_text().strip() == (given or "1")


@pytest.mark.slow
def test_stages_of_several_pipelines_run_and_each_file_keeps_its_lock(tmp_path: Path) -> None:
    """The project's layout: one dvc.yaml per task under pipelines/ (wdir: the root), and a root stage that depends
    on their outputs; a stage is logged and shown by its name, and each dvc.yaml gets its own dvc.lock."""
    import yaml

    project, env = _project(tmp_path, {"report": {"cmd": "cat results/x.txt results/y.txt > report.txt",
                                                  "deps": ["results"], "outs": ["report.txt"]}})
    for task in ("x", "y"):
        (project / "pipelines" / task).mkdir(parents=True)
        (project / "pipelines" / task / "dvc.yaml").write_text(yaml.safe_dump({"stages": {f"make-{task}": {
            "wdir": "../..", "cmd": f"mkdir -p results && echo {task} > results/{task}.txt",
            "outs": [f"results/{task}.txt"]}}}))
    res = _repro(project, env, "--jobs", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "make-x: ran" in res.stdout and "report: ran" in res.stdout, res.stdout
    assert (project / "report.txt").read_text() == "x\ny\n"
    assert (project / "logs" / "repro" / "make-y.log").is_file()
    for task in ("x", "y"):
        assert set(yaml.safe_load((project / "pipelines" / task / "dvc.lock").read_text())["stages"]) == \
            {f"make-{task}"}
    assert set(yaml.safe_load((project / "dvc.lock").read_text())["stages"]) == {"report"}
    (project / "pipelines" / "y" / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make-x": {
        "wdir": "../..", "cmd": "echo again > other.txt", "outs": ["other.txt"]}}}))
    clash = _repro(project, env, "--jobs", "2")
    assert clash.returncode == 1 and "define a stage of the same name" in clash.stderr, clash.stderr
