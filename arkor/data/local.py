"""`LocalReplica`: the `contracts.Replica` interface over an in-process `NeedleStore`.

`arkor allinone` hands these to its object server so that writes to its own data servers make no
HTTP hop; behaviour and errors are those of `HttpReplica` against the same store.
"""

from __future__ import annotations

from arkor.data.store import NeedleStore, one_chunk
from arkor.errors import CorruptNeedle
from arkor.fileid import FileID
from arkor.model import NeedleInfo


class LocalReplica:
    def __init__(self, store: NeedleStore, url: str = "") -> None:
        self.store = store
        self.url = url

    def __repr__(self) -> str:
        return f"LocalReplica({self.url or self.store.directory})"

    async def put_needle(self, fid: FileID, data: bytes, crc32c: int) -> None:
        await self.store.put(fid, one_chunk(data), len(data), crc32c)

    async def get_needle(
        self, fid: FileID, offset: int = 0, length: int | None = None, *, size: int | None = None,
        crc32c: int | None = None,
    ) -> bytes:
        data = await self.store.get(fid, offset, length)  # verified against the stored CRC32C
        if crc32c is not None and offset == 0 and length is None and self.store.lookup(fid).crc32c != crc32c:
            raise CorruptNeedle(f"needle {fid} is not the one its manifest names (CRC32C differs)")
        return data

    async def head_needle(self, fid: FileID) -> NeedleInfo:
        meta = self.store.lookup(fid)
        return NeedleInfo(fid=str(fid), size=meta.size, crc32c=meta.crc32c, timestamp=float(meta.timestamp))

    async def delete_needle(self, fid: FileID) -> None:
        await self.store.delete(fid)
