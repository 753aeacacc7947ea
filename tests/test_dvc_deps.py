"""dvc.yaml lists exactly the code each stage runs: derived from the imports of its entry point (skybench.stagedeps).

A stage whose deps miss a file its command uses is not re-run when that file changes (a stale baseline reaches
the leaderboard); a stage that lists code it never uses re-runs for nothing (editing bologna.py re-evaluated every
track); a stage of one task's track that depends on another task's code re-runs when that task changes. Stages are
resolved (foreach and matrix expanded, params interpolated) by DVC itself.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from dvc.repo import Repo

from skybench.stagedeps import StageDepsError, is_code_dep, pipeline_files, stage_usage, write_deps

ROOT = Path(__file__).resolve().parents[1]


@functools.cache  # called for every (dep, file) pair of every stage
def _covers(dep: str, path: str) -> bool:
    """A dep covers a path when it is the path or a folder above it."""
    return dep == path or PurePosixPath(path).is_relative_to(dep)


_is_code = is_code_dep  # deps that must be exact: code and track definitions (not data such as releases/)


def dependency_problems(dvc_dir: Path, code_root: Path = ROOT) -> list[str]:
    """One line per stage dependency that is missing or not used, for the pipelines of the DVC project in
    ``dvc_dir``; the code is read from ``code_root``."""
    problems = []
    with Repo(str(dvc_dir)) as repo:
        stages = [s for s in repo.index.stages if s.cmd]
        for stage in stages:
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            deps = [PurePosixPath(d.def_path).as_posix() for d in stage.deps if d.def_path != "params.yaml"]
            outs = [PurePosixPath(o.def_path).as_posix() for o in stage.outs]
            usage = stage_usage(cmd, code_root)
            for path in sorted(usage.files):
                if not any(_covers(d, path) for d in deps):
                    problems.append(f"{stage.name}: its command uses {path}, but dvc.yaml does not list it "
                                    f"(or a folder above it) in the stage's deps; add `- {path}`")
            for arg in sorted(usage.inputs):
                if not any(_covers(d, arg) or _covers(arg, d) for d in deps + outs):
                    problems.append(f"{stage.name}: its command reads {arg} (an argument), but no dep or out "
                                    f"of the stage is it, above it or under it; add `- {arg}` to its deps")
            for dep in deps:
                if not _is_code(dep):
                    continue
                under = [f for f in usage.files if _covers(dep, f)]
                if not under:
                    problems.append(f"{stage.name}: lists {dep} in its deps, but its command never uses it; "
                                    f"remove it")
                elif (code_root / dep).is_dir():
                    unused = sorted(p.relative_to(code_root).as_posix() for p in (code_root / dep).rglob("*.py")
                                    if p.relative_to(code_root).as_posix() not in usage.files)
                    if unused:
                        problems.append(f"{stage.name}: lists the folder {dep}, which holds files its command "
                                        f"never uses ({', '.join(unused)}); list the used files instead")
    return problems


def test_every_stage_depends_on_exactly_the_code_it_runs() -> None:
    problems = dependency_problems(ROOT)
    assert not problems, "dvc.yaml:\n" + "\n".join(problems)


def _in_group(group: str, dep: str, replacement: str | None) -> tuple[str, str]:
    """The (old, new) edit of the dvc.yaml defining the stage group ``group`` that removes ``dep`` from its deps (or
    puts ``replacement`` in its place)."""
    text = next(t for f in pipeline_files(ROOT) if f"\n  {group}:\n" in (t := f.read_text()))
    start = text.index(f"\n  {group}:\n")
    section = text[start:text.index("\n\n  ", start + 1)]
    line = f"\n      - {dep}\n"
    assert line in section, f"dvc.yaml: {group} does not list {dep}"
    return section, section.replace(line, f"\n      - {replacement}\n" if replacement else "\n", 1)


def _copy_pipeline(tmp_path: Path, edit: tuple[str, str] | None = None, file: str | None = None) -> Path:
    """A DVC project in ``tmp_path`` holding this project's dvc.yaml files and params.yaml, with ``edit`` = (old,
    new) applied to the first ``old`` of ``file`` (default: of the first of them that has one)."""
    Repo.init(str(tmp_path), no_scm=True).close()
    files = [ROOT / file] if file else pipeline_files(ROOT)
    edited = next((f for f in files if edit is None or edit[0] in f.read_text()), None)
    assert edit is None or edited is not None, f"{file or 'no dvc.yaml'}: no {edit and edit[0]!r} to edit"
    for f in pipeline_files(ROOT):
        text = f.read_text()
        if edit is not None and f == edited:
            text = text.replace(*edit, 1)
        rel = f.relative_to(ROOT)
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


@pytest.mark.parametrize(("old", "new", "expected"), [
    # a photo-z baseline no longer depends on the shared photo-z training helpers
    ("      - src/skybench/training/photoz.py\n", "",
     "train-photoz@photoz-knn-photoz-catalog: its command uses src/skybench/training/photoz.py"),
    # the Richardson-Lucy baseline copies predict.py into its submission
    ("      - baselines/enhance/${item.baseline}/predict.py  # copied into the submission\n", "",
     "train-enhance-rl@richardson-lucy-enhance: its command uses baselines/enhance/richardson-lucy/predict.py"),
    # a lens baseline does not use the photo-z training helpers
    ("      - src/skybench/training/loop.py\n",
     "      - src/skybench/training/loop.py\n      - src/skybench/training/photoz.py\n",
     "train-lens@knn-lens-space: lists src/skybench/training/photoz.py in its deps, but its command never uses it"),
])
def test_a_removed_dependency_is_reported(tmp_path: Path, old: str, new: str, expected: str) -> None:
    task = expected.split("@")[0].split("-")[1]  # train-photoz@... -> photoz
    problems = dependency_problems(_copy_pipeline(tmp_path, (old, new), f"pipelines/{task}/dvc.yaml"))
    assert any(p.startswith(expected) for p in problems), problems


def test_a_removed_dependency_line_is_reported(tmp_path: Path) -> None:
    """Removed from the photo-z evaluation: every photo-z track's evaluation is reported, and no other stage."""
    edit = _in_group("evaluate-photoz", "src/skybench/tasks/photoz/score.py", None)
    problems = dependency_problems(_copy_pipeline(tmp_path, edit))
    assert {p.split(":")[0] for p in problems} == {f"evaluate-photoz@{t}" for t in
                                                    ("photoz-images", "photoz-catalog", "photoz-sdss-mgs")}, problems
    assert all("src/skybench/tasks/photoz/score.py" in p for p in problems), problems


