"""The compact in-memory needle index: key -> (volume, offset, size, cookie, crc, time, deleted).

Why not a dict: a dict of tuples costs about 160 B per needle (STACK-NOTES), so 10 million needles
would need 1.6 GB. Here the bulk of the entries live in six parallel, key-sorted `array` columns
(8+8+8+4+4+4 = 36 B per needle) searched with `bisect`. New keys larger than every indexed key (the
common case: the registry hands keys out in increasing ranges) are appended in place; other new
keys go to a small overflow dict that is merged into the columns in one linear pass when it grows
past `merge_threshold`. Updates of indexed keys (delete, compaction move) are done in place.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

_OFFSET_BITS = 48
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1


@dataclass(frozen=True, slots=True)
class Entry:
    """Where one needle lives; `offset` is the needle's start (its header) in the volume."""

    key: int
    volume: int
    offset: int
    size: int
    cookie: int
    crc32c: int
    timestamp: int  # Unix seconds
    deleted: bool = False


def _pack(e: Entry) -> tuple[int, int, int, int, int, int]:
    return (
        e.key,
        (e.volume << _OFFSET_BITS) | e.offset,
        (e.size << 1) | int(e.deleted),
        e.cookie,
        e.crc32c,
        e.timestamp & 0xFFFFFFFF,
    )


def _unpack(key: int, loc: int, size: int, cookie: int, crc: int, ts: int) -> Entry:
    return Entry(key, loc >> _OFFSET_BITS, loc & _OFFSET_MASK, size >> 1, cookie, crc, ts, bool(size & 1))


class _Columns:
    """The six parallel columns, in `_pack` order, of the index and of its builder."""

    def __init__(self) -> None:
        self.keys = array("Q")
        self.locs = array("Q")  # volume << _OFFSET_BITS | offset
        self.sizes = array("Q")  # size << 1 | deleted
        self.cookies = array("I")
        self.crcs = array("I")
        self.stamps = array("I")

    def _columns(self) -> tuple[array, array, array, array, array, array]:
        return self.keys, self.locs, self.sizes, self.cookies, self.crcs, self.stamps

    def _set_columns(self, columns: Sequence[array]) -> None:
        self.keys, self.locs, self.sizes, self.cookies, self.crcs, self.stamps = columns


