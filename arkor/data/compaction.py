"""Compaction: rewrite a sealed volume without its dead needles while reads and writes go on.

The copy runs in a worker thread from a plan of the volume's indexed needles (offset order), into
a new *revision* of the volume; then, in one step with no await, the store swaps the file and
re-points the index at the new offsets of the entries that did not change meanwhile. Readers that
hold the old file keep reading it (the renamed-over inode stays readable) and the last closes it.
Needles are copied as they are: a corrupt needle stays detectably corrupt.

What lives here: choosing volumes, the crash-safe file rewrite and the swap. What must not: the
write or read paths, or the index-file layout (`idxfile`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import trio

from arkor.data import needle as nd
from arkor.data.commit import group_commit
from arkor.data.fileops import pread_exact
from arkor.data.idxfile import Record, idx_path, write_index
from arkor.data.index import Entry
from arkor.data.volume import COPY_CHUNK, Volume, VolumeFile, dat_path

if TYPE_CHECKING:
    from arkor.data.store import NeedleStore

log = logging.getLogger(__name__)


def garbage(volume: Volume) -> int:
    return volume.end - nd.SUPERBLOCK_SIZE - volume.live_bytes


async def compact(
    store: NeedleStore, min_garbage_ratio: float, min_active_fill: float
) -> list[dict[str, Any]]:
    """See `NeedleStore.compact`. Failed (read-only) volumes are left alone until checked."""
    active = store.active
    assert active is not None
    big_enough = active.end >= min_active_fill * store.volume_size
    if big_enough and garbage(active) > 0 and garbage(active) >= min_garbage_ratio * active.end:
        await store.rotate_from(active)
    done = []
    for vid in sorted(store.volumes):
        volume = store.volumes[vid]
        waste = garbage(volume)
        if not volume.sealed or volume.failed or waste <= 0 or waste < min_garbage_ratio * volume.end:
            continue
        done.append(await _compact_volume(store, volume))
    return done


async def _compact_volume(store: NeedleStore, volume: Volume) -> dict[str, Any]:
    # sealed: no new reservation can start; wait (bounded by the body timeout) for writes in flight
    while volume.inflight:  # noqa: ASYNC110 - a counter, not a condition anyone signals
        await trio.sleep(0.01)
    # One more sync through the group commit (its failure policy included): everything durable
    # and no index record pending for the offsets about to change.
    volume.write_gen += 1
    await group_commit(volume, volume.write_gen, store.run, store.label)
    vid = volume.volume_id
    plan = [e for e in store.index if e.volume == vid]
    plan.sort(key=lambda e: e.offset)
    before = volume.end
    started = time.perf_counter()
    volume.compacting = True
    try:
        new_fd, new_idx_fd, new_end, moved = await store.run(_compact_files, volume, plan)
    finally:
        volume.compacting = False
    # swap (no await from here on: readers and the index see old or new, never a mix)
    old_file = volume.file
    volume.file = VolumeFile(new_fd)
    old_file.retire()
    os.close(volume.idx_fd)
    volume.idx_fd = new_idx_fd
    volume.revision += 1
    volume.end = new_end
    live = 0
    for entry, new_offset in zip(plan, moved, strict=True):
        current = store.index.get(entry.key)
        if current is not None and current.volume == vid and current.offset == entry.offset:
            store.index.set(replace(current, offset=new_offset))
            live += nd.padded_length(0 if current.deleted else current.size)
    volume.live_bytes = live
    result = {"volume": vid, "before": before, "after": new_end, "needles": len(plan),
              "seconds": round(time.perf_counter() - started, 3)}
    log.info("compacted %s", result)
    return result


def _compact_files(volume: Volume, plan: list[Entry]) -> tuple[int, int, int, list[int]]:
    """Copy the needles in `plan` into a new revision of the volume; crash-safe at every step.

    1. write ``.cpd`` (new data) and ``.cpx`` (its index), fsync both (a crash leaves the old
       volume intact; leftovers are deleted at the next start);
    2. rename ``.cpd`` over ``.dat`` and fsync the directory: the commit point (a crash after it
       leaves a stale ``.idx`` whose revision no longer matches, so the volume is rescanned);
    3. rename ``.cpx`` over ``.idx``.
    A failed fsync anywhere abandons the attempt (the old volume stays in use); the next round
    starts again from fresh files, never re-syncing these.
    """
    directory, vid, ops = volume.directory, volume.volume_id, volume.ops
    revision = volume.revision + 1
    cpd = dat_path(directory, vid).with_suffix(".cpd")
    cpx = idx_path(directory, vid).with_suffix(".cpx")
    src = volume.file.fd
    fd = os.open(cpd, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        ops.pwrite_all(fd, nd.pack_superblock(vid, revision), 0)
        pos = nd.SUPERBLOCK_SIZE
        moved = []
        records = []
        for entry in plan:
            length = nd.padded_length(0 if entry.deleted else entry.size)
            header = nd.parse_header(pread_exact(src, nd.HEADER_SIZE, entry.offset))
            if header is not None:
                length = header.length
            done = 0
            while done < length:  # copied as is: a corrupt needle stays detectably corrupt
                chunk = pread_exact(src, min(COPY_CHUNK, length - done), entry.offset + done)
                if not chunk:
                    break
                ops.pwrite_all(fd, chunk, pos + done)
                done += len(chunk)
            moved.append(pos)
            records.append(Record(pos, entry.key, entry.cookie, 0 if entry.deleted else entry.size,
                                  entry.crc32c, entry.timestamp * 1_000_000_000,
                                  nd.FLAG_TOMBSTONE if entry.deleted else 0).pack())
            pos += length
        ops.fsync(fd)
        write_index(cpx, vid, revision, records, ops)
        os.replace(cpd, dat_path(directory, vid))
        ops.fsync_dir(directory)
        os.replace(cpx, idx_path(directory, vid))
        ops.fsync_dir(directory)
        idx_fd = os.open(idx_path(directory, vid), os.O_WRONLY | os.O_APPEND)
    except BaseException:
        os.close(fd)
        cpd.unlink(missing_ok=True)
        cpx.unlink(missing_ok=True)
        raise
    return fd, idx_fd, pos, moved
