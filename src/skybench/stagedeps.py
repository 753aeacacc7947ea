"""The project files a pipeline stage's command uses, derived from the imports of its entry point (``ast``).

    python -m skybench.stagedeps "skybench evaluate --track enhance --release releases/enhance ..."

prints them, one a line; ``python -m skybench.stagedeps --write`` rewrites the code deps of every stage group of
``dvc.yaml`` and ``pipelines/*/dvc.yaml`` (:func:`pipeline_files`) from them (:func:`write_deps`);
``tests/test_dvc_deps.py`` checks every stage against them.
Entry points:

* ``skybench <command> ...``: the module-level code of ``skybench/cli.py`` (and its imports), plus the body of the
  command's function and of the cli.py helpers it calls (cli.py imports lazily inside commands);
* ``python <script>.py ...`` (``baselines/<name>/train.py``): the whole script.

From there, transitively within the project: every ``skybench`` module imported anywhere in a used module (lazy
imports included; importing ``a.b`` runs ``a/__init__.py`` too), modules named in strings
(``"skybench.tasks.lens.simulator:LensSimulator"``, ``f"skybench.tasks.{task}.score"`` -> that module of every task
package, ``python -m skybench.harness.runner`` argv), tasks taken from the registry by a constant name
(``get_task("lens")`` in the detect simulator: that task's package, whatever the stage's task), a script's sibling
modules (its folder is on ``sys.path``), and sibling files a module names as ``"<file>.py"`` (``HERE / "predict.py"``,
loaded or copied into a submission).
Granularity is the module: a used module counts whole, whatever part of it runs. A command for a track
(``--track``, or the CLI's ``track`` argument) of task T uses, of the task packages named in strings (the registry,
the scorer dispatch), only ``tasks/T``: the code picks the track's task at run time. Real imports always count;
imports under ``if TYPE_CHECKING:`` never run and do not. A task class's ``simulator_path`` and ``scorer_path``
(:class:`skybench.tasks.base.PackageTask`) count only for the commands that call the methods loading them
(:data:`TASK_METHODS_RUN_BY`).

Data files: ``load_track`` reads ``benchmarks/<track>.yaml`` for the command's ``track`` argument (CLI: parsed by
typer, defaults included; scripts: ``--track``) and for constant ``load_track("<name>")`` calls, and (a task's
simulator) the tracks its track's YAML names in a ``track:`` field (lens-tiles draws lens-space's lenses); the paths
given as arguments (``--release``, ``--data``, ...) are reported as ``inputs``. Not derived: ``params.yaml`` (DVC's
``params:``), ``list_tracks()`` (globs the track names only), the git history (``submission_time``) and
``secrets/`` (the organiser's key, not in git).

Kept in the package (not scripts/) so that the tests import it and ruff and the type checker see it; no stage imports
it, so it is in no stage's dependencies.
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

PACKAGE = "skybench"
TASKS = "tasks"  # skybench/tasks/<task>/: one package per science task
_MODULE_STRING = re.compile(rf"^{PACKAGE}(\.\w+)+(:\w+)?$")


@dataclass(frozen=True)
class Usage:
    """What a stage's command uses, as paths relative to the project root (posix)."""

    files: frozenset[str]  # project files its code runs or reads (modules, sibling files, track YAMLs)
    inputs: frozenset[str]  # paths given as arguments (files or folders; may be outputs of the stage itself)


class StageDepsError(ValueError):
    """The command is not an entry point this module understands."""


