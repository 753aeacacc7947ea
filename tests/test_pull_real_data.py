"""scripts/pull-real-data.sh against a real DVC remote: one line for each way the remote can fail the project, and
never a data/ folder removed or a corrupt copy accepted."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"
pytestmark = pytest.mark.skipif(not DVC.exists() or shutil.which("git") is None, reason="needs dvc and git")


def _run(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{DVC.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git + DVC project holding data/ (two files and their MANIFEST.sha256) pushed to a local remote."""
    proj = tmp_path / "proj"
    (proj / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "pull-real-data.sh", proj / "scripts")
    data = proj / "data"
    (data / "lenses_hst").mkdir(parents=True)
    files = {"README.md": b"real data\n", "lenses_hst/a.fits": bytes(range(256)) * 8}
    for rel, content in files.items():
        (data / rel).write_bytes(content)
    (data / "MANIFEST.sha256").write_text("".join(f"{hashlib.sha256(c).hexdigest()}  {r}\n"
                                                  for r, c in files.items()))
    for argv in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "remote", "add", "-d", "challenge",
                                                                   str(tmp_path / "remote")],
                 ["dvc", "add", "-q", "data"], ["dvc", "push", "-q"]):
        res = _run(proj, *argv)
        assert res.returncode == 0, res.stdout + res.stderr
    return proj


def _pull(project: Path) -> subprocess.CompletedProcess:
    return _run(project, "bash", "scripts/pull-real-data.sh")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_hash_the_remote_lacks_leaves_data_as_it_was_and_says_so(project: Path) -> None:
    before = _files(project / "data")
    dvc_file = project / "data.dvc"
    text = dvc_file.read_text()
    md5 = text.split("md5: ")[1][:32]
    dvc_file.write_text(text.replace(md5, md5[:-1] + ("0" if md5[-1] != "0" else "1")))  # a wrong hash
    res = _pull(project)
    assert res.returncode == 0, res.stdout + res.stderr  # the pipeline goes on, offline
    assert _files(project / "data") == before  # `dvc pull` removed data/ here
    line = res.stdout.strip()
    assert len(line.splitlines()) == 1 and "does not hold what data.dvc names" in line and "left as it was" in line


def test_an_unreachable_remote_with_no_data_goes_on_with_empty_real_sets(project: Path) -> None:
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    assert _run(project, "dvc", "remote", "modify", "challenge", "url", str(project / "no-remote")).returncode == 0
    res = _pull(project)
    assert res.returncode == 0 and "going on without it" in res.stdout and "(ERROR:" in res.stdout, res.stdout
    assert (project / "data" / "lenses_hst").is_dir() and _files(project / "data") == {}


def test_a_corrupt_copy_on_the_remote_is_refused(project: Path, tmp_path: Path) -> None:
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    content = bytes(range(256)) * 8
    obj = tmp_path / "remote" / "files" / "md5" / (h := hashlib.md5(content).hexdigest())[:2] / h[2:]
    obj.write_bytes(b"garbage")  # DVC does not re-hash what a remote sends
    res = _pull(project)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "does not match data/MANIFEST.sha256" in res.stderr and "lenses_hst/a.fits" in res.stderr, res.stderr


def test_a_good_remote_is_pulled(project: Path) -> None:
    before = _files(project / "data")
    shutil.rmtree(project / "data")
    res = _pull(project)
    assert res.returncode == 0 and "up to date" in res.stdout, res.stdout + res.stderr
    assert _files(project / "data") == before
