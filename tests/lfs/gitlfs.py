"""Driving the real `git` + `git lfs` client in an isolated environment, against a real Arkor.

Every test gets its own HOME and GIT_CONFIG_GLOBAL under tmp_path, so the user's git config and
credentials are never read or touched; credentials come from a `store` credential helper whose
file lives in that HOME, or from the URL.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.object.cluster import start_allinone as start_object_allinone
from tests.procs import ArkorProcess

GIT_TIMEOUT = 600.0

USERS = [
    {"name": "alice", "accessKey": "alice-key", "secretKey": "alice-secret-0001",
     "read": ["*"], "write": ["team/*"]},
    {"name": "bob", "accessKey": "bob-key", "secretKey": "bob-secret-0002",
     "read": ["*"], "write": ["team/*"]},
    {"name": "carol", "accessKey": "carol-key", "secretKey": "carol-secret-0003",
     "read": ["team/*"], "write": []},
    {"name": "dave", "accessKey": "dave-key", "secretKey": "dave-secret-0004",
     "read": [], "write": ["team/*"], "admin": True},
]


def require_git_lfs() -> None:
    if shutil.which("git") is None or shutil.which("git-lfs") is None:
        import pytest

        pytest.fail("git and git-lfs are required (make test installs git-lfs)")


def start_allinone(directory: Path, *, prod: bool) -> ArkorProcess:
    """A real `arkor allinone` on free ports, its data and logs under `directory`; prod: Basic auth
    with USERS and a cluster secret, dev: anonymous loopback."""
    if not prod:
        return start_object_allinone(directory)
    return start_object_allinone(
        directory, run={"runMode": "prod"}, cluster={"secret": "lfs-test-cluster-secret-0123456789"},
        auth={"anonymousLoopback": False, "users": USERS},
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class GitEnv:
    """git with a private HOME; `run` raises with the output when a command fails."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            key: value for key, value in os.environ.items()
            if not key.startswith(("GIT_", "XDG_CONFIG"))
        }
        self.env.update({
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
        })
        for key, value in (
            ("user.name", "LFS Test"),
            ("user.email", "lfs@example.invalid"),
            ("init.defaultBranch", "main"),
            ("credential.helper", f"store --file={home / 'git-credentials'}"),
        ):
            self.run("config", "--global", key, value, cwd=home)
        self.run("lfs", "install", "--skip-repo", cwd=home)

    def run(self, *args: str, cwd: Path, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["git", *args], cwd=cwd, env={**self.env, **(env or {})}, capture_output=True,
            text=True, timeout=GIT_TIMEOUT,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"git {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def store_credentials(self, url: str, user: str, password: str) -> None:
        """Put credentials where the `store` helper finds them (scheme://user:pass@host)."""
        scheme, rest = url.split("://", 1)
        host = rest.split("/", 1)[0]
        with open(self.home / "git-credentials", "a") as handle:
            handle.write(f"{scheme}://{user}:{password}@{host}\n")

    def new_repo(self, path: Path, lfs_url: str, patterns: tuple[str, ...] = ("*.bin",)) -> Path:
        """A working repo with a bare `origin` beside it, `.lfsconfig` naming the LFS server and
        `patterns` tracked by LFS (committed)."""
        origin = path.parent / (path.name + "-origin.git")
        self.run("init", "--bare", str(origin), cwd=path.parent)
        self.run("init", str(path), cwd=path.parent)
        self.run("remote", "add", "origin", str(origin), cwd=path)
        self.run("config", "-f", ".lfsconfig", "lfs.url", lfs_url, cwd=path)
        self.run("lfs", "track", *patterns, cwd=path)
        self.run("add", ".gitattributes", ".lfsconfig", cwd=path)
        self.run("commit", "-q", "-m", "track LFS files", cwd=path)
        return origin
