"""Registry operations on multipart uploads: create, parts, complete (one manifest commit),
abort and listing.

Must not: reach data servers (the object server and the reaper do)."""


import json
import time
import uuid

from arkor.errors import (
    BadRequest,
    Conflict,
    NotFound,
    Unprocessable,
)
from arkor.model import (
    PARTS_META,
    Fragment,
    MultipartUpload,
    ObjectRecord,
    PartInfo,
    part_layout,
)
from arkor.names import check_bucket, check_object_key
from arkor.registry.objects import ObjectOps
from arkor.registry.ops_base import (
    MAX_PART_NUMBER,
    manifest_text,
    parse_manifest,
)
from arkor.registry.store import Tx
from arkor.transfer.registry_calls import MultipartCommit, ObjectCommit
from arkor.web.semantics import unquote_etag


class MultipartOps(ObjectOps):
    """Built on the object operations: completing an upload is one manifest commit."""

    # ------------------------------------------------------------------ multipart uploads

    async def create_multipart(
        self, bucket: str, key: str, content_type: str, metadata: dict[str, str]
    ) -> MultipartUpload:
        check_bucket(bucket)
        check_object_key(key)
        metadata_text = self._check_metadata(metadata)
        upload = MultipartUpload(
            upload_id=uuid.uuid4().hex, bucket=bucket, key=key,
            content_type=content_type or "application/octet-stream", metadata=dict(metadata),
            created=time.time(),
        )

        async def body(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO uploads (upload_id, bucket, okey, content_type, metadata, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (upload.upload_id, bucket, key.encode(), upload.content_type, metadata_text,
                 upload.created),
            )

        await self.store.write(body)
        return upload

    async def _upload(self, tx: Tx, upload_id: str, *, lock: bool = False) -> MultipartUpload:
        if not upload_id or len(upload_id) > 64:
            raise NotFound(f"no such upload {upload_id[:80]!r}", code="no_such_upload")
        suffix = self._dialect.for_update if lock else ""
        rows = await tx.query(
            "SELECT upload_id, bucket, okey, content_type, metadata, created FROM uploads "
            f"WHERE upload_id = ?{suffix}",
            (upload_id,),
        )
        if not rows:
            raise NotFound(f"no such upload {upload_id[:80]!r}", code="no_such_upload")
        r = rows[0]
        return MultipartUpload(
            upload_id=str(r[0]), bucket=str(r[1]), key=bytes(r[2]).decode(), content_type=str(r[3]),
            metadata=json.loads(r[4]), created=float(r[5]),
        )

    async def get_multipart(self, upload_id: str) -> MultipartUpload:
        async def body(tx: Tx) -> MultipartUpload:
            return await self._upload(tx, upload_id)

        return await self.store.read(body)

    async def _parts(self, tx: Tx, upload_id: str) -> list[PartInfo]:
        rows = await tx.query(
            "SELECT part_number, size, etag, manifest, modified FROM parts WHERE upload_id = ? "
            "ORDER BY part_number",
            (upload_id,),
        )
        return [
            PartInfo(part_number=int(r[0]), size=int(r[1]), etag=str(r[2]),
                     fragments=parse_manifest(str(r[3])), modified=float(r[4]))
            for r in rows
        ]

    async def put_part(self, upload_id: str, part: PartInfo) -> None:
        if not 1 <= part.part_number <= MAX_PART_NUMBER:
            raise BadRequest(
                f"part number must be between 1 and {MAX_PART_NUMBER}", code="invalid_part_number"
            )
        if part.size < 0 or not part.etag or len(part.etag) > 128:
            raise BadRequest("invalid part size or etag", code="invalid_manifest")
        self._check_fragments(part.fragments)
        if sum(f.size for f in part.fragments) != part.size:
            raise BadRequest("the fragments' sizes do not add up to the part size", code="invalid_manifest")

        async def body(tx: Tx) -> None:
            await self._upload(tx, upload_id, lock=True)
            rows = await tx.query(
                "SELECT manifest FROM parts WHERE upload_id = ? AND part_number = ?"
                + self._dialect.for_update,
                (upload_id, part.part_number),
            )
            old = parse_manifest(str(rows[0][0])) if rows else []
            await self._adjust_refs(tx, part.fragments, old, "part_replaced")
            cols = ("upload_id", "part_number", "size", "etag", "manifest", "modified")
            await tx.execute(
                self._dialect.upsert("parts", cols, ("upload_id", "part_number")),
                (upload_id, part.part_number, part.size, part.etag, manifest_text(part.fragments),
                 time.time()),
            )

        try:
            await self.store.write(body)
        except (NotFound, Conflict):
            await self.discard_fragments(part.fragments)
            raise

    async def list_parts(self, upload_id: str) -> list[PartInfo]:
        async def body(tx: Tx) -> list[PartInfo]:
            await self._upload(tx, upload_id)
            return await self._parts(tx, upload_id)

        return await self.store.read(body)

    async def complete_multipart(self, commit: MultipartCommit) -> ObjectRecord:
        upload_id, parts = commit.upload_id, commit.parts
        if not parts:
            raise Unprocessable("at least one part is required", code="invalid_part")

        async def body(tx: Tx) -> ObjectRecord:
            upload = await self._upload(tx, upload_id, lock=True)
            stored = {p.part_number: p for p in await self._parts(tx, upload_id)}
            fragments: list[Fragment] = []
            size = 0
            previous = 0
            for number, part_etag in parts:
                if number <= previous:
                    raise Unprocessable(
                        "parts must be listed in ascending order", code="invalid_part_order"
                    )
                previous = number
                part = stored.get(number)
                if part is None or unquote_etag(part_etag) != unquote_etag(part.etag):
                    raise Unprocessable(
                        f"part {number} was not uploaded or its ETag differs", code="invalid_part"
                    )
                fragments.extend(part.fragments)
                size += part.size
            layout = part_layout([stored[n].size for n, _ in parts])
            metadata = {**upload.metadata, PARTS_META: layout} if layout else upload.metadata
            if len(json.dumps(metadata, separators=(",", ":")).encode()) > self.max_metadata_bytes:
                metadata = upload.metadata  # the layout is a convenience: never fail for it
            record = ObjectRecord(
                bucket=upload.bucket, key=upload.key, size=size, etag=commit.etag,
                content_type=upload.content_type, metadata=metadata, fragments=fragments,
            )
            metadata_text = self._check_record(record)
            every_part = [f for p in stored.values() for f in p.fragments]
            result = await self._commit_in_tx(
                tx, ObjectCommit(record, commit.when), metadata_text, every_part, "multipart"
            )
            await tx.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            await tx.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            return result

        return await self.store.write(body)

    async def abort_multipart(self, upload_id: str) -> None:
        async def body(tx: Tx) -> None:
            await self._upload(tx, upload_id, lock=True)
            every_part = [f for p in await self._parts(tx, upload_id) for f in p.fragments]
            await self._adjust_refs(tx, [], every_part, "abort")
            await tx.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            await tx.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

        await self.store.write(body)

    async def idle_multipart(self, before: float, limit: int) -> list[str]:
        """Uploads created before `before` with no part stored since: never completed, and
        what `object.multipartExpiry` lets the reaper abort."""

        async def body(tx: Tx) -> list[str]:
            rows = await tx.query(
                "SELECT u.upload_id FROM uploads u WHERE u.created < ? AND NOT EXISTS "
                "(SELECT 1 FROM parts p WHERE p.upload_id = u.upload_id AND p.modified >= ?) "
                "LIMIT ?",
                (before, before, limit),
            )
            return [str(r[0]) for r in rows]

        return await self.store.read(body)

    async def list_multipart(self, bucket: str) -> list[MultipartUpload]:
        check_bucket(bucket)

        async def body(tx: Tx) -> list[MultipartUpload]:
            rows = await tx.query(
                "SELECT upload_id, bucket, okey, content_type, metadata, created FROM uploads "
                "WHERE bucket = ? ORDER BY okey, created LIMIT 10000",
                (bucket,),
            )
            return [
                MultipartUpload(upload_id=str(r[0]), bucket=str(r[1]), key=bytes(r[2]).decode(),
                                content_type=str(r[3]), metadata=json.loads(r[4]),
                                created=float(r[5]))
                for r in rows
            ]

        return await self.store.read(body)

