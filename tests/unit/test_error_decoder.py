"""arkor.errors.from_response: the one decoder of error answers (roles' clients and the SDK)."""

from __future__ import annotations

from arkor import errors
from arkor.client.errors import error_from_response
from arkor.errors import ArkorError, from_response


def test_json_body_as_parsed_or_raw_bytes() -> None:
    for body in ({"error": {"code": "no_such_key", "message": "gone"}},
                 b'{"error": {"code": "no_such_key", "message": "gone"}}'):
        exc = from_response(404, body)
        assert isinstance(exc, errors.NotFound) and exc.code == "no_such_key" and exc.message == "gone"
    exc = from_response(416, b'{"error": {"code": "invalid_range", "message": "m"}}')
    assert isinstance(exc, errors.RangeNotSatisfiable)


def test_code_without_class_gets_the_class_of_its_status() -> None:
    exc = from_response(409, {"error": {"code": "bucket_not_empty", "message": "m"}})
    assert isinstance(exc, errors.Conflict) and exc.code == "bucket_not_empty" and exc.status == 409
    exc = from_response(412, {"error": {"code": "internal_error", "message": "odd"}})
    assert isinstance(exc, errors.PreconditionFailed) and exc.status == 412


def test_answers_that_are_not_our_json() -> None:
    head = from_response(404, b"", {"x-arkor-error": "invalid_file_id"})  # a HEAD: code in a header
    assert head.code == "invalid_file_id" and head.status == 404
    proxy = from_response(502, b"<html>Bad Gateway</html>")
    assert type(proxy) is ArkorError and proxy.status == 502 and proxy.code == "internal_error"
    unavailable = from_response(503, None)
    assert isinstance(unavailable, errors.ServiceUnavailable) and unavailable.code == "service_unavailable"
    empty_404 = from_response(404, b"")
    assert isinstance(empty_404, errors.NotFound) and empty_404.code == "not_found"
    deep = from_response(400, b"[" * 100_000)  # never a RecursionError out of the decoder
    assert isinstance(deep, errors.BadRequest) and deep.code == "bad_request"
    assert from_response(400, [1, 2]).code == "bad_request"


def test_sdk_uses_the_same_decoder() -> None:
    body = b'{"error": {"code": "no_such_upload", "message": "x"}}'
    sdk, shared = error_from_response(404, body), from_response(404, body)
    assert (type(sdk), sdk.code, sdk.status) == (type(shared), shared.code, shared.status)


def test_one_body_size_mismatch_class_under_its_wire_codes() -> None:
    from arkor.data.writes import SizeMismatch
    from arkor.web.semantics import BodySizeMismatch as FromSemantics

    assert FromSemantics is errors.BodySizeMismatch
    assert issubclass(SizeMismatch, errors.BodySizeMismatch) and SizeMismatch.code == "size_mismatch"
    decoded = from_response(400, b'{"error": {"code": "incomplete_body", "message": "short"}}')
    assert isinstance(decoded, errors.BodySizeMismatch) and decoded.status == 400
