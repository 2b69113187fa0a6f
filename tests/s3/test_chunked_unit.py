"""aws-chunked decoding: AWS's published signed vectors, real boto3 trailer bodies, every split
point, and every way a body can be broken."""

from __future__ import annotations

import calendar
import hashlib
import random
import time

import pytest

from arkor.object.s3.checksums import UploadChecksums
from arkor.object.s3.chunked import AwsChunkedDecoder, decoder_for
from arkor.object.s3.errors import S3Error
from arkor.object.s3.sigv4 import (
    STREAMING_SIGNED_TRAILER,
    SigV4Identity,
    authenticate_sigv4,
    chunk_signature,
    signing_key,
    trailer_signature,
)
from tests.mutation import mutate
from tests.s3.capture import SECRET_KEY, client
from tests.s3.test_sigv4_unit import aws_streaming_example, secret_for

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

# docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html: 65 KiB of 'a' in 64 KiB chunks
AWS_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    + b"a" * 65536
    + b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n"
    + b"a" * 1024
    + b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n"
)

# docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html: the same payload with a
# CRC32C trailer and its signature
AWS_TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
AWS_TRAILER_BODY = (
    b"10000;chunk-signature=b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2\r\n"
    + b"a" * 65536
    + b"\r\n400;chunk-signature=1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7\r\n"
    + b"a" * 1024
    + b"\r\n0;chunk-signature=2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992\r\n"
    + b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
    + b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n\r\n"
)


def aws_identity() -> SigV4Identity:
    identity = authenticate_sigv4(
        "PUT", "/examplebucket/chunkObject.txt", "", aws_streaming_example().headers,
        secret_for=secret_for, region="us-east-1", now=calendar.timegm((2013, 5, 24, 0, 0, 0)),
    )
    assert identity is not None
    return identity


def trailer_identity() -> SigV4Identity:
    return SigV4Identity(
        "AKIAIOSFODNN7EXAMPLE", signing_key(AWS_SECRET, "20130524", "us-east-1"),
        "20130524/us-east-1/s3/aws4_request", "20130524T000000Z", AWS_TRAILER_SEED,
        STREAMING_SIGNED_TRAILER, False,
    )


def decode(decoder: AwsChunkedDecoder, pieces: list[bytes]) -> bytes:
    out = [part for piece in pieces for part in decoder.feed(piece)]
    decoder.finish()
    return b"".join(out)


def signed(identity: SigV4Identity | None = None, length: int | None = 66560) -> AwsChunkedDecoder:
    return AwsChunkedDecoder(identity=identity or aws_identity(), signed=True, decoded_length=length)


def unsigned(length: int | None) -> AwsChunkedDecoder:
    return AwsChunkedDecoder(identity=None, signed=False, decoded_length=length)


def fails(decoder: AwsChunkedDecoder, pieces: list[bytes], code: str, status: int = 400) -> list[bytes]:
    """Feed until the error; returns what was yielded before it."""
    yielded: list[bytes] = []
    with pytest.raises(S3Error) as info:
        for piece in pieces:
            yielded += decoder.feed(piece)
        decoder.finish()
    assert (info.value.code, info.value.status) == (code, status), info.value
    return yielded


def encode_signed(
    identity: SigV4Identity, chunks: list[bytes], trailers: list[tuple[str, str]] = ()
) -> bytes:
    """A signed aws-chunked body (chunk_signature itself is checked against AWS's vectors above)."""
    out, previous = [], identity.seed_signature
    for chunk in [*chunks, b""]:
        previous = chunk_signature(identity, previous, hashlib.sha256(chunk).hexdigest())
        out.append(b"%x;chunk-signature=%s\r\n%s" % (len(chunk), previous.encode(), chunk))
        if chunk:
            out.append(b"\r\n")
    if trailers:
        canonical = "".join(f"{k}:{v}\n" for k, v in trailers).encode()
        out += [f"{k}:{v}\r\n".encode() for k, v in trailers]
        out.append(f"x-amz-trailer-signature:{trailer_signature(identity, previous, canonical)}\r\n".encode())
    out.append(b"\r\n")
    return b"".join(out)


# --- published vectors and real clients ------------------------------------------------------------