def test_wholesale_code_dependency_is_reported(tmp_path: Path) -> None:
    """Depending on the whole package makes every stage re-run on any edit (bologna.py re-evaluated every track)."""
    edit = _in_group("evaluate-photoz", "src/skybench/tasks/photoz/score.py", "src/skybench")
    problems = dependency_problems(_copy_pipeline(tmp_path, edit))
    assert any(p.startswith("evaluate-photoz@photoz-catalog: lists the folder src/skybench, which holds files its "
                            "command never uses") and "src/skybench/tasks/lens/bologna.py" in p for p in problems), \
        problems


def test_a_track_uses_only_its_own_task_code() -> None:
    """The registry and the scorer name every task package in strings; a track's stages use only its task's."""
    for cmd, task in (("skybench simulate lens-space --profile demo --seed 1 --out releases/lens-space", "lens"),
                      ("skybench simulate photoz-catalog --profile demo --seed 1 --out releases/x", "photoz"),
                      ("skybench evaluate --track photoz-catalog --release releases/photoz-catalog --out x", "photoz"),
                      ("skybench evaluate --track enhance --release releases/enhance --out x", "enhance")):
        tasks = {PurePosixPath(f).parts[3] for f in stage_usage(cmd, ROOT).files
                 if f.startswith("src/skybench/tasks/") and len(PurePosixPath(f).parts) > 4}
        assert tasks == {task}, (cmd, tasks)


