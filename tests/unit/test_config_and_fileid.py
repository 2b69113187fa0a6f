"""Config validation and the file ID format: pure functions, no processes needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from arkor.config import ConfigError, check_role, load_config, parse_duration, parse_size
from arkor.fileid import FileID, InvalidFileID
from arkor.names import InvalidBucketName, InvalidObjectName, check_bucket, check_object_key
from tests.procs import run_cli

SEED_RUNTIME = """
run:
  runMode: dev
  logPath: log/arkor
http:
  listenMode: http
  httpsCertFile: cert/containerops/containerops.crt
  httpsKeyFile: cert/containerops/containerops.key
sqldatabase:
  driver: mysql
  username: root
  password: wang
  protocol: tcp
  host: 127.0.0.1
  port: 3306
  schema: arkor
kvdatabase:
  driver: redis
  username: root
  password: containerops
  protocol: tcp
  host: 127.0.0.1
  port: 6379
  partition: 0
"""


def test_seed_runtime_yaml_is_accepted_as_written(tmp_path: Path) -> None:
    path = tmp_path / "runtime.yaml"
    path.write_text(SEED_RUNTIME)
    config = load_config(path)
    assert config.sqldatabase.driver == "mysql"
    assert config.sqldatabase.password == "wang"
    assert config.kvdatabase.partition == 0
    assert config.run.runMode == "dev"


def test_defaults_need_no_file() -> None:
    config = load_config(None)
    assert config.sqldatabase.driver == "sqlite"
    assert config.kvdatabase.driver == "memory"
    assert config.object.port == 8125 and config.registry.port == 8126


def test_s3_listens_where_the_object_server_does_unless_told(tmp_path: Path) -> None:
    public = tmp_path / "public.yaml"
    public.write_text("object:\n  host: 0.0.0.0\n")
    assert load_config(public).s3_host == "0.0.0.0"
    public.write_text("object:\n  host: 0.0.0.0\ns3:\n  host: 10.1.2.3\n")
    assert load_config(public).s3_host == "10.1.2.3"


def test_a_data_server_on_every_address_must_say_how_it_is_reached() -> None:
    config = load_config(None, ["cluster.secret=0123456789abcdef", "data.host=0.0.0.0"])
    with pytest.raises(ConfigError, match="data.advertiseUrl"):
        check_role(config, "data")
    check_role(load_config(None, ["cluster.secret=0123456789abcdef", "data.host=0.0.0.0",
                                  "data.advertiseUrl=http://10.0.0.5:8127"]), "data")
    check_role(load_config(None, ["cluster.secret=0123456789abcdef", "data.host=10.0.0.5"]), "data")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("run:\n  runMode: staging\n", "run.runMode: must be one of dev, prod"),
        ("data:\n  port: eighty\n", "data.port: expected an integer"),
        ("object:\n  fragmentSiz: 1\n", "object.fragmentSiz: unknown key"),
        ("object:\n  fragmentSize: 12 parsecs\n", "object.fragmentSize: expected a size"),
        ("bogus: 1\n", "bogus: unknown key"),
        ("run:\n  runMode: prod\n", "cluster.secret"),
        ("http:\n  listenMode: https\n", "http.httpsCertFile: required"),
        ("http:\n  maxConnections: 0\n", "http.maxConnections: must be at least 1"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(path)


def test_cli_config_error_is_one_line_and_nonzero(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  port: eighty\n")
    result = run_cli("data", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert lines == ["arkor: config error: data.port: expected an integer, got 'eighty'"]


def test_sizes_and_durations() -> None:
    assert parse_size("8MiB") == 8 * 1024 * 1024
    assert parse_size(42) == 42
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    with pytest.raises(ValueError):
        parse_size("-1")


def test_file_id_round_trip_and_rejects_malformed() -> None:
    fid = FileID.new(7, 0xABCDEF)
    assert FileID.parse(str(fid)) == fid
    assert str(FileID(3, 0x1A2B, 0x00C0FFEE)) == "3,1a2b00c0ffee"
    for bad in ["", "3", "3,", "0,1a2b00c0ffee", "3,01a2b00c0ffee", "3,1A2B00C0FFEE", "x,1a2b00c0ffee",
                "3,00c0ffee", "99999999999,1a2b00c0ffee"]:
        with pytest.raises(InvalidFileID):
            FileID.parse(bad)


def test_names() -> None:
    assert check_bucket("testbucket") == "testbucket"
    assert check_object_key("a/b/c.txt") == "a/b/c.txt"
    for bad in ["", ".", "..", "a b", "x" * 256, "a/b"]:
        with pytest.raises(InvalidBucketName):
            check_bucket(bad)
    for bad in ["", "a/../b", "..", "a\x00b", "/abs", "x" * 1025]:
        with pytest.raises(InvalidObjectName):
            check_object_key(bad)


def test_cli_config_prints_the_effective_config_as_yaml() -> None:
    import yaml

    done = run_cli("config", "--set", "data.volumeSize=2MiB", "--set", "object.bodyTimeout=5s")
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["data"]["volumeSize"] == 2 * 1024 * 1024
    assert printed["object"]["bodyTimeout"] == 5.0
    assert printed["data"]["compactGarbageRatio"] == 0.5
