"""`make proto-check` fails on a committed gen/ that protos/ no longer generate, and `make
proto-breaking` on a breaking proto change, each run for real in a scratch git repository
holding a copy of the Makefile, protos/ and the package step (no sockets)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent  # the venv running the tests has protoc and buf
FEED = Path("protos/mesh/feed/v1/feed.proto")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def run(repo: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=repo, env={**os.environ, **GIT_ENV}, capture_output=True, text=True)


def make(repo: Path, target: str) -> subprocess.CompletedProcess[str]:
    # A stamp of our own with no prerequisites (no locks, no pyproject.toml): the recipe that
    # installs the venv never runs, so the venv running the tests is only read.
    return run(repo, "make", "--no-print-directory", target, f"VENV={VENV}", f"STAMP={repo}/.deps", "LOCKS=",
               "PROJECT=")


def commit(repo: Path, message: str) -> None:
    assert run(repo, "git", "add", "-A").returncode == 0
    done = run(repo, "git", "commit", "-q", "-m", message)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository whose one commit has protos/ and the gen/ that `make proto` made of them."""
    repo = tmp_path_factory.mktemp("base")
    shutil.copy(ROOT / "Makefile", repo)
    shutil.copy(ROOT / ".gitignore", repo)
    shutil.copytree(ROOT / "protos", repo / "protos")
    (repo / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "init_packages.py", repo / "tools")
    (repo / ".deps").touch()
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + ".deps\n")
    assert run(repo, "git", "init", "-q").returncode == 0
    done = make(repo, "proto")
    assert done.returncode == 0, done.stderr
    commit(repo, "protos and their generated code")
    return repo


@pytest.fixture
def repo(base: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(base, copy, symlinks=True)
    return copy


def edit_feed(repo: Path, old: str, new: str) -> None:
    path = repo / FEED
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


ADD_FIELD = ("  int32 limit = 2;\n", "  int32 limit = 2;\n  // shard limits the page to one shard.\n"
                                      "  int32 shard = 3;\n")


def test_passes_when_committed_gen_is_what_protos_generate(repo: Path) -> None:
    done = make(repo, "proto-check")
    assert done.returncode == 0, done.stderr
    assert "gen/ is what protos/ generate" in done.stdout


def test_fails_when_a_proto_is_committed_without_regenerating(repo: Path) -> None:
    edit_feed(repo, *ADD_FIELD)
    commit(repo, "a new field, gen/ forgotten")
    stale = make(repo, "proto-check")
    assert stale.returncode != 0
    assert "gen/ differs from git" in stale.stderr
    assert "feed_pb2" in stale.stdout  # the --stat names what is stale

    # regenerated and committed: the same check passes
    commit(repo, "regenerated")
    fresh = make(repo, "proto-check")
    assert fresh.returncode == 0, fresh.stderr


def test_fails_when_generated_files_are_not_committed(repo: Path) -> None:
    new = repo / "protos/mesh/feed/v2/feed.proto"
    new.parent.mkdir()
    text = (repo / FEED).read_text().replace("package mesh.feed.v1;", "package mesh.feed.v2;")
    new.write_text(text.replace("Package mesh.feed.v1", "Package mesh.feed.v2"))
    commit(repo, "a new proto package, gen/ forgotten")
    done = make(repo, "proto-check")
    assert done.returncode != 0
    assert "gen/mesh/feed/v2/feed_pb2.py" in done.stderr and "git does not have" in done.stderr


def test_breaking_fails_on_a_deleted_field_and_passes_on_an_added_one(repo: Path) -> None:
    edit_feed(repo, *ADD_FIELD)
    make(repo, "proto")
    commit(repo, "a field added")
    added = make(repo, "proto-breaking")
    assert added.returncode == 0, added.stdout + added.stderr

    edit_feed(repo, "  // shard limits the page to one shard.\n  int32 shard = 3;\n", "")
    make(repo, "proto")
    commit(repo, "the field deleted")
    deleted = make(repo, "proto-breaking")
    assert deleted.returncode != 0
    assert "shard" in deleted.stdout + deleted.stderr


def test_breaking_says_plainly_when_there_is_no_previous_commit(repo: Path) -> None:
    done = make(repo, "proto-breaking")
    assert done.returncode == 2
    assert "NOT CHECKED: no commit HEAD~1" in done.stderr
