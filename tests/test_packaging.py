"""`pip install skybench` (no extras) must be enough to read releases and validate a submission's schema.

Checked without installing anything: pyproject's core dependencies (and what they install in turn) against
the imports that run when the core modules are imported, followed with ``ast`` through the package.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# what a team uses with the core install: the CLI (its app object), reading releases, validating a submission
CORE_MODULES = ("skybench", "skybench.__main__", "skybench.cli", "skybench.release.reader", "skybench.release",
                "skybench.release.writer", "skybench.tracks", "skybench.harness.submission")
RUNTIME_EXTRAS = ("sim", "eval", "tf", "torch", "ray", "server")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _requirements(extra: str | None = None) -> list[Requirement]:
    project = PYPROJECT["project"]
    reqs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def _expanded(extra: str) -> set[str]:
    """Distribution names an extra installs directly, following ``skybench[...]`` self-references."""
    out: set[str] = set()
    for req in _requirements(extra):
        if _norm(req.name) == "skybench":
            for sub in req.extras:
                out |= _expanded(sub)
        else:
            out.add(_norm(req.name))
    return out


def _closure(names: set[str]) -> set[str]:
    """``names`` and every distribution they require in turn (without extras), as installed here."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_norm(req.name))
    return seen


def _module_path(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _import_time_imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for each import that runs when ``module`` is imported: not inside a
    function or lambda, not under ``if TYPE_CHECKING:``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            found.extend((node.lineno, f"{name}.{alias.name}") for alias in node.names
                         if name.partition(".")[0] == "skybench" and _module_path(f"{name}.{alias.name}"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def import_time_third_party(roots: tuple[str, ...]) -> list[tuple[str, int, str, list[str]]]:
    """(module, line, imported name, chain from a root) for every non-stdlib, non-skybench import that
    runs when the ``roots`` are imported, following skybench's own imports transitively."""
    out: list[tuple[str, int, str, list[str]]] = []
    chains: dict[str, list[str]] = {}
    todo = [(root, [root]) for root in roots]
    while todo:
        module, chain = todo.pop()
        if module in chains:
            continue
        chains[module] = chain
        path = _module_path(module)
        assert path is not None, f"{module} (imported via {' -> '.join(chain)}) is not a file under {SRC}"
        for line, name in _import_time_imports(module, path):
            top = name.partition(".")[0]
            if top == "skybench":
                parts = name.split(".")  # importing a.b.c imports a and a.b first
                todo.extend((".".join(parts[:i]), [*chain, ".".join(parts[:i])]) for i in range(1, len(parts) + 1)
                            if _module_path(".".join(parts[:i])))
            elif top not in sys.stdlib_module_names and top != "__future__":
                out.append((module, line, name, chain))
    return out


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return md.packages_distributions()  # scans every installed distribution: seconds


def _distributions_of(top: str) -> list[str]:
    return [_norm(d) for d in _packages_distributions().get(top, [])]


def test_core_modules_import_only_core_dependencies() -> None:
    core = _closure({_norm(r.name) for r in _requirements()})
    offences = []
    for module, line, name, chain in import_time_third_party(CORE_MODULES):
        dists = _distributions_of(name.partition(".")[0])
        if not set(dists) & core:
            via = f" (imported via {' -> '.join(chain)})" if len(chain) > 1 else ""
            offences.append(f"src/{module.replace('.', '/')}.py:{line}: `{name}` from {dists or 'no installed'} "
                            f"distribution, not a core dependency{via}")
    assert not offences, ("core modules import an extra at import time; move the import into the function "
                          "that uses it, or make the distribution a core dependency:\n" + "\n".join(offences))


def test_the_walk_sees_imports() -> None:
    """The check above cannot pass by seeing nothing: it finds the imports we know are there."""
    found = {(module, name.partition(".")[0]) for module, _, name, _ in import_time_third_party(CORE_MODULES)}
    assert {("skybench.release.reader", "numpy"), ("skybench.release.writer", "pyarrow"), ("skybench.tracks", "yaml"),
            ("skybench.cli", "typer")} <= found
    every = import_time_third_party(("skybench.tasks.lens.metrics",))  # not core: scikit-learn's average precision
    assert any(name.startswith("sklearn") for _, _, name, _ in every)


def test_every_import_in_the_package_is_installed_by_core_or_all() -> None:
    """No dependency was dropped when they moved into extras: every third-party module the package imports
    anywhere (lazy imports included) comes with `pip install skybench[all]`."""
    installed = _closure({_norm(r.name) for r in _requirements()} | _expanded("all"))
    missing = []
    for path in sorted((SRC / "skybench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or top == "skybench":
                    continue
                if not set(_distributions_of(top)) & installed:
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not missing, "imported but in neither the core dependencies nor [all]:\n" + "\n".join(missing)


def test_all_extra_holds_every_runtime_extra() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(RUNTIME_EXTRAS) | {"all", "dev", "gpu"} == set(extras), f"extras are {sorted(extras)}"
    everything = _expanded("all")
    for extra in RUNTIME_EXTRAS:
        assert _expanded(extra) <= everything, f"[{extra}] has {_expanded(extra) - everything} missing from [all]"
    torch = [r for r in _requirements("torch") if _norm(r.name) == "torch"]
    assert [str(r.specifier) for r in torch] == ["==2.13.0"], "the [torch] extra pins torch==2.13.0"


def test_gpu_extra_pins_the_cuda_builds_of_the_locked_runtimes() -> None:
    """[gpu] (perf/gpu_check.sh) is outside [all] and the lock, and pins the CUDA builds at the lock's versions
    (onnxruntime-gpu may lag the CPU build by one minor release, as long as none is published)."""
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    locked = {m[0]: m[1] for m in re.findall(r"^([a-z0-9_.-]+)==([^ \\+]+)", lock, flags=re.M)}
    pins = {_norm(r.name): (str(r.specifier), r.extras) for r in _requirements("gpu")}
    assert set(pins) == {"onnxruntime-gpu", "tensorflow"}, pins
    assert pins["tensorflow"] == (f"=={locked['tensorflow']}", {"and-cuda"}), pins["tensorflow"]
    spec, _ = pins["onnxruntime-gpu"]
    want = [int(v) for v in locked["onnxruntime"].split(".")[:2]]
    got = [int(v) for v in spec.removeprefix("==").split(".")[:2]]
    assert spec.startswith("==") and got[0] == want[0] and want[1] - 1 <= got[1] <= want[1], (spec, want)
    assert "onnxruntime-gpu" not in lock and "and-cuda" not in lock, "the CPU lock must not hold the [gpu] extra"
    assert "onnxruntime-gpu" not in _expanded("all")


def test_makefile_installs_all_and_dev() -> None:
    # make setup installs requirements/lock.txt, which `make lock` compiles from '.[all,dev]' (that the lock holds
    # every requirement of those extras: tests/test_reproducible.py)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"PIP_INSTALL := .*-m pip install", makefile)
    assert "$(PIP_INSTALL) --require-hashes -r $(LOCK)" in makefile, "the Makefile must install the lock"
    assert re.search(r"uv pip compile pyproject.toml --extra all --extra dev .*\n.*\n.*-o \$\(LOCK\)", makefile), \
        "make lock must compile the lock from '.[all,dev]'"


def _run_core_only(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a Python that cannot import any module of a distribution outside the core install."""
    core = _closure({_norm(r.name) for r in _requirements()})
    blocked = sorted(top for top, dists in _packages_distributions().items()
                     if not {_norm(d) for d in dists} & (core | {"skybench"}) and top.isidentifier())
    blocker = textwrap.dedent(f"""
        import sys
        BLOCKED = set({blocked!r})
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (not in the core install)", name=name)
        sys.meta_path.insert(0, Block())
    """)
    return subprocess.run([sys.executable, "-c", blocker + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=110, env={**os.environ, "PYTHONPATH": str(SRC), "SKYBENCH_ROOT": str(ROOT)})


@pytest.mark.timeout(120)
def test_core_modules_import_with_the_extras_hidden() -> None:
    """The same, at run time: import the core modules and print the CLI's help without the extras."""
    done = _run_core_only(f"""
        import importlib
        for module in {CORE_MODULES[:1] + CORE_MODULES[2:]!r}:
            importlib.import_module(module)
        from skybench.cli import app
        try:
            app(["--help"], prog_name="skybench")
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        print("IMPORTED")
    """)
    assert done.returncode == 0 and "IMPORTED" in done.stdout, done.stderr[-3000:]
    assert "validate" in done.stdout


EXAMPLE = ROOT / "submissions" / "examples" / "lens-space" / "onnx"


@pytest.mark.timeout(120)
def test_validate_without_the_eval_extra_checks_the_schema_and_says_what_to_install(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "submission.yaml").write_text("team: x\n")  # no track, no format
    code = """
        import sys
        from skybench.cli import app
        try:
            app(["validate", sys.argv[1]], prog_name="skybench")
        except SystemExit as exc:
            print("EXIT", exc.code)
    """
    good = _run_core_only(code.replace("sys.argv[1]", repr(str(EXAMPLE))))
    assert "EXIT 1" in good.stdout, good.stderr[-3000:]
    assert "the schema is valid" in good.stderr and "pip install 'skybench[eval]'" in good.stderr, good.stderr
    bad = _run_core_only(code.replace("sys.argv[1]", repr(str(broken))))
    assert "EXIT 1" in bad.stdout and "skybench[eval]" not in bad.stderr, bad.stderr  # the schema error itself


@pytest.mark.timeout(120)
def test_runner_names_the_extra_of_a_missing_framework(tmp_path: Path) -> None:
    done = _run_core_only(f"""
        from skybench.harness.runner import main
        print("EXIT", main(["--submission", {str(EXAMPLE)!r}, "--inputs", {str(tmp_path)!r},
                            "--out", {str(tmp_path / "p.npy")!r}]))
    """)
    assert "EXIT 1" in done.stdout, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("runner: ModuleNotFoundError") and "pip install 'skybench[eval]'" in last, last