@pytest.mark.slow
def test_write_regenerates_the_code_deps(tmp_path: Path) -> None:
    """`python -m skybench.stagedeps --write` writes back exactly this pipelines/photoz/dvc.yaml (it is up to date),
    and restores a removed dependency and drops an unused one (the rest of the file unchanged)."""
    original = (ROOT / "pipelines/photoz/dvc.yaml").read_text()
    edited = original.replace("      - src/skybench/training/photoz.py\n", "", 1)
    edited = edited.replace("      - src/skybench/training/loop.py\n",
                            "      - src/skybench/training/loop.py\n      - src/skybench/tasks/lens/bologna.py\n", 1)
    assert edited.count("\n") == original.count("\n")
    project = _copy_pipeline(tmp_path, (original, edited), "pipelines/photoz/dvc.yaml")
    assert dependency_problems(project)  # broken before
    written = write_deps(project / "pipelines/photoz/dvc.yaml", ROOT)
    assert (project / "pipelines/photoz/dvc.yaml").read_text() == original
    assert "src/skybench/training/photoz.py" in written["train-photoz"]


def test_write_refuses_a_group_whose_stages_use_different_code(tmp_path: Path) -> None:
    """A matrix mixing a lens and a photo-z track cannot have one list of code deps."""
    project = _copy_pipeline(tmp_path, ("track: ${tracks.lens}", "track: [lens-space, photoz-catalog]"),
                             "pipelines/lens/dvc.yaml")
    with pytest.raises(StageDepsError, match="the stages of evaluate-lens use different code"):
        write_deps(project / "pipelines/lens/dvc.yaml", ROOT)


# --- what `dvc status` marks changed after an edit, in a copy whose dvc.lock records the current code -----------

def _record_current_deps(project: Path) -> None:
    """Write the dvc.lock files as if every stage had just run: the current hash of each dep (outs are absent)."""
    with Repo(str(project)) as repo:
        stages = [s for s in repo.index.stages if s.cmd]
        by_file: dict[str, list] = {}
        for stage in stages:
            stage.save_deps(allow_missing=True)
            by_file.setdefault(stage.path, []).append(stage)
        for group in by_file.values():
            group[0].dvcfile.dump_stages(group, update_pipeline=False)


@pytest.fixture(scope="module")
def locked_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's files that git sees (tracked or not ignored), copied into a fresh DVC project, with a dvc.lock
    of their current hashes: a checkout whose pipeline is up to date as far as code goes."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the project's files")
    copy = tmp_path_factory.mktemp("pipeline")
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(".dvc/") and PurePosixPath(rel).name != "dvc.lock":
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / rel)
    Repo.init(str(copy), no_scm=True).close()
    _record_current_deps(copy)
    return copy


def _changed_after_editing(project: Path, rel: str) -> set[str]:
    """The stages that `dvc status` reports changed because of ``rel`` (a dep that is it or a folder above it), after
    appending a comment to it (undone afterwards)."""
    path = project / rel
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# an edit\n")
        with Repo(str(project)) as repo:
            status = repo.status()
    finally:
        path.write_bytes(original)
    return {name.rpartition(":")[2] for name, entries in status.items()  # "<path>/dvc.yaml:<stage>" from elsewhere
            if any(isinstance(e, dict) and any(_covers(d, rel) for d in e.get("changed deps", {})) for e in entries)}


@pytest.mark.slow
def test_the_copy_starts_up_to_date(locked_copy: Path) -> None:
    with Repo(str(locked_copy)) as repo:
        modified = {name: deps for name, entries in repo.status().items() for e in entries if isinstance(e, dict)
                    for deps in [{d for d, why in e.get("changed deps", {}).items() if why == "modified"}] if deps}
    assert not modified, modified


def _stages(names: set[str], *prefixes: str) -> set[str]:
    return {n for n in names if n.startswith(prefixes)}


