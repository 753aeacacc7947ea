"""The tutorial notebooks: committed without outputs, and each runs on its own at tiny sizes.

Every notebook is executed from a temporary copy with a fresh scratch project (``SKYBENCH_NB_WORK``), so it
must make its own releases and models, as from a fresh checkout; the repository's releases/, results/ and
mlflow.db are never touched. ``make notebooks`` runs them with bigger sizes, outputs kept, for reading.
"""

import re
import resource
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from helpers import bwrap_works, mlflow_store

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Tiny sizes: each notebook should take well under 90 s on 2 CPU cores.
CI_ENV = {"SKYBENCH_NB_SIZE": "64", "SKYBENCH_NB_EPOCHS": "1", "SKYBENCH_NB_BASELINES": ""}
# Where the baselines are trained (make run), evaluate the fastest one next to this notebook's model.
BASELINES = {"03-resnet-pytorch": "resnet"}
TIMEOUT = 600  # per cell; a notebook that needs more than a few minutes at these sizes is broken anyway


def _code(nb: nbformat.NotebookNode) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_the_readme_lists_exactly_the_notebooks_that_exist():
    listed = re.findall(r"\]\(notebooks/([^)/]+\.ipynb)\)", (ROOT / "README.md").read_text())
    assert listed, "README.md links no notebooks/*.ipynb"
    assert sorted(listed) == [p.name for p in NOTEBOOKS], "README's tutorial list and notebooks/ differ"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_from_a_fresh_checkout(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if any(f'"{cmd}"' in _code(nb) for cmd in ("validate", "evaluate")) and not bwrap_works():
        pytest.skip("bubblewrap missing or cannot create namespaces (skybench validate/evaluate need it)")
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    work = tmp_path / "work"
    for key, value in {**CI_ENV, "SKYBENCH_NB_BASELINES": BASELINES.get(path.stem, "")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SKYBENCH_NB_WORK", str(work))
    mlflow_store(work)  # an empty store where the notebook puts its own (a fresh one's migrations take seconds)
    monkeypatch.setenv("SKYBENCH_ROOT", str(ROOT))  # the kernel finds the repository from it

    nb = nbformat.read(copy, as_version=4)
    start, cpu = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    client = NotebookClient(nb, kernel_name="python3", timeout=TIMEOUT, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime  # the kernel and everything it started
    print(f"{path.name}: {time.monotonic() - start:.0f} s wall, {cpu_s:.0f} s CPU")

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert (work / "releases").is_dir(), "the notebook should write its releases into SKYBENCH_NB_WORK"
