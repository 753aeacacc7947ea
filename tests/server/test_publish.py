"""``skybench publish-release``: the public part of a release on a (local folder) DVC remote, and nothing else;
a team pulls it into a fresh clone with DVC and opens it with the release reader."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

FINGERPRINT = "f1n9e2p41n7" * 4
REAL = {"path": "releases/lens-real", "folded_in": True, "release_sha256": "ab" * 32, "real": 7}


def _run(cwd: Path, *cmd: str) -> None:
    r = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stdout}\n{r.stderr}"


def _dvc(cwd: Path, *args: str) -> None:
    _run(cwd, sys.executable, "-m", "dvc", *args)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def organiser(tmp_path: Path, tiny_space_release: Path) -> tuple[Path, Path, Path]:
    """(project with a DVC remote 'teams', its release with a private test key and a folded real set, remote)."""
    from skybench.release import layout

    project, remote = tmp_path / "project", tmp_path / "remote"
    project.mkdir()
    remote.mkdir()
    _run(project, "git", "init", "-q")
    _dvc(project, "init", "-q")
    _dvc(project, "remote", "add", "teams", str(remote))
    release = project / "releases" / "lens-space"
    shutil.copytree(tiny_space_release, release)
    manifest = json.loads(layout.manifest_path(release).read_text())
    manifest["test_key"] = {"kind": "private", "fingerprint": FINGERPRINT}
    manifest["real_set"] = REAL
    layout.manifest_path(release).write_text(json.dumps(manifest))
    (project / ".gitignore").write_text("/releases/\n")
    _run(project, "git", "add", "-A")
    _run(project, "git", "commit", "-qm", "organiser project")
    return project, release, remote


@pytest.mark.slow
def test_published_remote_holds_only_the_public_part_and_a_team_can_pull_it(organiser, tmp_path):
    from skybench.cli import app
    from skybench.release import layout
    from skybench.release.reader import open_release
    from skybench.release.verify import verify_release

    project, release, remote = organiser
    r = CliRunner().invoke(app, ["publish-release", "lens-space", "--remote", "teams", "--project", str(project)])
    assert r.exit_code == 0, r.output
    manifest = json.loads(layout.manifest_path(release).read_text())
    hidden_root = layout.hidden_dir(release, "test").parent
    hidden = {e["sha256"] for rel, e in manifest["files"].items() if (release / rel).is_relative_to(hidden_root)}
    assert hidden, "the release has hidden files to keep back"
    labels = manifest["label_columns"]

    stored = [p for p in remote.rglob("*") if p.is_file()]
    assert stored
    for p in stored:
        data = p.read_bytes()
        assert hashlib.sha256(data).hexdigest() not in hidden, f"{p}: a hidden file on the public remote"
        assert FINGERPRINT.encode() not in data and REAL["release_sha256"].encode() not in data
        assert layout.HIDDEN.encode() + b"/" not in data  # no hidden path in a directory listing
        if data[:4] == b"PAR1":
            df = pd.read_parquet(p)
            if set(labels) & set(df.columns):  # the training labels are public; a test object's never
                assert "split" in df and set(df["split"]) <= {"train", "val"}, f"{p}: test labels on the remote"

    # A team: a fresh clone of the organiser's repository, then `dvc pull` from the remote only.
    _run(project, "git", "add", "-A")
    _run(project, "git", "commit", "-qm", "publish lens-space")
    team = tmp_path / "team"
    _run(tmp_path, "git", "clone", "-q", str(project), str(team))
    _dvc(team, "pull", "-r", "teams", "published/lens-space.dvc")
    got = open_release(team / "published" / "lens-space")
    assert verify_release(got.root) == []
    assert not layout.hidden_dir(got.root, "test").exists()
    np.testing.assert_array_equal(np.asarray(got.images("train")), np.asarray(open_release(release).images("train")))
    assert got.labels("train").tolist() == open_release(release).labels("train").tolist()
    assert sum(len(b["images"]) for b in got.public_batches("test", 16)) == manifest["counts"]["test"]
    assert "test_key" not in got.manifest and "real_set" not in got.manifest
    public = {rel for rel in manifest["files"] if not (release / rel).is_relative_to(hidden_root)}
    assert set(got.manifest["files"]) == public


def test_an_unknown_remote_or_a_missing_release_is_refused_with_the_fix(organiser, tmp_path):
    from skybench.server.publish import PublishError, publish

    project, _, remote = organiser
    with pytest.raises(PublishError, match="dvc remote add nowhere"):
        publish("lens-space", "nowhere", project=project)
    with pytest.raises(PublishError, match="no release of 'lens-ground'"):
        publish("lens-ground", "teams", project=project)
    assert not any(remote.iterdir())


def test_the_teams_remote_is_found_beside_a_default_remote(organiser, tmp_path):
    """`dvc remote list` marks the default remote with " (default)" after its URL: the teams remote listed after
    it (the project's own setup: `challenge` is the default) is still found, and the default one is untouched."""
    from skybench.server.publish import PublishError, publish

    project, _, remote = organiser
    other = tmp_path / "challenge-remote"
    other.mkdir()
    _dvc(project, "remote", "add", "-d", "challenge", str(other))
    dvcfile = publish("lens-space", "teams", project=project)
    assert dvcfile.exists() and any(p.is_file() for p in remote.rglob("*"))
    assert not any(other.iterdir())
    with pytest.raises(PublishError, match=r"\(remotes: teams, challenge\)|\(remotes: challenge, teams\)"):
        publish("lens-space", "nowhere", project=project)
