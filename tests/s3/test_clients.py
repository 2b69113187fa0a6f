"""The real S3 clients, unmodified, against one shared `arkor allinone`: aws-cli (`aws s3` and
`aws s3api`, a multipart upload over the CLI's 8 MiB threshold), rclone, restic and s3cmd.

Every client is pointed at the server with config or env files in a tmp dir (never the user's home
config); `make system-deps` installs rclone, restic and s3cmd, the test extra boto3 and awscli.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3.conftest import ACCESS_KEY, REGION, SECRET_KEY, S3Server, start_s3

MIB = 1024 * 1024
AWS = [sys.executable, "-m", "awscli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    srv = start_s3(tmp_path_factory.mktemp("s3clients"),
                   auth={"anonymousLoopback": False,
                         "users": [{"name": "t", "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]},
                   object={"fragmentSize": "4MiB"})
    yield srv
    srv.proc.stop()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty HOME: no client reads the user's own configuration."""
    return tmp_path_factory.mktemp("clienthome")


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(args, env=env, capture_output=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(args[:4])} exited {done.returncode}:\n{done.stdout.decode()[-2000:]}\n"
        f"{done.stderr.decode()[-3000:]}")
    return done.stdout.decode()


def base_env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "PATH": os.environ["PATH"], "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache")}


def make_tree(root: Path, files: int = 12) -> Path:
    for i in range(files):
        path = root / f"d{i % 3}" / f"file {i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + i * 3000))
    return root


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: run `make system-deps`")


def test_aws_cli(server: S3Server, home: Path, tmp_path: Path) -> None:
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\nregion = {REGION}\ns3 =\n  addressing_style = path\n")
    creds = tmp_path / "aws-credentials"
    creds.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY}\n"
                     f"aws_secret_access_key = {SECRET_KEY}\n")
    env = {**base_env(home), "AWS_CONFIG_FILE": str(config),
           "AWS_SHARED_CREDENTIALS_FILE": str(creds)}
    aws = [*AWS, "--endpoint-url", server.s3_url]
    run([*aws, "s3", "mb", "s3://cli-bucket"], env)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * MIB + 12345))  # over the 8 MiB multipart threshold
    run([*aws, "s3", "cp", str(big), "s3://cli-bucket/big.bin"], env)
    head = json.loads(run([*aws, "s3api", "head-object", "--bucket", "cli-bucket",
                           "--key", "big.bin"], env))
    assert head["ContentLength"] == big.stat().st_size and head["ETag"].endswith('-2"')
    back = tmp_path / "back.bin"
    run([*aws, "s3", "cp", "s3://cli-bucket/big.bin", str(back)], env)
    assert filecmp.cmp(big, back, shallow=False)
    tree = make_tree(tmp_path / "tree")
    run([*aws, "s3", "sync", str(tree), "s3://cli-bucket/tree"], env)
    listing = run([*aws, "s3", "ls", "--recursive", "s3://cli-bucket/tree/"], env)
    assert listing.count("\n") == 12 and "file 11.bin" in listing
    (tree / "d0" / "file 0.bin").write_bytes(b"changed")
    synced = run([*aws, "s3", "sync", str(tree), "s3://cli-bucket/tree"], env)
    assert "file 0.bin" in synced and "file 1.bin" not in synced  # only the changed file
    down = tmp_path / "down"
    run([*aws, "s3", "sync", "s3://cli-bucket/tree", str(down)], env)
    assert not filecmp.dircmp(tree / "d0", down / "d0").diff_files
    run([*aws, "s3api", "put-object", "--bucket", "cli-bucket", "--key", "api.txt",
         "--body", str(tree / "d0" / "file 0.bin"), "--metadata", "k=v"], env)
    got = json.loads(run([*aws, "s3api", "get-object", "--bucket", "cli-bucket", "--key", "api.txt",
                          str(tmp_path / "api.out")], env))
    assert got["Metadata"] == {"k": "v"} and (tmp_path / "api.out").read_bytes() == b"changed"
    listed = json.loads(run([*aws, "s3api", "list-objects-v2", "--bucket", "cli-bucket",
                             "--prefix", "tree/d1/"], env))
    assert len(listed["Contents"]) == 4
    run([*aws, "s3", "rm", "--recursive", "s3://cli-bucket/"], env)
    run([*aws, "s3", "rb", "s3://cli-bucket"], env)
    assert "cli-bucket" not in run([*aws, "s3", "ls"], env)