@pytest.mark.slow
def test_editing_a_shared_helper_marks_exactly_the_stages_that_use_it(locked_copy: Path) -> None:
    with Repo(str(locked_copy)) as repo:
        names = {s.name for s in repo.index.stages if s.cmd}
    photoz_train = _stages(names, "train-photoz")
    assert len(photoz_train) == 7
    # photo-z training helpers: the photo-z baselines retrain (their evaluate/leaderboard follow from their outputs)
    assert _changed_after_editing(locked_copy, "src/skybench/training/photoz.py") == photoz_train
    # the shared training loop: every baseline, nothing else
    assert _changed_after_editing(locked_copy, "src/skybench/training/loop.py") == _stages(names, "train-")
    # the Bologna importer is no stage's code
    assert _changed_after_editing(locked_copy, "src/skybench/tasks/lens/bologna.py") == set()
    # a task's simulator: its own tracks' releases only (not the other tasks' tracks), and the detect scenes,
    # which draw their lenses with it (get_task("lens")), and the real lens sets (their fluxes are drawn from it)
    assert _changed_after_editing(locked_copy, "src/skybench/tasks/lens/simulator.py") == \
        _stages(names, "simulate-lens@", "simulate-detect@", "import-real-lens")
    # a task's scorer: its evaluations and its leaderboards (their rank intervals: Task.score_resamples)
    assert _changed_after_editing(locked_copy, "src/skybench/tasks/photoz/score.py") == \
        _stages(names, "evaluate-photoz@", "leaderboard-photoz@")
    # a task's metrics: that task's stages (its baselines validate with them), never another task's
    metrics = _changed_after_editing(locked_copy, "src/skybench/tasks/enhance/metrics.py")
    assert metrics and all("enhance" in s for s in metrics), metrics
    assert _stages(names, "evaluate-enhance@", "train-enhance@") <= metrics
    # the leaderboard code: the leaderboards only
    assert _changed_after_editing(locked_copy, "src/skybench/tracking/leaderboard.py") == \
        _stages(names, "leaderboard-") | {"report"}
    # the Richardson-Lucy predictor: its training (it is copied into the submission) and, through the `baselines`
    # folder, every evaluation
    assert _changed_after_editing(locked_copy, "baselines/enhance/richardson-lucy/predict.py") == \
        {"train-enhance-rl@richardson-lucy-enhance"} | _stages(names, "evaluate-")