def test_aws_signed_example_decodes_and_every_split_point_works() -> None:
    assert decode(signed(), [AWS_BODY]) == b"a" * 66560
    # one byte at a time puts a piece boundary at every position of the body
    assert decode(signed(), [AWS_BODY[i : i + 1] for i in range(len(AWS_BODY))]) == b"a" * 66560
    rng = random.Random(5)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(AWS_BODY)), rng.randint(1, 40)))
        pieces = [AWS_BODY[a:b] for a, b in zip([0, *cuts], [*cuts, len(AWS_BODY)], strict=True)]
        assert decode(signed(), pieces) == b"a" * 66560


def test_aws_trailer_example_verifies_chunks_trailer_signature_and_crc32c() -> None:
    decoder = signed(trailer_identity())
    payload = decode(decoder, [AWS_TRAILER_BODY[i : i + 1] for i in range(len(AWS_TRAILER_BODY))])
    assert payload == b"a" * 66560
    assert decode(signed(trailer_identity()), [AWS_TRAILER_BODY]) == payload
    assert decoder.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}
    checks = UploadChecksums.from_headers({"x-amz-trailer": "x-amz-checksum-crc32c"})
    checks.update(payload)
    assert checks.verify(decoder.trailers) == {"crc32c": "sOO8/Q=="}
    tampered = AWS_TRAILER_BODY.replace(b"sOO8/Q==", b"sOO8/Q=A")
    fails(signed(trailer_identity()), [tampered], "SignatureDoesNotMatch", 403)
    bad_sig = AWS_TRAILER_BODY.replace(b"trailer-signature:d81f", b"trailer-signature:d81e")
    fails(signed(trailer_identity()), [bad_sig], "SignatureDoesNotMatch", 403)
    no_sig = AWS_TRAILER_BODY[: AWS_TRAILER_BODY.index(b"x-amz-trailer-signature")] + b"\r\n"
    fails(signed(trailer_identity()), [no_sig], "SignatureDoesNotMatch", 403)