def test_rclone(server: S3Server, home: Path, tmp_path: Path) -> None:
    need("rclone")
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[arkor]\ntype = s3\nprovider = Other\naccess_key_id = {ACCESS_KEY}\n"
                    f"secret_access_key = {SECRET_KEY}\nendpoint = {server.s3_url}\n"
                    f"region = {REGION}\n")
    env = base_env(home)
    rc = ["rclone", "--config", str(conf), "--retries", "1", "--low-level-retries", "1"]
    tree = make_tree(tmp_path / "tree")
    (tree / "big.bin").write_bytes(os.urandom(6 * MIB))
    run([*rc, "mkdir", "arkor:rclone-bucket"], env)
    run([*rc, "copy", str(tree), "arkor:rclone-bucket/tree"], env)
    run([*rc, "check", str(tree), "arkor:rclone-bucket/tree"], env)
    (tree / "d1" / "file 1.bin").unlink()
    (tree / "d2" / "new.bin").write_bytes(b"new")
    run([*rc, "sync", str(tree), "arkor:rclone-bucket/tree"], env)
    run([*rc, "check", "--download", str(tree), "arkor:rclone-bucket/tree"], env)
    names = run([*rc, "lsf", "-R", "arkor:rclone-bucket/tree"], env).split()
    assert "d2/new.bin" in names and "d1/file 1.bin" not in " ".join(names)


def test_restic(server: S3Server, home: Path, tmp_path: Path) -> None:
    need("restic")
    env = {**base_env(home), "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "RESTIC_REPOSITORY": f"s3:{server.s3_url}/restic-bucket/repo",
           "RESTIC_PASSWORD": "arkor-test", "RESTIC_CACHE_DIR": str(tmp_path / "cache")}
    tree = make_tree(tmp_path / "tree", files=30)
    run(["restic", "init"], env)
    run(["restic", "backup", str(tree)], env)
    run(["restic", "check", "--read-data"], env)
    target = tmp_path / "restored"
    run(["restic", "restore", "latest", "--target", str(target)], env)
    restored = target / tree.relative_to(tree.anchor)
    for sub in ("d0", "d1", "d2"):
        cmp = filecmp.dircmp(tree / sub, restored / sub)
        assert not cmp.diff_files and not cmp.left_only and not cmp.right_only


def test_s3cmd(server: S3Server, home: Path, tmp_path: Path) -> None:
    need("s3cmd")
    host = server.s3_url.removeprefix("http://")
    cfg = tmp_path / "s3cfg"
    cfg.write_text(f"[default]\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n"
                   f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\n"
                   f"bucket_location = {REGION}\nsignature_v2 = False\n")
    env = base_env(home)
    s3cmd = ["s3cmd", "-c", str(cfg)]
    run([*s3cmd, "mb", "s3://s3cmd-bucket"], env)
    one = tmp_path / "one.bin"
    one.write_bytes(os.urandom(300_000))
    run([*s3cmd, "put", str(one), "s3://s3cmd-bucket/one.bin"], env)
    back = tmp_path / "one.back"
    run([*s3cmd, "get", "s3://s3cmd-bucket/one.bin", str(back)], env)
    assert back.read_bytes() == one.read_bytes()
    tree = make_tree(tmp_path / "tree")
    run([*s3cmd, "sync", f"{tree}/", "s3://s3cmd-bucket/tree/"], env)
    listing = run([*s3cmd, "ls", "--recursive", "s3://s3cmd-bucket/tree/"], env)
    assert listing.count("s3://s3cmd-bucket/tree/") == 12
    run([*s3cmd, "del", "s3://s3cmd-bucket/one.bin"], env)
    assert "one.bin" not in run([*s3cmd, "ls", "s3://s3cmd-bucket/"], env)
