"""The stock `git lfs` client against a real `arkor allinone`: push, clone, pull, fsck, locks, auth."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from tests.lfs.gitlfs import USERS, GitEnv, sha256_file
from tests.procs import ArkorProcess, PeakRss, require_free_disk

MiB = 1024 * 1024
GiB = 1024 * MiB
POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        left = size
        while left:
            step = min(left, 4 * MiB)
            handle.write(os.urandom(step))
            left -= step


def _repo_with_one_commit(git: GitEnv, work: Path, lfs_url: str, name: str) -> Path:
    """A new repository at `work` with one committed 1 KiB LFS file `name`, not pushed yet."""
    git.new_repo(work, lfs_url)
    _write(work / name, 1024)
    git.run("add", ".", cwd=work)
    git.run("commit", "-q", "-m", name, cwd=work)
    return work


def _stored(server: ArkorProcess, prefix: str) -> dict[str, float]:
    """Server side view through the v1 API: key -> last_modified of the repo's LFS objects."""
    out: dict[str, float | str] = {}
    marker = ""
    while True:
        response = httpx.get(f"{server.url}/v1/git-lfs", params={"prefix": prefix, "marker": marker},
                             timeout=60)
        assert response.status_code == 200, response.text
        page = response.json()
        for obj in page["objects"]:
            out[obj["key"]] = obj.get("last_modified") or obj.get("modified")
        if not page["truncated"]:
            return out
        marker = page["next_marker"]


def test_push_clone_pull_fsck_and_nothing_to_reupload(dev_server: ArkorProcess, tmp_path: Path) -> None:
    git = GitEnv(tmp_path / "home")
    work = tmp_path / "work"
    origin = git.new_repo(work, f"{dev_server.url}/team/game.git/info/lfs")
    files = {"tiny.bin": 1024, "one-mib.bin": MiB, "fragments.bin": 20 * MiB + 123}
    files.update({f"small/{i:03d}.bin": 4096 for i in range(150)})
    for name, size in files.items():
        _write(work / name, size)
    digests = {name: sha256_file(work / name) for name in files}
    git.run("add", ".", cwd=work)
    git.run("commit", "-q", "-m", "assets", cwd=work)
    pushed = git.run("push", "origin", "main", cwd=work, env={"GIT_CURL_VERBOSE": "1"})
    assert len(re.findall(r"> PUT /team/game\.git/info/lfs/objects/", pushed.stderr)) == 153
    stored = _stored(dev_server, "team/game/")
    assert set(stored) == {f"team/game/{digest}" for digest in digests.values()}

    # A second push of the same objects uploads nothing: every object gets no upload action.
    again = git.run("lfs", "push", "--all", "origin", cwd=work, env={"GIT_CURL_VERBOSE": "1"})
    assert "/objects/batch" in again.stderr and "> PUT " not in again.stderr, again.stderr
    assert _stored(dev_server, "team/game/") == stored

    # Clone with smudge: every file comes back byte for byte.
    clone = tmp_path / "clone"
    git.run("clone", "-q", str(origin), str(clone), cwd=tmp_path)
    for name, digest in digests.items():
        assert sha256_file(clone / name) == digest, name
    fsck = git.run("lfs", "fsck", cwd=clone)
    assert "Git LFS fsck OK" in fsck.stdout

    # Clone without smudge (pointers only), then `git lfs pull`.
    lazy = tmp_path / "lazy"
    git.run("clone", "-q", str(origin), str(lazy), cwd=tmp_path, env={"GIT_LFS_SKIP_SMUDGE": "1"})
    assert (lazy / "tiny.bin").read_bytes().startswith(POINTER_PREFIX)
    git.run("lfs", "pull", cwd=lazy)
    for name, digest in digests.items():
        assert sha256_file(lazy / name) == digest, name
    assert "Git LFS fsck OK" in git.run("lfs", "fsck", cwd=lazy).stdout


