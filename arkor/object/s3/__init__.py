"""The S3 REST API of the object server (issue 12).

Protocol modules (pure, no I/O): `errors`, `xmlutil`, `sigv4`, `checksums`, `chunked`.
"""