class NeedleIndex(_Columns):
    """Not thread-safe: used from the trio thread only."""

    def __init__(self, merge_threshold: int = 8192) -> None:
        super().__init__()
        self.overflow: dict[int, tuple[int, int, int, int, int, int]] = {}
        self.merge_threshold = merge_threshold

    def __len__(self) -> int:
        return len(self.keys) + len(self.overflow)

    def get(self, key: int) -> Entry | None:
        packed = self.overflow.get(key)
        if packed is not None:
            return _unpack(*packed)
        keys = self.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return _unpack(key, self.locs[i], self.sizes[i], self.cookies[i], self.crcs[i], self.stamps[i])
        return None

    def set(self, entry: Entry) -> None:
        packed = _pack(entry)
        key = entry.key
        if key in self.overflow:
            self.overflow[key] = packed
            return
        keys = self.keys
        n = len(keys)
        if n == 0 or key > keys[n - 1]:
            for column, value in zip(self._columns(), packed, strict=True):
                column.append(value)
            return
        i = bisect_left(keys, key)
        if keys[i] == key:
            for column, value in zip(self._columns()[1:], packed[1:], strict=True):
                column[i] = value
            return
        self.overflow[key] = packed
        if len(self.overflow) >= self.merge_threshold:
            self.merge()

    def merge(self) -> None:
        """Fold the overflow dict into the sorted columns: one pass, C-level slice copies."""
        if not self.overflow:
            return
        items = sorted(self.overflow.items())
        old = self._columns()
        new = tuple(array(col.typecode) for col in old)
        prev = 0
        for key, packed in items:
            pos = bisect_left(old[0], key, prev)
            for n_col, o_col, value in zip(new, old, packed, strict=True):
                if pos > prev:
                    n_col.extend(o_col[prev:pos])
                n_col.append(value)
            prev = pos
        for n_col, o_col in zip(new, old, strict=True):
            n_col.extend(o_col[prev:])
        self._set_columns(new)
        self.overflow = {}

    def entries_after(self, after: int, limit: int) -> list[Entry]:
        """Up to `limit` entries with key > `after`, in key order (for the repair listing)."""
        self.merge()
        keys = self.keys
        start = bisect_left(keys, after + 1)
        out = []
        for i in range(start, min(start + limit, len(keys))):
            out.append(
                _unpack(keys[i], self.locs[i], self.sizes[i], self.cookies[i], self.crcs[i], self.stamps[i])
            )
        return out

    def __iter__(self) -> Iterator[Entry]:
        """Every entry in key order (merges first; do not mutate while iterating)."""
        self.merge()
        for i in range(len(self.keys)):
            yield _unpack(
                self.keys[i], self.locs[i], self.sizes[i], self.cookies[i], self.crcs[i], self.stamps[i]
            )

    def usage(self) -> tuple[dict[int, int], int, int]:
        """(live padded bytes per volume, live needles, live data bytes), from the columns."""
        self.merge()
        per_volume: dict[int, int] = {}
        needles = 0
        data_bytes = 0
        header_etc = 40 + 4 + 7  # header + trailer + worst padding, as padded_length computes
        for loc, packed in zip(self.locs, self.sizes, strict=True):
            vid = loc >> _OFFSET_BITS
            size = packed >> 1
            if packed & 1:
                size = 0
            else:
                needles += 1
                data_bytes += size
            per_volume[vid] = per_volume.get(vid, 0) + ((size + header_etc) & ~7)
        return per_volume, needles, data_bytes

    def memory_bytes(self) -> int:
        """Approximate bytes held: column buffers (allocated, not just used) plus the overflow dict."""
        import sys

        total = sum(sys.getsizeof(col) for col in self._columns())
        if self.overflow:
            total += sys.getsizeof(self.overflow) + len(self.overflow) * (
                sys.getsizeof((0,) * 6) + 6 * 32
            )
        return total

    @classmethod
    def build(cls, columns: IndexBuilder) -> NeedleIndex:
        """An index from replayed entries: the LAST entry of each key wins (later needles supersede)."""
        index = cls()
        keys = columns.keys
        n = len(keys)
        if n == 0:
            return index
        ordered = all(keys[i] < keys[i + 1] for i in range(n - 1))
        src = columns._columns()
        if ordered:  # copy to exact size (appending over-allocates by up to 1/8)
            built = [array(col.typecode, col) for col in src]
            index._set_columns(built)
            return index
        order = sorted(range(n), key=keys.__getitem__)  # stable: replay order kept within a key
        # keep the last of each run of equal keys
        keep = [order[j] for j in range(n) if j == n - 1 or keys[order[j]] != keys[order[j + 1]]]
        built = [array(col.typecode, map(col.__getitem__, keep)) for col in src]
        index._set_columns(built)
        return index


class IndexBuilder(_Columns):
    """Columns filled in replay order (volume id, then offset) while the store opens."""

    def add(self, entry: Entry) -> None:
        self.add_raw(entry.key, entry.volume, entry.offset, entry.size, entry.cookie, entry.crc32c,
                     entry.timestamp, entry.deleted)

    def add_raw(self, key: int, volume: int, offset: int, size: int, cookie: int, crc: int,
                timestamp: int, deleted: bool) -> None:
        self.keys.append(key)
        self.locs.append((volume << _OFFSET_BITS) | offset)
        self.sizes.append((size << 1) | deleted)
        self.cookies.append(cookie)
        self.crcs.append(crc)
        self.stamps.append(timestamp & 0xFFFFFFFF)

    def add_records(self, volume: int, records: Iterable[tuple[int, int, int, int, int, int, int]]) -> None:
        """Add (offset, key, cookie, size, crc, timestamp_ns, flags) records of one volume."""
        keys, locs, sizes = self.keys.append, self.locs.append, self.sizes.append
        cookies, crcs, stamps = self.cookies.append, self.crcs.append, self.stamps.append
        base = volume << _OFFSET_BITS
        for offset, key, cookie, size, crc, ts, flags in records:
            keys(key)
            locs(base | offset)
            sizes((size << 1) | (flags & 1))  # flag 1 is the tombstone bit of the needle format
            cookies(cookie)
            crcs(crc)
            stamps((ts // 1_000_000_000) & 0xFFFFFFFF)