def test_stage_usage_follows_lazy_string_and_sibling_imports(tmp_path: Path) -> None:
    """On a toy project: what the derivation follows, and that it stops at the project's edge."""
    files = {
        "src/skybench/__init__.py": "",
        "src/skybench/a.py": "import numpy\n\ndef f():\n    from . import b\n    return b\n",
        "src/skybench/b.py": "import importlib\nSIM = 'skybench.sub.c:Sim'\n"
                             "def scorer(task):\n    return importlib.import_module(f'skybench.score_{task}')\n",
        "src/skybench/sub/__init__.py": "",
        "src/skybench/sub/c.py": "from ..tracks import load_track\nT = load_track('fixed-track')\n",
        "src/skybench/tracks.py": "def load_track(name): ...\n",
        "src/skybench/score_x.py": "", "src/skybench/score_y.py": "", "src/skybench/scorer.py": "",
        "src/skybench/unused.py": "",
        "baselines/toy/train.py": "from pathlib import Path\nimport helper\nfrom skybench.a import f\n"
                                  "HERE = Path(__file__).parent\nSRC = HERE / 'predict.py'\n",
        "baselines/toy/helper.py": "", "baselines/toy/predict.py": "from skybench import tracks\n",
        "baselines/toy/notes.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    usage = stage_usage("python baselines/toy/train.py --track toy-track --release releases/toy --out x", tmp_path)
    assert usage.files == {
        "baselines/toy/train.py", "baselines/toy/helper.py", "baselines/toy/predict.py",
        "src/skybench/__init__.py", "src/skybench/a.py", "src/skybench/b.py", "src/skybench/sub/__init__.py",
        "src/skybench/sub/c.py", "src/skybench/tracks.py", "src/skybench/score_x.py", "src/skybench/score_y.py",
        "benchmarks/toy-track.yaml", "benchmarks/fixed-track.yaml"}
    assert usage.inputs == {"releases/toy"}


def test_stage_usage_keeps_only_the_tracks_task_of_string_named_tasks(tmp_path: Path) -> None:
    """Task packages named in strings (a registry, ``f"skybench.tasks.{task}.score"``) count for their own task's
    tracks only; a stage without a track keeps them all; a real import of another task's module always counts."""
    files = {
        "src/skybench/__init__.py": "", "src/skybench/tracks.py": "def load_track(name): ...\n",
        "src/skybench/tasks/__init__.py": "from skybench.tasks import base\n"
                                          "BUILTIN = {'a': 'skybench.tasks.a', 'b': 'skybench.tasks.b'}\n",
        "src/skybench/tasks/base.py": "",
        "src/skybench/tasks/a/__init__.py": "", "src/skybench/tasks/a/score.py": "",
        "src/skybench/tasks/b/__init__.py": "", "src/skybench/tasks/b/score.py": "",
        "src/skybench/tasks/b/units.py": "",
        "src/skybench/score.py": "import importlib\nfrom skybench import tasks, tracks\n"
                                 "from skybench.tasks.b import units\n"
                                 "def scorer(t):\n    return importlib.import_module(f'skybench.tasks.{t}.score')\n",
        "benchmarks/ta.yaml": "name: ta\ntask: a\n",
        "run.py": "from skybench import score\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    common = {"run.py", "src/skybench/__init__.py", "src/skybench/score.py", "src/skybench/tracks.py",
              "src/skybench/tasks/__init__.py", "src/skybench/tasks/base.py", "src/skybench/tasks/b/__init__.py",
              "src/skybench/tasks/b/units.py"}
    assert stage_usage("python run.py --track ta", tmp_path).files == common | {
        "benchmarks/ta.yaml", "src/skybench/tasks/a/__init__.py", "src/skybench/tasks/a/score.py"}
    assert stage_usage("python run.py", tmp_path).files == common | {
        "src/skybench/tasks/a/__init__.py", "src/skybench/tasks/a/score.py", "src/skybench/tasks/b/score.py"}


def test_stage_usage_reads_each_file_once_per_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage of a pipeline reads the same modules and track YAMLs: each is parsed once, and again only after
    it changed (a test that edits a file sees the edit)."""
    import os

    import yaml

    files = {"src/skybench/__init__.py": "", "src/skybench/tracks.py": "def load_track(name): ...\n",
             "src/skybench/tasks/__init__.py": "BUILTIN = {'a': 'skybench.tasks.a', 'b': 'skybench.tasks.b'}\n",
             "src/skybench/tasks/a/__init__.py": "", "src/skybench/tasks/b/__init__.py": "",
             "benchmarks/ta.yaml": "name: ta\ntask: a\n", "run.py": "from skybench import tasks, tracks\n"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    loads: list[str] = []
    safe_load = yaml.safe_load
    monkeypatch.setattr(yaml, "safe_load", lambda text: loads.append(text) or safe_load(text))
    first = stage_usage("python run.py --track ta", tmp_path)
    assert "src/skybench/tasks/a/__init__.py" in first.files and len(loads) == 1
    assert stage_usage("python run.py --track ta --out elsewhere", tmp_path).files == first.files
    assert len(loads) == 1  # not read again
    yml = tmp_path / "benchmarks/ta.yaml"
    yml.write_text("name: ta\ntask: b\n")
    os.utime(yml, ns=(yml.stat().st_atime_ns, yml.stat().st_mtime_ns + 10**9))  # a later version of the file
    edited = stage_usage("python run.py --track ta", tmp_path).files
    assert "src/skybench/tasks/b/__init__.py" in edited and "src/skybench/tasks/a/__init__.py" not in edited


def test_a_task_s_modules_count_for_the_commands_that_run_them() -> None:
    """A task's class names its simulator and scorer modules (``PackageTask``): simulating uses the simulator and
    not the scorer, evaluating the reverse, training neither; the detect simulator draws lens-space's lenses
    (``get_task("lens").simulator()``), so it uses the lens simulator too. Imports under ``if TYPE_CHECKING:`` never
    run: simulating a track does not use the sandbox, whose ``PredictResult`` the release code names in annotations."""
    def files(cmd: str) -> frozenset[str]:
        return stage_usage(cmd, ROOT).files

    simulate = files("skybench simulate lens-space --profile demo --seed 1 --out releases/lens-space")
    evaluate = files("skybench evaluate --track lens-space --release releases/lens-space --out x")
    train = files("python baselines/lens/resnet/train.py --track lens-space --release releases/lens-space --out x")
    detect = files("skybench simulate lens-tiles --profile demo --seed 1 --out releases/lens-tiles")
    sim, scorer = "src/skybench/tasks/lens/simulator.py", "src/skybench/tasks/lens/score.py"
    assert sim in simulate and scorer not in simulate
    assert scorer in evaluate and sim not in evaluate
    assert sim not in train and scorer not in train
    assert sim in detect and scorer not in detect
    assert not {f for f in simulate | detect if f.startswith("src/skybench/harness/")}
    assert "src/skybench/harness/submission.py" in evaluate


def test_the_server_commands_are_not_a_stage_s_code() -> None:
    """cli.py registers the challenge server's commands: a pipeline stage runs only their import-time code."""
    files = stage_usage("skybench evaluate --track enhance --release releases/enhance --out x", ROOT).files
    assert "src/skybench/server/cli.py" in files  # imported by cli.py, so it counts
    assert not {f for f in files if f.startswith("src/skybench/server/")} - {"src/skybench/server/__init__.py",
                                                                            "src/skybench/server/cli.py"}


def test_dvc_reads_yaml_with_the_c_parser() -> None:
    """Every stage of `make run` parses dvc.lock (15,000 lines) with ruamel.yaml; its pure-Python parser took 1.4 s
    a parse, the C one (ruamel.yaml.clib, optional since ruamel.yaml 0.19) 0.5 s."""
    from ruamel.yaml.main import CParser

    assert CParser is not None, "ruamel.yaml.clib is not installed: pip install 'ruamel.yaml.clib'"


def test_dvc_lock_holds_only_the_stages_of_dvc_yaml() -> None:
    """DVC keeps the lock entries of removed or renamed stages, and every stage parses its whole lock twice: 37 stale
    entries were a quarter of its lines. Prune them with `dvc.utils.serialize.modify_yaml`."""
    import yaml

    with Repo(str(ROOT)) as repo:
        names = {(Path(s.path).resolve(), s.name) for s in repo.index.stages if s.cmd}
    for pipeline in pipeline_files(ROOT):
        lock = pipeline.with_name("dvc.lock")
        locked = yaml.safe_load(lock.read_text())["stages"] if lock.is_file() else {}
        stale = sorted(n for n in locked if (pipeline.resolve(), n) not in names)
        assert not stale, f"{lock}: entries of stages that its dvc.yaml no longer has: {', '.join(stale)}"


def test_dvc_never_reads_the_teams_folders(tmp_path):
    """A team's folder is the team's: DVC, in the organiser's process, would follow its symlinks when hashing a
    stage dep (one to /dev/zero never ends) and compile its .dvcignore patterns against every path below (hours).
    No stage depends on submissions/ (the evaluate stages depend on the index-submissions stage's files), and the
    root .dvcignore hides it from DVC's walk."""
    with Repo(str(ROOT)) as repo:
        deps = [f"{s.name}: {d.def_path}" for s in repo.index.stages for d in s.deps
                if PurePosixPath(d.def_path).parts[:1] == ("submissions",)]
    assert deps == []
    project = tmp_path / "project"
    evil = project / "submissions" / "evil"
    (evil / "x").mkdir(parents=True)
    (evil / "x" / "model.onnx").symlink_to("/dev/zero")
    (evil / ".dvcignore").write_text("*a" * 6 + "*b\n")
    (evil / "x" / ("a" * 200)).touch()
    shutil.copy(ROOT / ".dvcignore", project / ".dvcignore")
    (project / "index.json").write_text("{}\n")
    (project / "dvc.yaml").write_text("stages:\n  evaluate:\n    cmd: cp index.json out.json\n"
                                      "    deps: [index.json]\n    outs: [out.json]\n")
    dvc = [str(Path(sys.executable).parent / "dvc")]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=project, check=True, timeout=120)
    shutil.copy(ROOT / ".dvcignore", project / ".dvcignore")  # init writes its own
    for cmd in (["repro", "-q"], ["status"]):
        done = subprocess.run([*dvc, *cmd], cwd=project, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    assert (project / "out.json").read_text() == "{}\n"


def test_the_submissions_index_changes_with_what_evaluate_runs_and_never_follows_a_link(tmp_path, monkeypatch):
    """The evaluate stages' only view of the teams' folders: each folder's sha256 (its files, links by their
    text), the examples left out as the stage leaves them; made without reading any track (no stage before it)."""
    from skybench.harness.evaluate import submissions_index

    root = tmp_path / "project"
    monkeypatch.setenv("SKYBENCH_ROOT", str(root))
    entry = root / "submissions" / "a" / "finder"
    entry.mkdir(parents=True)
    (entry / "submission.yaml").write_text("team: a\nname: finder\n")
    (entry / "model.onnx").symlink_to("/dev/zero")
    (root / "submissions" / "examples" / "lens-space" / "onnx").mkdir(parents=True)
    (root / "submissions" / "examples" / "lens-space" / "onnx" / "submission.yaml").write_text("team: examples\n")
    (root / "submissions" / "a" / "notes").mkdir()  # no submission.yaml: evaluate runs nothing here
    first = submissions_index()
    assert list(first) == ["submissions/a/finder"] and len(first["submissions/a/finder"]) == 64
    (entry / "weights.bin").write_bytes(b"1")
    assert submissions_index()["submissions/a/finder"] != first["submissions/a/finder"]


def test_a_team_folder_that_cannot_be_listed_leaves_the_others_indexed(tmp_path, monkeypatch, capsys):
    """One team's folder that cannot be listed (mode 000 as a non-root organiser: git carries no folder modes, a
    tarball does) raised out of the whole walk, and every evaluate stage (they depend on the index) failed."""
    from skybench.harness import files
    from skybench.harness.evaluate import submissions_index

    root = tmp_path / "project"
    monkeypatch.setenv("SKYBENCH_ROOT", str(root))
    for team in ("a", "b", "c"):
        entry = root / "submissions" / team / "finder"
        entry.mkdir(parents=True)
        (entry / "submission.yaml").write_text(f"team: {team}\nname: finder\n")
    walk = files.iter_entries

    def unlistable_b(top, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(top).name == "b":
            raise files.FolderError(f"{top}: cannot list (Permission denied)")
        return walk(top, *args, **kwargs)

    monkeypatch.setattr(files, "iter_entries", unlistable_b)
    assert list(submissions_index()) == ["submissions/a/finder", "submissions/c/finder"]
    assert "submissions/b left out of the submissions: " in capsys.readouterr().err


def _hidden(path: str) -> bool:
    """Outputs that hold hidden labels or organiser-only results: every release (its hidden/ folder) and
    results/<track>/private."""
    return PurePosixPath(path).parts[:1] == ("releases",) or PurePosixPath(path).name == "private"


def test_no_output_with_hidden_labels_is_ever_pushed() -> None:
    """`dvc push` (no target) sent every release, hidden/ and all, to the `challenge` remote that teams pull data/
    from: a team then pulled the hidden test labels by the lock file's hash. Such outputs are `push: false`."""
    with Repo(str(ROOT)) as repo:
        outs = [(s.addressing, o.def_path, o.can_push) for s in repo.index.stages for o in s.outs]
    hidden = [(stage, path) for stage, path, push in outs if _hidden(path)]
    assert len(hidden) >= 10, hidden  # every simulate and import stage's release, every evaluate stage's private
    assert [(stage, path) for stage, path, push in outs if _hidden(path) and push] == []


def test_dvc_push_leaves_push_false_outputs_behind(tmp_path: Path) -> None:
    """What `push: false` does, with DVC itself: the public output reaches the remote, the hidden one does not."""
    project, remote = tmp_path / "project", tmp_path / "remote"
    project.mkdir()
    (project / "dvc.yaml").write_text(
        "stages:\n  simulate:\n    cmd: mkdir -p releases/t/hidden && echo 0.731 > releases/t/hidden/labels.csv"
        " && echo public > notes.txt\n    outs:\n      - releases/t:\n          push: false\n      - notes.txt\n")
    dvc = [str(Path(sys.executable).parent / "dvc")]
    for cmd in (["init", "--no-scm", "-q"], ["remote", "add", "-d", "r", str(remote)], ["repro", "-q"], ["push"]):
        done = subprocess.run([*dvc, *cmd], cwd=project, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    pushed = [p.read_bytes() for p in remote.rglob("*") if p.is_file()]
    assert b"public\n" in pushed and not any(b"0.731" in b for b in pushed), pushed
