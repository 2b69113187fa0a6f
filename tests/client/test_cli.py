"""`arkor cp/ls/rm/stat/mb/rb` as a user runs them: real subprocesses against a real allinone."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.client.conftest import pattern
from tests.procs import ArkorProcess, free_port, run_cli

MiB = 1024 * 1024


@pytest.fixture
def arkor(allinone: ArkorProcess, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run one client command with the endpoint from the environment, as a user would."""
    env = {"ARKOR_ENDPOINT": allinone.url, "ARKOR_CLIENT_CONFIG": str(tmp_path / "none.yaml")}

    def run(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return run_cli(*args, input=input, env=env)

    return run


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""  # no progress bar when stderr is not a terminal
    return result.stdout.decode()


def one_line_error(result: subprocess.CompletedProcess[bytes], code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arkor: "), lines
    return lines[0]


def test_cp_up_down_stdio_stat_ls_rm(arkor, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = pattern(20 * MiB + 3, seed=4)  # above the multipart threshold: parts in parallel
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    ok(arkor("cp", str(src), f"arkor://{bucket}/dir/"))  # a trailing / keeps the file name
    stat = ok(arkor("stat", f"arkor://{bucket}/dir/in.bin"))
    assert f"size:          {len(data)}" in stat and "-3" in stat  # 3 parts of 8 MiB

    out = tmp_path / "out.bin"
    ok(arkor("cp", f"arkor://{bucket}/dir/in.bin", str(out), "-j", "3"))
    assert out.read_bytes() == data

    ok(arkor("cp", "-", f"arkor://{bucket}/from-stdin", input=b"piped bytes\n"))
    assert arkor("cp", f"arkor://{bucket}/from-stdin", "-").stdout == b"piped bytes\n"

    ok(arkor("cp", f"arkor://{bucket}/from-stdin", f"arkor://{bucket}/copied"))  # server-side
    listing = ok(arkor("ls", f"arkor://{bucket}"))
    assert [line.split()[-1] for line in listing.splitlines()] == ["copied", "dir/", "from-stdin"]
    assert "dir/in.bin" in ok(arkor("ls", "-r", f"arkor://{bucket}/dir/"))
    assert bucket in ok(arkor("ls"))

    ok(arkor("rm", f"arkor://{bucket}/copied", f"arkor://{bucket}/from-stdin"))
    assert "from-stdin" not in ok(arkor("ls", "-r", f"arkor://{bucket}"))


def test_recursive_copy_both_ways(arkor, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = tmp_path / "tree"
    files = {"a.txt": b"a", "sub/b.bin": pattern(100_000, 1), "sub/deeper/c": b"", "d e.txt": b"space"}
    for name, content in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(content)
    ok(arkor("cp", "-r", str(tree), f"arkor://{bucket}/backup"))
    keys = [line.split()[-1] for line in ok(arkor("ls", "-r", f"arkor://{bucket}/backup/")).splitlines()]
    assert len(keys) == 4 and "backup/sub/deeper/c" in keys

    back = tmp_path / "restored"
    ok(arkor("cp", "-r", f"arkor://{bucket}/backup", str(back)))
    for name, content in files.items():
        assert (back / name).read_bytes() == content

    ok(arkor("rm", "-r", f"arkor://{bucket}/backup/sub/"))
    assert len(ok(arkor("ls", "-r", f"arkor://{bucket}")).splitlines()) == 2


def test_bucket_commands_and_error_exits(arkor, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ok(arkor("cp", "-", f"arkor://{bucket}/k", input=b"v"))
    line = one_line_error(arkor("rb", f"arkor://{bucket}"))
    assert "bucket_not_empty" in line
    line = one_line_error(arkor("stat", f"arkor://{bucket}/missing"))
    assert "no_such_key" in line
    line = one_line_error(arkor("cp", f"arkor://{bucket}/missing", str(tmp_path / "x")))
    assert "no_such_key" in line and not (tmp_path / "x").exists()
    one_line_error(arkor("rm", f"arkor://{bucket}/missing"))
    one_line_error(arkor("cp", str(tmp_path / "no-such-file"), f"arkor://{bucket}/k"), code=2)
    one_line_error(arkor("cp", str(tmp_path), f"arkor://{bucket}/k"), code=2)  # a directory without -r
    one_line_error(arkor("cp", "a", "b"), code=2)
    assert "invalid_bucket_name" in one_line_error(arkor("cp", "-", "arkor://bad!name/k", input=b"x"))
    ok(arkor("rb", "--force", f"arkor://{bucket}"))
    assert bucket not in ok(arkor("ls"))
    down = run_cli("ls", "--endpoint", f"http://127.0.0.1:{free_port()}")
    assert "cannot reach" in one_line_error(down)


def test_sdk_checksum_of_cli_upload_matches_curl_view(arkor, allinone: ArkorProcess, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """What the CLI stored is byte-identical to what a plain HTTP GET (as curl does) returns."""
    import httpx

    data = pattern(3 * MiB, seed=8)
    ok(arkor("cp", "-", f"arkor://{bucket}/via-cli", input=data))
    body = httpx.get(f"{allinone.url}/v1/{bucket}/via-cli", timeout=60).content
    assert hashlib.md5(body).hexdigest() == hashlib.md5(data).hexdigest()
