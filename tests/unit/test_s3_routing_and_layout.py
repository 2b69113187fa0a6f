"""Pure pieces of the S3 layer: the run-length part layout of multipart objects, S3 routing by
method + sub-resource (unsupported sub-resources are 501, never a listing), addressing, the
Arkor -> S3 error mapping and S3's bucket naming rules."""

from __future__ import annotations

import pytest

from arkor.errors import ArkorError, NotFound, PreconditionFailed
from arkor.model import parse_part_layout, part_layout
from arkor.object.s3 import buckets, copy, listing, misc, multipart, objects
from arkor.object.s3.context import to_s3_error
from arkor.object.s3.errors import S3Error
from arkor.object.s3.server import route


def test_part_layout_round_trip_and_bounds() -> None:
    sizes = [8 * 2**20] * 125 + [1234]
    assert part_layout(sizes) == f"{8 * 2**20}*125,1234"
    assert parse_part_layout(part_layout(sizes)) == sizes
    assert part_layout([5, 7, 5]) == "5,7,5"
    assert part_layout(list(range(1, 10_001))) == ""  # too long to keep
    for bad in ("x", "5*0", "5*-1", "1*10001", "1*5000,2*5001", ""):
        assert parse_part_layout(bad) is None


@pytest.mark.parametrize(("method", "path", "query", "headers", "expected"), [
    ("GET", "", {}, {}, buckets.list_buckets),
    ("PUT", "b", {}, {}, buckets.create_bucket),
    ("GET", "b", {"list-type": "2"}, {}, listing.list_v2),
    ("GET", "b", {}, {}, listing.list_v1),
    ("GET", "b", {"versions": ""}, {}, listing.list_versions),
    ("GET", "b", {"uploads": ""}, {}, multipart.list_uploads),
    ("POST", "b", {"delete": ""}, {}, misc.delete_objects),
    ("PUT", "b/k", {}, {}, objects.put_object),
    ("PUT", "b/k", {}, {"x-amz-copy-source": "/b/j"}, copy.copy_object),
    ("PUT", "b/k", {"uploadId": "u", "partNumber": "1"}, {}, multipart.upload_part),
    ("PUT", "b/k", {"uploadId": "u", "partNumber": "1"}, {"x-amz-copy-source": "b/j"},
     copy.upload_part_copy),
    ("POST", "b/k", {"uploads": ""}, {}, multipart.create),
    ("POST", "b/k", {"uploadId": "u"}, {}, multipart.complete),
    ("DELETE", "b/k", {"uploadId": "u"}, {}, multipart.abort),
    ("GET", "b/k", {"acl": ""}, {}, misc.get_acl),
])
def test_routing(method: str, path: str, query: dict[str, str], headers: dict[str, str],
                 expected: object) -> None:
    bucket, _, key = path.partition("/")
    assert route(method, bucket, key, query, headers) is expected


@pytest.mark.parametrize(("method", "path", "query"), [
    ("GET", "b", {"policy": ""}), ("GET", "b", {"session": ""}), ("PUT", "b", {"lifecycle": ""}),
    ("GET", "b/k", {"tagging": ""}), ("POST", "b/k", {"select": ""}), ("POST", "b", {}),
    ("PUT", "b", {"versioning": ""}),
])
async def test_unsupported_is_not_implemented(method: str, path: str, query: dict[str, str]) -> None:
    bucket, _, key = path.partition("/")
    operation = route(method, bucket, key, query, {})
    with pytest.raises(S3Error) as exc:
        await operation(None, None)  # type: ignore[arg-type]
    assert (exc.value.code, exc.value.status) == ("NotImplemented", 501)


def test_error_mapping() -> None:
    assert (to_s3_error(NotFound("x", code="no_such_bucket")).code) == "NoSuchBucket"
    assert to_s3_error(PreconditionFailed("x")).status == 412
    unknown = to_s3_error(ArkorError("x", code="something_new", status=422))
    assert (unknown.code, unknown.status) == ("InvalidRequest", 400)
    assert to_s3_error(ArkorError("boom")).code == "InternalError"


@pytest.mark.parametrize("name", ["ab", "Upper", "a..b", "-ab", "ab-", "192.168.1.1", "a" * 64,
                                  "xn--abc", "a_b"])
def test_s3_bucket_names_refused(name: str) -> None:
    with pytest.raises(S3Error) as exc:
        buckets.check_s3_bucket_name(name)
    assert exc.value.code == "InvalidBucketName"


def test_s3_bucket_names_accepted() -> None:
    for name in ("abc", "my.bucket-1", "a" * 63):
        buckets.check_s3_bucket_name(name)


def test_s3_config_section() -> None:
    from arkor.config import ConfigError, load_config

    config = load_config(None, ["s3.port=9130", "s3.region=eu-west-3", "s3.domain=s3.example.com"])
    assert (config.s3.enabled, config.s3.port, config.s3.region) == (True, 9130, "eu-west-3")
    assert load_config(None, ["s3.enabled=false"]).s3.enabled is False
    for bad in ("s3.region=EU WEST", "s3.port=70000", "s3.nope=1"):
        with pytest.raises(ConfigError, match="s3"):
            load_config(None, [bad])