class _Project:
    def __init__(self, root: Path, task: str | None = None, command: str | None = None) -> None:
        self.root = root.resolve()
        self.src = self.root / "src"
        self.task = task  # the stage's task: modules of other tasks named in strings are not its code
        self.command = command  # the skybench command a stage runs (None: a script)

    def other_task(self, dotted: str) -> bool:
        """``dotted`` is in the package of a task other than the stage's (``skybench.tasks.photoz.score`` for a
        lens stage); False when the stage has no task."""
        parts = dotted.split(".")
        return (self.task is not None and parts[:2] == [PACKAGE, TASKS] and len(parts) > 2 and parts[2] != self.task
                and (self.src.joinpath(PACKAGE, TASKS, parts[2]) / "__init__.py").is_file())

    def module_files(self, dotted: str) -> list[Path]:
        """The files importing ``dotted`` runs: each package's ``__init__.py`` on the way, then the module."""
        parts, out = dotted.split("."), []
        for i in range(1, len(parts) + 1):
            base = self.src.joinpath(*parts[:i])
            if (base / "__init__.py").is_file():
                out.append(base / "__init__.py")
            elif i == len(parts) and base.with_suffix(".py").is_file():
                out.append(base.with_suffix(".py"))
            else:
                return out if i == len(parts) and out else []
        return out

    def is_module(self, dotted: str) -> bool:
        base = self.src.joinpath(*dotted.split("."))
        return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()

    def modules_with_prefix(self, prefix: str) -> list[str]:
        """Dotted names of the package's modules starting with ``prefix`` (``skybench.score_``)."""
        pkg, _, stem = prefix.rpartition(".")
        folder = self.src.joinpath(*pkg.split("."))
        return sorted(f"{pkg}.{p.stem if p.suffix else p.name}" for p in folder.glob(f"{stem}*")
                      if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file())

    def package_of(self, path: Path) -> str | None:
        """``skybench.physics`` for src/skybench/physics/render.py; None for a file outside the package."""
        if not path.is_relative_to(self.src / PACKAGE):
            return None
        return ".".join(path.parent.relative_to(self.src).parts)


def _imports(project: _Project, path: Path, nodes: Iterable[ast.AST]) -> Iterator[Path]:
    """Project files that ``nodes`` (parts of the file ``path``) import or name."""
    package = project.package_of(path)
    for node in nodes:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue  # a relative import in a script fails at run time
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                full = ".".join([*base, *([node.module] if node.module else [])])
            else:
                full = node.module or ""
            names = [full, *(f"{full}.{a.name}" for a in node.names if project.is_module(f"{full}.{a.name}"))]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_STRING.match(node.value):
                # another task's module counts when named inside that task's package (reached by get_task)
                names = [n for n in [node.value.split(":")[0]]
                         if not project.other_task(n) or n.split(".")[:3] == (package or "").split(".")[:3]]
            elif node.value.endswith(".py") and "/" not in node.value and (path.parent / node.value).is_file():
                yield path.parent / node.value  # a sibling loaded or copied by name (HERE / "predict.py")
        elif isinstance(node, ast.JoinedStr) and node.values:
            names = [n for n in _formatted_modules(project, node) if not project.other_task(n)]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
              and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) == "get_task"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [f"{PACKAGE}.{TASKS}.{node.args[0].value}"]  # get_task("lens"): a task used by name, any stage
        for name in names:
            top = name.split(".")[0]
            if top == PACKAGE:
                yield from project.module_files(name)
            elif package is None and (path.parent / f"{top}.py").is_file():
                yield path.parent / f"{top}.py"  # a script's folder is sys.path[0]


def _formatted_modules(project: _Project, node: ast.JoinedStr) -> list[str]:
    """The project modules an f-string such as ``f"skybench.tasks.{task}"`` or ``f"skybench.tasks.{task}.score"``
    can name: every module with the constant prefix, followed by the constant suffix when there is one."""
    first, values = node.values[0], node.values
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)
            and first.value.startswith(f"{PACKAGE}.") and len(values) > 1):
        return []
    last = values[2] if len(values) == 3 else None
    suffix = last.value if isinstance(last, ast.Constant) and isinstance(last.value, str) else ""
    modules = project.modules_with_prefix(first.value)
    if suffix and re.fullmatch(r"(\.\w+)+", suffix):
        return [m + suffix for m in modules if project.is_module(m + suffix)]
    return modules


