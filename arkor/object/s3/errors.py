"""S3 errors: the exception the S3 modules raise and the XML body S3 clients expect.

Lives here: `S3Error` (S3's code, message, HTTP status) and its XML rendering. Must not live here:
mapping of Arkor's own errors to S3 codes (the S3 listener does that) or any I/O.
"""

from __future__ import annotations


class S3Error(Exception):
    """An S3 error answer: `code` is S3's (NoSuchBucket, SignatureDoesNotMatch, ...)."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int,
        *,
        resource: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.resource = resource
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"S3Error({self.status}, {self.code!r}, {self.message!r})"


def error_xml(err: S3Error, *, resource: str, request_id: str) -> bytes:
    """`<Error>` as S3 sends it (no namespace); `request_id` equals the x-amz-request-id header."""
    from arkor.object.s3.xmlutil import xml_document  # xmlutil raises S3Error: import at call time

    return xml_document(
        "Error",
        [
            ("Code", err.code),
            ("Message", err.message),
            ("Resource", err.resource or resource),
            ("RequestId", request_id),
        ],
        namespace=None,
    )
