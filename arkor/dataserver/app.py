"""The data server's internal HTTP API (docs/specs/Internal.md, "Data server").

What lives here: routes, header parsing and signatures over the HTTP-free engine (`arkor.data`);
what must not: any storage logic (that is `NeedleStore`'s) or repair decisions (`Repairer`'s).

Needle bodies go through raw-ASGI routes (`arkor.web.asgi.StreamRouter`), so a PUT is pulled from
the socket only as fast as it is written to disk and a GET is read from disk only as fast as the
client takes it: memory stays bounded whatever the needle size. Control routes (status, listing,
compaction, health) are a Quart app behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arkor import batchwire
from arkor.config import Config, DataConfig
from arkor.data.repair import Repairer
from arkor.data.store import NeedleStore, SizeMismatch, one_chunk
from arkor.errors import ArkorError, BadRequest, LengthRequired, RangeNotSatisfiable
from arkor.fileid import FileID
from arkor.security import (
    CONTENT_SHA256_HEADER,
    SIGNATURE_HEADER,
    Verifier,
    check_body,
    configured_secret,
    declared_digest,
    digest_of,
)
from arkor.transfer.coalesce import each_alone
from arkor.web import semantics
from arkor.web.asgi import ASGIApp, Request, Response, StreamRouter, decoded
from arkor.web.role import control_app, role_app

CRC_HEADER = "x-arkor-crc32c"
SIZE_HEADER = "x-arkor-size"
LIST_LIMIT_MAX = 10_000
# A needle batch (coalesced small writes): what one request may carry in all.
BATCH_MAX_BYTES = 8 * 1024 * 1024
# A read batch: each read at most this long (the client coalesces only small reads).
BATCH_READ_MAX = 1024 * 1024
READ_BATCH_JSON_MAX = 256 * 1024


@dataclass
class ServerState:
    """What the routes need besides the store; `url` is filled in once the socket is bound."""

    store: NeedleStore
    data: DataConfig
    secret: bytes
    server_id: str
    verifier: Verifier
    url: str = ""
    serving: bool = True
    repairer: Repairer | None = None  # set once started: ``GET /repair`` reports its progress


def parse_crc(value: str | None) -> int:
    """X-Arkor-Crc32c: decimal (``3421780262``) or hex with a ``0x`` prefix (``0xcbf43926``)."""
    if value is None:
        raise BadRequest("the X-Arkor-Crc32c header is required", code="missing_checksum")
    text = value.strip().lower()
    try:
        hexa = text.startswith("0x")
        digits = text[2:] if hexa else text
        ascii_ok = digits.isascii() and digits.isalnum() and len(digits) <= 10
        crc = int(digits, 16 if hexa else 10) if ascii_ok else -1
    except ValueError:
        crc = -1
    if not 0 <= crc <= 0xFFFFFFFF:
        raise BadRequest(f"invalid X-Arkor-Crc32c {value[:40]!r}: decimal or 0x-hex CRC32C",
                         code="invalid_checksum")
    return crc


def needle_size(request: Request) -> int:
    """Content-Length, or X-Arkor-Size for a chunked body; both present must agree."""
    length = request.content_length
    declared = semantics.declared_length(request.headers, SIZE_HEADER)
    if declared is not None:
        if length is not None and declared != length:
            raise SizeMismatch(f"Content-Length {length} differs from X-Arkor-Size {declared}")
        return declared
    if length is None:
        raise LengthRequired("a needle needs Content-Length (or X-Arkor-Size with a chunked body)")
    return length


def check_signature(state: ServerState, method: str, raw_path: str, query: str, header: str | None,
                    crc32c: int | None = None) -> None:
    """A needle PUT is signed over its X-Arkor-Crc32c (which the store checks the body against);
    the other signed routes carry no body."""
    state.verifier.check(method, raw_path, query, header, digest_of(b"", crc32c))


def _query(request: Request) -> str:
    return request.scope.get("query_string", b"").decode("latin-1")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of the needle bytes a Range selects, by `semantics.parse_range`
    (malformed: ignored; unsatisfiable: 416); None to serve the whole needle."""
    span = semantics.parse_range(header, size)
    return None if span is None else (span[0], span[1] + 1)