@functools.cache
def _parsed(path: Path, mtime_ns: int) -> ast.Module:
    return ast.parse(path.read_bytes(), str(path))


def _parse(path: Path) -> ast.Module:
    """The file's syntax tree, parsed once per version of the file."""
    return _parsed(path, path.stat().st_mtime_ns)


@functools.cache
def _loaded_yaml(path: Path, mtime_ns: int) -> object:
    return yaml.safe_load(path.read_text())


def _load_yaml(path: Path) -> object:
    """The YAML file's content, read once per version of the file (shared: do not modify it)."""
    return _loaded_yaml(path, path.stat().st_mtime_ns)


# The methods of a task's class (skybench/tasks/<task>/__init__.py) that each command calls. They import the
# modules its class variables name (skybench.tasks.base.PackageTask: the simulator's physics, the scorer), so
# those count only for these commands; every other stage uses a task's class for its track model only (load_track).
TASK_METHODS_RUN_BY = {"simulate": frozenset({"simulator"}),
                       "evaluate": frozenset({"score", "score_real", "oracle", "public_artifacts"}),
                       "leaderboard": frozenset({"score_resamples"}),  # rank intervals (tracking/ranks.py)
                       "compare": frozenset({"score_resamples"})}
_MODULE_ATTRS = {"simulator_path": frozenset({"simulator"}),
                 "scorer_path": frozenset({"score", "score_real", "oracle", "public_artifacts", "score_resamples"})}


@functools.cache
def _file_imports(root: Path, task: str | None, command: str | None, path: Path, mtime_ns: int) -> tuple[Path, ...]:
    project = _Project(root, task, command)
    nodes = _candidates(path, mtime_ns)
    if path.name == "__init__.py" and path.parent.parent == project.src / PACKAGE / TASKS:
        run = TASK_METHODS_RUN_BY.get(command or "", frozenset())
        skipped = [a for c in _parsed(path, mtime_ns).body if isinstance(c, ast.ClassDef) for a in c.body
                   if isinstance(a, ast.Assign) and len(a.targets) == 1 and isinstance(a.targets[0], ast.Name)
                   and a.targets[0].id in _MODULE_ATTRS and not _MODULE_ATTRS[a.targets[0].id] & run]
        skip = {id(n) for s in skipped for n in ast.walk(s)}
        nodes = tuple(n for n in nodes if id(n) not in skip)
    return tuple(_imports(project, path, nodes))


@functools.cache
def _candidates(path: Path, mtime_ns: int) -> tuple[ast.AST, ...]:
    """The file's nodes that :func:`_imports` looks at, in ``ast.walk`` order, outside ``if TYPE_CHECKING:``
    blocks: walked once per version of the file, whatever the stage."""
    tree = _parsed(path, mtime_ns)
    skip = {id(n) for c in tree.body if _type_checking_only(c) for n in ast.walk(c)}
    return tuple(n for n in ast.walk(tree)
                 if isinstance(n, ast.Import | ast.ImportFrom | ast.Constant | ast.JoinedStr | ast.Call)
                 and id(n) not in skip)


def _closure(project: _Project, start: Iterable[Path], analysed: Iterable[Path] = ()) -> set[Path]:
    """``start`` and the project files they use, transitively; ``analysed`` files count but are not parsed again."""
    seen: set[Path] = set(analysed)
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.suffix == ".py":
            todo += _file_imports(project.root, project.task, project.command, path, path.stat().st_mtime_ns)
    return seen


# Modules cli.py imports only to register more commands (the challenge server's): for a stage running another
# command, only their import-time code runs, not their commands' bodies.
COMMAND_PLUGINS = ("server/cli.py",)


def _type_checking_only(node: ast.stmt) -> bool:
    """``if TYPE_CHECKING:`` (imports for annotations, never run)."""
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" \
        and not node.orelse


