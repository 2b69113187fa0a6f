"""The two interfaces the transfer engine runs on: a registry and a replica (one data server).

Each has two implementations with identical behaviour:
- over HTTP (`arkor.transfer.registry_client.HttpRegistry`, `arkor.transfer.data_client.HttpReplica`),
  used by separate processes and the SDK tooling;
- in-process (the registry's `RegistryService` and the data server's `LocalReplica`), wired by
  `arkor allinone` so that one process makes no HTTP hops to itself.

Errors are `arkor.errors.ArkorError` subclasses with the same codes whichever implementation raised
them. Every method may be cancelled at any await point; an implementation must leave no state
behind that a retry cannot cope with.
"""

from __future__ import annotations

from typing import Protocol, Unpack

from arkor.fileid import FileID
from arkor.model import (
    BucketInfo,
    Fragment,
    GroupInfo,
    KeyRange,
    LfsLock,
    ListPage,
    MultipartUpload,
    NeedleInfo,
    ObjectRecord,
    PartInfo,
    ServerInfo,
)
from arkor.transfer.registry_calls import ListOptions, LockOptions, MultipartCommit, ObjectCommit


class Replica(Protocol):
    """One data server. Needles are whole in memory here: fragments are bounded in size."""

    url: str

    async def put_needle(self, fid: FileID, data: bytes, crc32c: int) -> None:
        """Store and fsync. Idempotent for the same fid and content; ChecksumMismatch if `data`
        does not match `crc32c`; Conflict if the key holds other content; InsufficientStorage."""

    async def get_needle(
        self, fid: FileID, offset: int = 0, length: int | None = None, *, size: int | None = None,
        crc32c: int | None = None,
    ) -> bytes:
        """The needle's bytes [offset, offset+length), verified against the stored CRC32C; a
        whole read (offset 0, no length) also against `crc32c` when given (the manifest's), so
        the caller need not checksum the bytes again. `size`: the needle's size when the caller
        knows it (the manifest's), so that a replica may coalesce small reads. NotFound (unknown
        key, wrong cookie, deleted); CorruptNeedle when the copy is bad or not the one named."""

    async def head_needle(self, fid: FileID) -> NeedleInfo:
        """Size and CRC32C without the data. NotFound as for get_needle."""

    async def delete_needle(self, fid: FileID) -> None:
        """Tombstone the needle; deleting an absent needle succeeds."""


class Registry(Protocol):
    """The registry center's operations, as the object server and data servers use them."""

    # --- membership ------------------------------------------------------------------------
    async def heartbeat(self, server: ServerInfo) -> None:
        """Register or refresh a data server (idempotent upsert)."""

    async def groups(self) -> list[GroupInfo]:
        """Every group with its members' states; `writable` tells where new fragments may go."""

    # --- file IDs ---------------------------------------------------------------------------
    async def lease_keys(self, count: int) -> KeyRange:
        """A range of needle keys never handed out before or again (across restarts and
        registry processes)."""

    # --- objects ----------------------------------------------------------------------------
    async def commit_object(self, commit: ObjectCommit) -> ObjectRecord:
        """Atomically make `commit.record` the current version of (bucket, key), creating the
        bucket if needed (`create_bucket=False`: NotFound no_such_bucket instead, as S3 wants).
        When `commit.when` fails: PreconditionFailed, and the new fragments are queued for reclaim
        by the registry. The replaced version's fragments are queued for reclaim.
        Returns the record as stored (version and times filled in)."""

    async def get_object(self, bucket: str, key: str) -> ObjectRecord:
        """The current version with its manifest. NotFound (code no_such_key / no_such_bucket)."""

    async def delete_object(self, bucket: str, key: str) -> ObjectRecord:
        """Remove the current version and queue its fragments for reclaim; returns what was
        deleted. NotFound (no_such_key) when absent."""

    async def list_objects(self, bucket: str, **options: Unpack[ListOptions]) -> ListPage:
        """One page of `ListQuery(bucket, **options)`. NotFound (no_such_bucket)."""

    async def list_buckets(self) -> list[BucketInfo]:
        ...

    async def create_bucket(self, bucket: str) -> bool:
        """Create an empty bucket (S3 CreateBucket); False when it already existed."""

    async def delete_bucket(self, bucket: str) -> None:
        """Conflict (bucket_not_empty) unless empty; NotFound (no_such_bucket)."""

    async def discard_fragments(self, fragments: list[Fragment]) -> None:
        """Queue needles of a failed or abandoned upload for reclaim from their data servers."""

    # --- multipart uploads --------------------------------------------------------------------
    async def create_multipart(
        self, bucket: str, key: str, content_type: str, metadata: dict[str, str]
    ) -> MultipartUpload:
        ...

    async def get_multipart(self, upload_id: str) -> MultipartUpload:
        """NotFound (no_such_upload)."""

    async def put_part(self, upload_id: str, part: PartInfo) -> None:
        """Record (or replace: old fragments are queued for reclaim) one part."""

    async def list_parts(self, upload_id: str) -> list[PartInfo]:
        ...

    async def complete_multipart(self, commit: MultipartCommit) -> ObjectRecord:
        """Commit the listed parts, in order, as one object atomically; fragments of unlisted parts
        are queued for reclaim. Unprocessable (invalid_part) when a part is missing or its ETag
        differs. `commit.when` as for commit_object.
        The object's part sizes are kept in its `PARTS_META` metadata (model.part_layout)."""

    async def abort_multipart(self, upload_id: str) -> None:
        """Drop the upload and queue all its parts' fragments for reclaim."""

    async def list_multipart(self, bucket: str) -> list[MultipartUpload]:
        ...

    # --- Git LFS locks --------------------------------------------------------------------------
    async def create_lock(self, repo: str, path: str, owner: str, ref: str | None) -> LfsLock:
        """Conflict (lock_exists) carrying the existing lock's id in the message when taken."""

    async def list_locks(
        self, repo: str, **options: Unpack[LockOptions]
    ) -> tuple[list[LfsLock], str | None]:
        """The locks of `LockQuery(repo, **options)`, and the cursor for the next page (None at
        the end)."""

    async def delete_lock(
        self, repo: str, lock_id: str, owner: str, *, force: bool = False
    ) -> LfsLock:
        """NotFound unknown id; Forbidden when owned by someone else and not `force`."""