def _needle_headers(size: int, crc: int, timestamp: int) -> list[tuple[str, str]]:
    return [
        (SIZE_HEADER, str(size)),
        (CRC_HEADER, str(crc)),
        ("x-arkor-timestamp", str(timestamp)),
        ("accept-ranges", "bytes"),
        ("content-type", "application/octet-stream"),
    ]


def build_app(
    config: Config, data: DataConfig, store: NeedleStore, server_id: str
) -> tuple[ASGIApp, ServerState]:
    secret = configured_secret(config.cluster.secret)
    state = ServerState(store=store, data=data, secret=secret, server_id=server_id,
                        verifier=Verifier(secret))
    router = StreamRouter()
    fid_route = r"/needles/(?P<fid>[^/]+)"

    def fid_of(request: Request) -> FileID:
        return FileID.parse(decoded(request.params["fid"]))

    async def put_needle(request: Request) -> Response:
        try:
            fid = fid_of(request)
            crc = parse_crc(request.headers.get(CRC_HEADER))
            check_signature(state, "PUT", request.raw_path, _query(request),
                            request.headers.get(SIGNATURE_HEADER), crc)
            if fid.group != data.group:
                raise BadRequest(f"file ID {fid} belongs to group {fid.group}, this server to {data.group}",
                                 code="wrong_group")
            size = needle_size(request)
            chunks = request.body_chunks(max_size=int(data.maxNeedleSize),
                                         chunk_timeout=float(data.bodyTimeout))
            created = await store.put(fid, chunks, size, crc)
        except ArkorError as exc:
            if not request._body_consumed:  # answering before reading the body: do not reuse
                exc.headers.setdefault("connection", "close")
            raise
        body = {"fid": str(fid), "size": size, "crc32c": crc, "created": created}
        return Response.json(body, status=201 if created else 200)

    async def put_batch(request: Request) -> Response:
        """Many small needles in one request (`batchwire`): each stored as by `put_needle`,
        concurrently, so one group-committed fsync covers them; one outcome per needle."""
        state.verifier.check("POST", request.raw_path, _query(request),
                             request.headers.get(SIGNATURE_HEADER), declared_digest(request.headers))
        body = await request.read_body(max_size=BATCH_MAX_BYTES, chunk_timeout=float(data.bodyTimeout))
        check_body(body, request.headers.get(CONTENT_SHA256_HEADER))
        items = batchwire.decode_needles(body, max_needle=int(data.maxNeedleSize))
        for fid, _view, _crc in items:
            if fid.group != data.group:
                raise BadRequest(f"file ID {fid} belongs to group {fid.group}, this server to {data.group}",
                                 code="wrong_group")
        async def put_one(item: tuple[FileID, memoryview, int]) -> dict[str, bool]:
            fid, view, crc = item
            return {"created": await store.put(fid, one_chunk(bytes(view)), len(view), crc)}

        outcomes = await each_alone(items, put_one)
        return Response.json({"results": [batchwire.outcome_json(o) for o in outcomes]})

    async def get_batch(request: Request) -> Response:
        """Many small reads in one request (`batchwire`): unsigned like GET, since each file ID
        carries its cookie. Each read is verified as by `get_needle`; one outcome per read."""
        raw = await request.read_json(max_size=READ_BATCH_JSON_MAX, chunk_timeout=float(data.bodyTimeout))
        items = batchwire.decode_reads(raw, max_length=BATCH_READ_MAX)
        async def read_one(item: tuple[FileID, int, int]) -> tuple[dict[str, int], bytes]:
            fid, offset, length = item
            entry = store.lookup(fid)
            if offset >= entry.size and entry.size:
                raise RangeNotSatisfiable(f"offset {offset} is past the needle's {entry.size} bytes")
            data = await store.get(fid, offset, length)
            return {"length": len(data), "size": entry.size, "crc32c": entry.crc32c}, data

        outcomes = await each_alone(items, read_one)
        head = {"results": [batchwire.outcome_json(o if isinstance(o, BaseException) else o[0])
                            for o in outcomes]}
        body = batchwire.encode_framed(head, [o[1] for o in outcomes if not isinstance(o, BaseException)])
        return Response(status=200, headers=[("content-type", batchwire.NEEDLE_BATCH_TYPE)], body=body)

    async def get_needle(request: Request) -> Response:
        fid = fid_of(request)
        try:
            entry = store.lookup(fid)
            span = parse_range(request.headers.get("range"), entry.size)
        except ArkorError as exc:
            exc.headers.setdefault("x-arkor-error", exc.code)
            raise
        headers = _needle_headers(entry.size, entry.crc32c, entry.timestamp)
        start, end = span if span is not None else (0, entry.size)
        status = 200
        if span is not None:
            status = 206
            headers.append(("content-range", f"bytes {start}-{end - 1}/{entry.size}"))
        headers.append(("content-length", str(end - start)))
        if request.method == "HEAD":
            return Response(status=status, headers=headers)
        _entry, chunks, close = await store.open_stream(fid, start, end)
        return Response(status=status, headers=headers, body=chunks, on_close=close)

    async def delete_needle(request: Request) -> Response:
        fid = fid_of(request)
        check_signature(state, "DELETE", request.raw_path, _query(request),
                        request.headers.get(SIGNATURE_HEADER))
        deleted = await store.delete(fid)
        return Response.json({"fid": str(fid), "deleted": deleted})

    router.add(fid_route, ["PUT"], put_needle)
    router.add(fid_route, ["GET", "HEAD"], get_needle)
    router.add(fid_route, ["DELETE"], delete_needle)
    router.add("/needle-batch", ["POST"], put_batch)
    router.add("/needle-reads", ["POST"], get_batch)
    return role_app("data", router, _control_app(state)), state