def _module_level(tree: ast.Module) -> list[ast.AST]:
    """The nodes that run when the module is imported (a decorator's arguments too, but not a function's body)."""
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    top: list[ast.AST] = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                          and not _type_checking_only(n)]
    for fn in defs:
        top += [*fn.decorator_list, *(d for d in fn.args.defaults + fn.args.kw_defaults if d is not None)]
    return [sub for n in top for sub in ast.walk(n)]


def _cli_entry(project: _Project, command: str) -> set[Path]:
    """What cli.py's module-level code and ``command``'s function (with the cli.py helpers it calls) import."""
    cli = project.src / PACKAGE / "cli.py"
    tree = _parse(cli)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    if command not in functions:
        raise StageDepsError(f"{cli}: no function {command!r} for the command")
    nodes = _module_level(tree)  # runs for every command
    todo, done = [command], set()
    while todo:  # the command's function and the module-level cli.py functions it calls, transitively
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        body = list(ast.walk(functions[name]))
        nodes += body
        todo += [n.id for n in body if isinstance(n, ast.Name) and n.id in functions]
    return set(_imports(project, cli, nodes))


@functools.cache
def _load_track_constants(path: Path, mtime_ns: int) -> frozenset[str]:
    """The names in the file's ``load_track("<name>")`` calls."""
    out = set()
    for node in ast.walk(_parsed(path, mtime_ns)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute) \
                and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) == "load_track" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            out.add(node.args[0].value)
    return frozenset(out)


def _track_yamls(project: _Project, files: Iterable[Path], track: object) -> set[Path]:
    """The track YAMLs ``load_track`` reads: the command's ``track``, and constant ``load_track("<name>")`` calls."""
    files = list(files)
    if project.src / PACKAGE / "tracks.py" not in files:
        return set()
    names = {track} if isinstance(track, str) else set()
    for path in files:
        if path.suffix == ".py":
            names |= _load_track_constants(path, path.stat().st_mtime_ns)
    for name in [n for n in names if isinstance(n, str) and not Path(n).suffix]:
        task = track_task(project.root, name)
        if task and project.src / PACKAGE / TASKS / task / "simulator.py" in files:
            names |= _named_tracks(project.root, name)
    return {project.root / ("" if Path(n).suffix else "benchmarks") / (n if Path(n).suffix else f"{n}.yaml")
            for n in names}


def _named_tracks(root: Path, name: str) -> set[str]:
    """The tracks that ``benchmarks/<name>.yaml`` names in a ``track:`` field (lens-tiles: population.lenses.track,
    whose population its simulator draws), transitively."""
    found: set[str] = set()
    todo = [name]
    while todo:
        path = root / "benchmarks" / f"{todo.pop()}.yaml"
        nodes: list[object] = [_load_yaml(path) if path.is_file() else None]
        while nodes:
            node = nodes.pop()
            if isinstance(node, dict):
                for key, value in node.items():
                    if (key == "track" and isinstance(value, str) and value not in found and value != name
                            and (root / "benchmarks" / f"{value}.yaml").is_file()):
                        found.add(value)
                        todo.append(value)
                    else:
                        nodes.append(value)
            elif isinstance(node, list):
                nodes.extend(node)
    return found


@functools.cache
def _cli_group() -> object:
    """skybench's click group, built once (typer builds it from the signatures of every command)."""
    import typer.main

    from skybench.cli import app

    return typer.main.get_command(app)


def _cli_arguments(command: str, args: list[str]) -> tuple[str, dict[str, object]]:
    """(the Python function's name, the parsed parameters with defaults) of ``skybench <command> <args>``."""
    cmd = getattr(_cli_group(), "commands", {}).get(command)
    if cmd is None or cmd.callback is None:
        raise StageDepsError(f"skybench has no command {command!r}")
    ctx = cmd.make_context(command, list(args), resilient_parsing=True)
    return cmd.callback.__name__, dict(ctx.params)