@pytest.mark.parametrize("size", [0, 1, 100_000, 2 * 1024 * 1024 + 17])
def test_boto3_unsigned_trailer_bodies(size: int) -> None:
    """boto3's default PutObject over https: STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32 trailer."""
    s3, sent = client()
    payload = random.Random(size).randbytes(size)
    s3.put_object(Bucket="bkt", Key="k", Body=payload)
    req = sent[-1]
    assert req.headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    identity = authenticate_sigv4(req.method, req.raw_path, req.raw_query, req.headers,
                                  secret_for=lambda k: SECRET_KEY,
                                  region="us-east-1", now=time.time())
    decoder = decoder_for(req.headers, identity)
    assert decoder is not None
    rng = random.Random(1)
    pieces, pos = [], 0
    while pos < len(req.body):
        step = rng.choice((1, 2, 5, 1000, 65536))
        pieces.append(req.body[pos : pos + step])
        pos += step
    assert decode(decoder, pieces) == payload
    checks = UploadChecksums.from_headers(req.headers)
    checks.update(payload)
    stored = checks.verify(decoder.trailers)
    assert stored == {"crc32": decoder.trailers["x-amz-checksum-crc32"]}
    corrupted = bytearray(payload or b"")
    if corrupted:
        corrupted[size // 2] ^= 1
        bad = UploadChecksums.from_headers(req.headers)
        bad.update(bytes(corrupted))
        with pytest.raises(S3Error) as info:
            bad.verify(decoder.trailers)
        assert info.value.code == "BadDigest"


async def test_async_decode_over_an_async_iterator() -> None:
    async def body():
        for i in range(0, len(AWS_BODY), 4096):
            yield AWS_BODY[i : i + 4096]

    decoder = signed()
    out = b"".join([part async for part in decoder.decode(body())])
    assert out == b"a" * 66560 and decoder.decoded == 66560


def test_every_two_piece_split_of_small_bodies() -> None:
    identity = trailer_identity()
    chunks = [b"0123456789", b"abc", b"Z"]
    trailers = [("x-amz-checksum-crc32", "AAAAAA==")]
    cases = [
        (lambda: AwsChunkedDecoder(identity=identity, signed=True, decoded_length=14),
         encode_signed(identity, chunks, trailers)),
        (lambda: unsigned(14),
         b"a\r\n0123456789\r\n3\r\nabc\r\n1\r\nZ\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"),
        (lambda: unsigned(14), b"a\r\n0123456789\r\n3\r\nabc\r\n1\r\nZ\r\n0\r\n\r\n"),
    ]
    for make, body in cases:
        for cut in range(len(body) + 1):
            assert decode(make(), [body[:cut], body[cut:]]) == b"0123456789abcZ"


# --- broken bodies -----------------------------------------------------------------------------------


def test_bad_signature_mid_stream_stops_before_the_next_chunk() -> None:
    identity = trailer_identity()
    chunks = [b"1" * 9000, b"2" * 9000, b"3" * 9000]
    body = bytearray(encode_signed(identity, chunks))
    second = body.index(b"2328;chunk-signature=", 10) + len(b"2328;chunk-signature=")
    body[second] = ord("0") if body[second] != ord("0") else ord("1")
    for step in (1, 100, 9000, len(body)):
        pieces = [bytes(body[i : i + step]) for i in range(0, len(body), step)]
        yielded = b"".join(fails(AwsChunkedDecoder(identity=identity, signed=True, decoded_length=27000),
                                 pieces, "SignatureDoesNotMatch", 403))
        assert b"3" not in yielded and len(yielded) <= 18000
    # data changed under a valid signature, chunks reordered, final chunk signature wrong
    good = encode_signed(identity, chunks)
    flipped = good.replace(b"2" * 9000, b"2" * 8999 + b"X")
    fails(AwsChunkedDecoder(identity=identity, signed=True, decoded_length=27000), [flipped],
          "SignatureDoesNotMatch", 403)
    parts = good.split(b"\r\n")
    swapped = b"\r\n".join([parts[2], parts[3], parts[0], parts[1], *parts[4:]])
    fails(AwsChunkedDecoder(identity=identity, signed=True, decoded_length=27000), [swapped],
          "SignatureDoesNotMatch", 403)
    final = good.rindex(b"0;chunk-signature=") + len(b"0;chunk-signature=")
    bad_final = good[:final] + (b"f" if good[final : final + 1] != b"f" else b"e") + good[final + 1 :]
    fails(AwsChunkedDecoder(identity=identity, signed=True, decoded_length=27000), [bad_final],
          "SignatureDoesNotMatch", 403)
    other_key = SigV4Identity(identity.access_key, signing_key("other", "20130524", "us-east-1"),
                              identity.scope, identity.amz_date, identity.seed_signature,
                              identity.payload_hash, False)
    fails(AwsChunkedDecoder(identity=other_key, signed=True, decoded_length=27000), [good],
          "SignatureDoesNotMatch", 403)


def test_every_truncation_fails() -> None:
    identity = trailer_identity()
    body = encode_signed(identity, [b"x" * 20, b"y" * 3], [("x-amz-checksum-crc32", "AAAAAA==")])
    for cut in range(len(body) - 2):  # the closing CRLF of the trailer section may be left off
        decoder = AwsChunkedDecoder(identity=identity, signed=True, decoded_length=23)
        with pytest.raises(S3Error) as info:
            decode(decoder, [body[:cut]])
        assert info.value.code in ("IncompleteBody", "SignatureDoesNotMatch"), (cut, info.value)
    plain = AWS_BODY
    for cut in list(range(0, 200)) + list(range(len(plain) - 200, len(plain))):
        fails(signed(), [plain[:cut]], "IncompleteBody")
    unsigned_body = b"5\r\nhello\r\n0\r\n\r\n"
    for cut in range(len(unsigned_body) - 2):
        fails(unsigned(5), [unsigned_body[:cut]], "IncompleteBody")


def test_malformed_framing() -> None:
    for body in (
        b"1" * 5000,  # a size line that never ends
        b"5;chunk-signature=" + b"a" * 5000 + b"\r\n",
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"\xff5\r\nhello\r\n0\r\n\r\n",
        b"11111111111111111\r\n",  # 17 hex digits
        b"5\nhello\r\n0\r\n\r\n",  # bare LF
        b"5\r\nhelloXY0\r\n\r\n",  # no CRLF after data
        b"5\r\nhello\r\n0\r\n\r\n\r\nmore",  # data after the end
        b"5\r\nhello\r\n0\r\nno colon\r\n\r\n",
        b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:a\r\nx-amz-checksum-crc32:a\r\n\r\n",
        b"5\r\nhello\r\n0\r\n" + b"".join(b"x-t%d:v\r\n" % i for i in range(40)) + b"\r\n",
    ):
        fails(unsigned(5), [body], "InvalidRequest")
    # signed chunks must carry a signature; a non-trailer signed body carries no trailers
    fails(signed(), [b"10000\r\n"], "InvalidRequest")
    fails(signed(), [b"10000;chunk-signature=abc\r\n"], "InvalidRequest")
    aws_with_trailer = AWS_BODY[:-2] + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    fails(signed(), [aws_with_trailer], "InvalidRequest")
    fails(signed(), [AWS_BODY + b"more"], "InvalidRequest")


def test_chunk_size_limit_and_decoded_length() -> None:
    small = AwsChunkedDecoder(identity=None, signed=False, decoded_length=None, max_chunk_size=4)
    fails(small, [b"5\r\nhello\r\n0\r\n\r\n"], "InvalidRequest")
    fails(unsigned(4), [b"5\r\nhello\r\n0\r\n\r\n"], "InvalidRequest")  # more than declared
    fails(unsigned(6), [b"5\r\nhello\r\n0\r\n\r\n"], "IncompleteBody")  # less than declared
    fails(signed(length=66561), [AWS_BODY], "IncompleteBody")
    fails(signed(length=66559), [AWS_BODY], "InvalidRequest")
    assert decode(unsigned(None), [b"5\r\nhello\r\n0\r\n\r\n"]) == b"hello"


def test_decoder_for_chooses_by_payload_mode() -> None:
    identity = aws_identity()
    headers = {"x-amz-decoded-content-length": "66560"}
    decoder = decoder_for(headers, identity)
    assert decoder is not None and decode(decoder, [AWS_BODY]) == b"a" * 66560
    assert decoder_for({"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, None) is None
    assert decoder_for({}, None) is None
    anon = {"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "x-amz-decoded-content-length": "5"}
    decoder = decoder_for(anon, None)
    assert decoder is not None and decode(decoder, [b"5\r\nhello\r\n0\r\n\r\n"]) == b"hello"
    with pytest.raises(S3Error) as info:
        decoder_for({"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                     "x-amz-decoded-content-length": "1"}, None)
    assert info.value.code == "InvalidRequest"
    with pytest.raises(S3Error) as info:
        decoder_for({}, identity)
    assert (info.value.code, info.value.status) == ("MissingContentLength", 411)
    # a presigned request signs UNSIGNED-PAYLOAD: aws-chunked framing is still decoded, never stored
    presigned = SigV4Identity(identity.access_key, identity.signing_key, identity.scope, identity.amz_date,
                              identity.seed_signature, "UNSIGNED-PAYLOAD", True)
    decoder = decoder_for(anon, presigned)
    assert decoder is not None and decode(decoder, [b"5\r\nhello\r\n0\r\n\r\n"]) == b"hello"
    assert decoder_for({"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, presigned) is None
    with pytest.raises(S3Error) as info:
        decoder_for({"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                     "x-amz-decoded-content-length": "1"}, presigned)
    assert info.value.code == "InvalidRequest"
    for bad in ("-1", "x", "", "1" * 30, "١٢"):
        with pytest.raises(S3Error) as info:
            decoder_for({"x-amz-decoded-content-length": bad}, identity)
        assert info.value.code == "InvalidArgument"


def test_random_corruption_is_refused_or_harmless() -> None:
    """Seeded mutations of a signed body: either an S3Error, or (a tolerated framing change) exactly
    the original payload; never another exception, never other data. Unsigned bodies: S3Error only."""
    identity = trailer_identity()
    chunks = [bytes(range(256)) * 40, b"tail" * 10]
    payload = b"".join(chunks)
    good = encode_signed(identity, chunks, [("x-amz-checksum-crc32", "AAAAAA==")])
    plain = (b"2800\r\n" + chunks[0] + b"\r\n28\r\n" + chunks[1]
             + b"\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n")
    rng = random.Random(99)
    alphabet = b"0123456789abcdefxyz;=:\r\n \x00\xff"
    for round_ in range(1500):
        signed_body = round_ % 2 == 0
        body = bytearray(good if signed_body else plain)
        mutate(body, rng, alphabet, rng.randint(1, 3), replace_below=0.5, delete_below=0.75)
        decoder = (AwsChunkedDecoder(identity=identity, signed=True, decoded_length=len(payload))
                   if signed_body else unsigned(len(payload)))
        cut = rng.randrange(1, len(body))
        try:
            out = decode(decoder, [bytes(body[:cut]), bytes(body[cut:])])
        except S3Error as exc:
            assert exc.status in (400, 403)
            continue
        if signed_body:
            assert out == payload