def _control_app(state: ServerState) -> Any:
    from quart import jsonify, request

    app = control_app("arkor.data", health={"server_id": state.server_id})
    store = state.store

    def signed(method: str) -> None:
        raw = request.scope.get("raw_path") or request.path.encode()
        check_signature(state, method, raw.decode("latin-1").split("?", 1)[0],
                        request.scope.get("query_string", b"").decode("latin-1"),
                        request.headers.get(SIGNATURE_HEADER))

    @app.get("/readyz")
    async def readyz() -> Any:
        if not state.serving:
            return jsonify({"error": {"code": "service_unavailable", "message": "shutting down"}}), 503
        return jsonify({"status": "ready"})

    @app.get("/repair")
    async def repair() -> Any:
        """Repair progress, unsigned (no cookies in it). Corrupt reads reach the repairer through
        the store's corruption hook, not through the HTTP answers."""
        if state.repairer is None:
            raise ArkorError("repair is not running", code="not_found", status=404)
        return jsonify(state.repairer.progress.to_json())

    @app.get("/status")
    async def status() -> Any:
        body = await store.status()
        body.update(server_id=state.server_id, group=state.data.group, url=state.url)
        return jsonify(body)

    @app.get("/needles")
    async def list_needles() -> Any:
        """Repair listing: signed, because it reveals cookies (and so read access)."""
        signed("GET")
        after_text = request.args.get("after", "0")
        if not (after_text.isascii() and after_text.isalnum() and len(after_text) <= 16):
            raise BadRequest("after is a hex key", code="invalid_argument")
        try:
            after = int(after_text, 16)
        except ValueError:
            raise BadRequest("after is a hex key", code="invalid_argument") from None
        limit = semantics.parse_uint(request.args.get("limit"), "limit", default=1000, minimum=1,
                                     maximum=LIST_LIMIT_MAX)
        entries = store.list_entries(after, limit)
        group = state.data.group
        needles = [
            {"fid": str(FileID(group, e.key, e.cookie)), "key": f"{e.key:x}", "cookie": e.cookie,
             "size": e.size, "crc32c": e.crc32c, "timestamp": e.timestamp, "deleted": e.deleted}
            for e in entries
        ]
        next_after = f"{entries[-1].key:x}" if len(entries) == limit else None
        return jsonify({"needles": needles, "next_after": next_after})

    @app.post("/compact")
    async def compact() -> Any:
        signed("POST")
        try:
            ratio = float(request.args.get("minGarbageRatio", "0"))
        except ValueError:
            raise BadRequest("minGarbageRatio must be a number", code="invalid_argument") from None
        return jsonify({"compacted": await store.compact(min_garbage_ratio=ratio)})

    return app