def track_task(root: Path | str, track: object) -> str | None:
    """The ``task`` of ``benchmarks/<track>.yaml`` (None when there is no such track)."""
    if not isinstance(track, str) or Path(track).suffix:
        return None
    path = Path(root) / "benchmarks" / f"{track}.yaml"
    if not path.is_file():
        return None
    data = _load_yaml(path)
    task = data.get("task") if isinstance(data, dict) else None
    return task if isinstance(task, str) else None


def stage_usage(cmd: str, root: Path | str) -> Usage:
    """The project files the stage command ``cmd`` uses, run from the project ``root``.

    A command for a track of task T (``--track``, or the CLI's ``track`` argument) uses, of the task packages that
    the registry and the scorers name in strings, only ``tasks/T``."""
    argv = shlex.split(cmd)
    if argv[:1] == [PACKAGE] or argv[:3] in (["python", "-m", PACKAGE], [sys.executable, "-m", PACKAGE]):
        rest = argv[1:] if argv[0] == PACKAGE else argv[3:]
        if not rest:
            raise StageDepsError(f"{cmd!r}: no skybench command")
        function, params = _cli_arguments(rest[0], rest[1:])
        track = params.get("track")
        project = _Project(Path(root), track_task(root, track), command=function)
        start, analysed = _cli_entry(project, function), {project.src / PACKAGE / "cli.py"}
        for plugin in (project.src / PACKAGE / p for p in COMMAND_PLUGINS):
            if plugin in start:  # not this command's module: only its import-time code runs
                analysed.add(plugin)
                start |= set(_imports(project, plugin, _module_level(_parse(plugin))))
        if argv[0] != PACKAGE:  # python -m skybench runs __main__.py, which imports cli
            start.add(project.src / PACKAGE / "__main__.py")
        inputs = {str(v) for v in params.values() if isinstance(v, Path)}
    elif argv[:1] in (["python"], ["python3"]) and len(argv) > 1 and argv[1].endswith(".py"):
        opts = _options(argv[2:])
        track = opts.get("track")
        project = _Project(Path(root), track_task(root, track))
        script = project.root / argv[1]
        if not script.is_file():
            raise StageDepsError(f"{cmd!r}: no script {script}")
        start, analysed = {script}, set()
        inputs = {v for k, v in opts.items() if k in ("release", "data") and v}
    else:
        raise StageDepsError(f"{cmd!r}: not `skybench <command> ...` nor `python <script>.py ...`")
    files = _closure(project, start, analysed)
    files |= _track_yamls(project, files, track)
    rel = frozenset(p.relative_to(project.root).as_posix() for p in files)
    return Usage(files=rel, inputs=frozenset(Path(i).as_posix() for i in inputs))


def _options(args: list[str]) -> dict[str, str]:
    """``--name value`` and ``--name=value`` pairs of a script's argv."""
    out: dict[str, str] = {}
    for i, a in enumerate(args):
        if a.startswith("--"):
            key, eq, value = a[2:].partition("=")
            out[key.replace("-", "_")] = value if eq else (args[i + 1] if i + 1 < len(args) else "")
    return out


def is_code_dep(dep: str) -> bool:
    """Deps that must be exact: code and track definitions (not data folders such as releases/ or submissions/)."""
    return dep.startswith(("src/", "benchmarks/")) or dep.endswith(".py")


def _compact(root: Path, files: set[str]) -> list[str]:
    """``files`` sorted, a folder of the package standing for its files when it has several and all are used."""
    folders = sorted({PurePosixPath(f).parent for f in files if f.startswith(f"src/{PACKAGE}/")},
                     key=lambda d: (len(d.parts), d))
    covered: set[PurePosixPath] = set()
    for folder in folders:
        if len(folder.parts) < 3 or any(folder.is_relative_to(c) for c in covered):
            continue
        inside = {p.relative_to(root).as_posix() for p in (root / folder).rglob("*.py")}
        if len(inside) > 1 and inside <= files:
            covered.add(folder)
    out = [f for f in files if not any(PurePosixPath(f).is_relative_to(c) for c in covered)]
    return sorted(out + [c.as_posix() for c in covered])


