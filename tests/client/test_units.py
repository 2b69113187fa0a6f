"""Pure client pieces: settings precedence, error typing, ETag verification, progress rendering."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from arkor.client.cli import UsageError, parse_remote
from arkor.client.errors import ConnectionFailed, IntegrityError, error_from_response, is_retryable
from arkor.client.integrity import StreamVerifier, choose_part_size, multipart_etag
from arkor.client.progress import ProgressBar
from arkor.client.settings import DEFAULT_ENDPOINT, ClientConfigError, resolve
from arkor.errors import Conflict, NotFound, ServiceUnavailable


def test_settings_arguments_then_environment_then_file(tmp_path: Path) -> None:
    cfg = tmp_path / "client.yaml"
    cfg.write_text("endpoint: http://file:1\naccessKey: fa\nsecretKey: fs\n")
    assert resolve(environ={}, path=cfg).endpoint == "http://file:1"
    env = {"ARKOR_ENDPOINT": "http://env:2/", "ARKOR_ACCESS_KEY": "ea"}
    merged = resolve(environ=env, path=cfg)
    assert (merged.endpoint, merged.access_key, merged.secret_key) == ("http://env:2", "ea", "fs")
    assert resolve("arg:3", environ=env, path=cfg).endpoint == "http://arg:3"
    assert resolve(environ={}, path=tmp_path / "absent.yaml").endpoint == DEFAULT_ENDPOINT
    cfg.write_text("endpont: typo\n")
    with pytest.raises(ClientConfigError, match="endpont"):
        resolve(environ={}, path=cfg)


def test_errors_keep_server_code_and_class_by_status() -> None:
    exc = error_from_response(404, {"error": {"code": "no_such_key", "message": "gone"}})
    assert isinstance(exc, NotFound) and exc.code == "no_such_key" and exc.message == "gone"
    exc = error_from_response(409, {"error": {"code": "bucket_not_empty", "message": "m"}})
    assert isinstance(exc, Conflict) and exc.code == "bucket_not_empty"
    exc = error_from_response(503, None)
    assert isinstance(exc, ServiceUnavailable) and exc.status == 503
    assert is_retryable(exc) and is_retryable(ConnectionFailed("x"))
    assert not is_retryable(error_from_response(404, None))
    assert not is_retryable(error_from_response(400, {"error": {"code": "bad_digest", "message": ""}}))
    assert not is_retryable(IntegrityError("x"))
    assert is_retryable(error_from_response(500, {"error": {"code": "internal_error", "message": ""}}))


def test_stream_verifier_plain_and_multipart() -> None:
    data = bytes(range(256)) * 5000  # 1.28 MB
    plain = StreamVerifier(hashlib.md5(data).hexdigest(), len(data))
    for i in range(0, len(data), 7777):
        plain.update(data[i : i + 7777])
    plain.finish("plain")

    part = 300_000
    etag = multipart_etag([hashlib.md5(data[i : i + part]).digest() for i in range(0, len(data), part)])
    good = StreamVerifier(etag, len(data), part)
    assert good.checks_content
    good.update(data)
    good.finish("mp")

    bad = StreamVerifier(etag, len(data), part)
    bad.update(data[:-1] + b"\x00")
    with pytest.raises(IntegrityError):
        bad.finish("mp")
    unknown = StreamVerifier(etag, len(data), None)  # no recorded part size: size only
    assert not unknown.checks_content
    unknown.update(data[:10])
    with pytest.raises(IntegrityError, match="expected"):
        unknown.finish("short")


def test_part_size_grows_to_fit_ten_thousand_parts() -> None:
    assert choose_part_size(100, 8 << 20) == 8 << 20
    assert choose_part_size(200 << 30, 8 << 20) * 10_000 >= 200 << 30


def test_progress_bar_silent_off_tty_and_shows_rate_and_eta() -> None:
    quiet = io.StringIO()
    bar = ProgressBar("f", 100, stream=quiet)
    bar(50)
    bar.close()
    assert quiet.getvalue() == ""
    bar = ProgressBar("file.bin", 4 * 1024 * 1024, stream=io.StringIO(), enabled=True)
    bar.started -= 2.0
    bar(1024 * 1024)
    line = bar.render()
    assert "25%" in line and "1.0 MiB / 4.0 MiB" in line and "/s" in line and "ETA 0:0" in line


def test_remote_paths() -> None:
    assert parse_remote("arkor://b/k/x") is not None
    assert parse_remote("local/file") is None
    remote = parse_remote("arkor://bucket")
    assert remote is not None and (remote.bucket, remote.key) == ("bucket", "")
    with pytest.raises(UsageError):
        parse_remote("arkor:///key")