@pytest.mark.slow
def test_one_gib_push_and_pull_with_bounded_server_memory(
    dev_server: ArkorProcess, tmp_path: Path
) -> None:
    require_free_disk(tmp_path, 3 + 3 + 1)  # three replicas; work tree, LFS cache, clone; headroom
    git = GitEnv(tmp_path / "home")
    work = tmp_path / "work"
    origin = git.new_repo(work, f"{dev_server.url}/team/big.git/info/lfs")
    big = work / "big.bin"
    with open(big, "wb") as handle:  # sparse, with random bytes at both ends and in the middle
        handle.truncate(GiB)
        for offset in (0, GiB // 2, GiB - MiB):
            handle.seek(offset)
            handle.write(os.urandom(MiB))
    digest = sha256_file(big)
    git.run("add", "big.bin", cwd=work)
    git.run("commit", "-q", "-m", "1 GiB", cwd=work)
    with PeakRss(dev_server.pid or 0) as push_rss:
        git.run("push", "origin", "main", cwd=work)
    assert f"team/big/{digest}" in _stored(dev_server, "team/big/")

    clone = tmp_path / "clone"
    git.run("clone", "-q", str(origin), str(clone), cwd=tmp_path, env={"GIT_LFS_SKIP_SMUDGE": "1"})
    with PeakRss(dev_server.pid or 0) as pull_rss:
        git.run("lfs", "pull", cwd=clone)
    assert sha256_file(clone / "big.bin") == digest
    # Streaming end to end: the server holds a few fragments per transfer, never the object.
    limit = 400 * MiB
    print(f"1 GiB: server peak RSS push {push_rss.peak / MiB:.0f} MiB, pull {pull_rss.peak / MiB:.0f} MiB")
    assert push_rss.peak < limit, f"push peak RSS {push_rss.peak / MiB:.0f} MiB"
    assert pull_rss.peak < limit, f"pull peak RSS {pull_rss.peak / MiB:.0f} MiB"


def _user(name: str) -> dict[str, str]:
    return next(u for u in USERS if u["name"] == name)


def _git_as(tmp_path: Path, server: ArkorProcess, name: str) -> GitEnv:
    git = GitEnv(tmp_path / f"home-{name}")
    user = _user(name)
    git.store_credentials(server.url, user["accessKey"], user["secretKey"])
    return git


def test_locks_and_push_with_locksverify(prod_server: ArkorProcess, tmp_path: Path) -> None:
    url = f"{prod_server.url}/team/locks.git/info/lfs"
    alice = _git_as(tmp_path, prod_server, "alice")
    bob = _git_as(tmp_path, prod_server, "bob")
    work_a = tmp_path / "alice"
    origin = alice.new_repo(work_a, url)
    for name in ("asset.bin", "mine.bin"):
        _write(work_a / name, 2048)
    alice.run("add", ".", cwd=work_a)
    alice.run("commit", "-q", "-m", "assets", cwd=work_a)
    alice.run("push", "origin", "main", cwd=work_a)
    work_b = tmp_path / "bob"
    bob.run("clone", "-q", str(origin), str(work_b), cwd=tmp_path)

    assert "Locked asset.bin" in alice.run("lfs", "lock", "asset.bin", cwd=work_a).stdout
    assert "Locked mine.bin" in alice.run("lfs", "lock", "mine.bin", cwd=work_a).stdout
    again = alice.run("lfs", "lock", "asset.bin", cwd=work_a, check=False)
    assert again.returncode != 0 and "already created lock" in again.stderr
    listing = bob.run("lfs", "locks", cwd=work_b).stdout
    assert re.search(r"asset\.bin\s+alice", listing) and re.search(r"mine\.bin\s+alice", listing)

    # Bob's push touching Alice's locked file is refused by the client (lock is "theirs").
    _write(work_b / "asset.bin", 3000)
    bob.run("commit", "-q", "-am", "bob edits a locked file", cwd=work_b)
    refused = bob.run("-c", "lfs.locksverify=true", "push", "origin", "main", cwd=work_b, check=False)
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert "Unable to push locked files" in output and "asset.bin" in output, output
    # ... and Bob cannot remove Alice's lock without --force (403).
    not_his = bob.run("lfs", "unlock", "asset.bin", cwd=work_b, check=False)
    assert not_his.returncode != 0, not_his.stdout

    # Alice pushes a change to a file she locked herself ("ours"): allowed.
    _write(work_a / "mine.bin", 4000)
    alice.run("commit", "-q", "-am", "alice edits her locked file", cwd=work_a)
    alice.run("-c", "lfs.locksverify=true", "push", "origin", "main", cwd=work_a)

    assert "Unlocked asset.bin" in alice.run("lfs", "unlock", "asset.bin", cwd=work_a).stdout
    bob.run("pull", "-q", "--rebase", "origin", "main", cwd=work_b)
    bob.run("-c", "lfs.locksverify=true", "push", "origin", "main", cwd=work_b)

    # Forcing someone else's lock open needs the admin right: Bob has none, Dave has it.
    refused = bob.run("lfs", "unlock", "--force", "mine.bin", cwd=work_b, check=False)
    assert refused.returncode != 0 and "admin right" in refused.stdout + refused.stderr
    dave = _git_as(tmp_path, prod_server, "dave")
    forced = dave.run("lfs", "unlock", "--force", "mine.bin", cwd=work_b)
    assert "Unlocked mine.bin" in forced.stdout
    assert alice.run("lfs", "locks", cwd=work_a).stdout.strip() == ""


def test_wrong_credentials_and_read_only_user(prod_server: ArkorProcess, tmp_path: Path) -> None:
    url = f"{prod_server.url}/team/private.git/info/lfs"
    wrong = GitEnv(tmp_path / "home-wrong")
    wrong.store_credentials(prod_server.url, "alice-key", "not-the-secret")
    work = _repo_with_one_commit(wrong, tmp_path / "work", url, "a.bin")
    failed = wrong.run("push", "origin", "main", cwd=work, check=False)
    assert failed.returncode != 0
    assert re.search(r"401|[Aa]uthori[sz]ation|credentials", failed.stderr), failed.stderr

    # A user with read-only access to team/* cannot push (403) ...
    carol = _git_as(tmp_path, prod_server, "carol")
    work_c = _repo_with_one_commit(carol, tmp_path / "carol", url, "c.bin")
    denied = carol.run("push", "origin", "main", cwd=work_c, check=False)
    assert denied.returncode != 0
    assert re.search(r"403|carol has no push", denied.stderr), denied.stderr

    # ... while the right credentials push the same commit.
    alice = _git_as(tmp_path, prod_server, "alice")
    alice.run("push", "origin", "main", cwd=work_c)