def pipeline_files(root: Path) -> list[Path]:
    """The project's dvc.yaml files: its own (the ``report`` stage) and one per task, ``pipelines/<task>/dvc.yaml``."""
    return [root / "dvc.yaml", *sorted((root / "pipelines").glob("*/dvc.yaml"))]


def write_deps(dvc_yaml: Path | str, code_root: Path | str | None = None) -> dict[str, list[str]]:
    """Rewrite the code deps of every stage group of ``dvc_yaml`` (the project's, or a ``pipelines/<task>/dvc.yaml``)
    from what its commands use (the project's code read from ``code_root``, by default the DVC project's root, which
    is every stage's ``wdir``); return them.

    Per group (a plain stage, or the stages of a ``foreach``/``matrix``): the literal deps that are code
    (:func:`is_code_dep`) are replaced by the files its stages use that no other dep covers (the ``${...}`` ones,
    data); those must be the same for every stage of the group, else the group is refused (give the differing files a
    ``${item...}`` dep, or split the group)."""
    from dvc.repo import Repo
    from ruamel.yaml import YAML

    dvc_yaml = Path(dvc_yaml).resolve()
    groups: dict[str, list[tuple[str, list[str]]]] = {}
    with Repo(str(dvc_yaml.parent)) as repo:
        root = Path(code_root or repo.root_dir).resolve()
        for stage in repo.index.stages:
            if stage.cmd and Path(stage.path).resolve() == dvc_yaml:
                cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
                deps = [PurePosixPath(d.def_path).as_posix() for d in stage.deps if d.def_path != "params.yaml"]
                groups.setdefault(stage.name.split("@")[0], []).append((cmd, deps))
    yml = YAML()
    yml.preserve_quotes = True
    yml.width = 4096
    yml.indent(mapping=2, sequence=4, offset=2)
    data = yml.load(dvc_yaml)
    written = {}
    for group, members in groups.items():
        entry = data["stages"][group]
        body = entry["do"] if "foreach" in entry else entry
        seq = body["deps"]
        literal = [d for d in seq if isinstance(d, str) and "${" not in d and is_code_dep(d)]
        needs = []
        for cmd, deps in members:
            kept = [d for d in deps if d not in literal]
            used = stage_usage(cmd, root).files
            needs.append({f for f in used if not any(f == k or PurePosixPath(f).is_relative_to(k) for k in kept)})
        if any(n != needs[0] for n in needs):
            differ = sorted(set[str]().union(*needs) - needs[0].intersection(*needs[1:]))
            raise StageDepsError(f"{dvc_yaml}: the stages of {group} use different code ({', '.join(differ)}); "
                                 "give those files a ${item...} dep or split the group")
        new = _compact(root, needs[0])
        at = next((i for i, d in enumerate(seq) if d in literal), len(seq))
        for i in reversed([i for i, d in enumerate(seq) if d in literal]):
            del seq[i]
        for k, dep in enumerate(new):
            seq.insert(at + k, dep)
        written[group] = new
    yml.dump(data, dvc_yaml)
    return written


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a helper for writing dvc.yaml
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--write":
        for path in argv[1:] or pipeline_files(Path.cwd()):
            for group, deps in write_deps(Path(path)).items():
                print(f"{path}: {group}: {len(deps)} code deps")
        return
    if len(argv) != 1:
        sys.exit('usage: python -m skybench.stagedeps "<stage command>"  |  python -m skybench.stagedeps --write '
                 '[DVC_YAML ...] (default: dvc.yaml pipelines/*/dvc.yaml)')
    usage = stage_usage(argv[0], Path.cwd())
    print("\n".join(sorted(usage.files)))
    print("\n".join(f"# input: {i}" for i in sorted(usage.inputs)))


if __name__ == "__main__":  # pragma: no cover
    main()
