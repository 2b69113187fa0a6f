"""RegistryService: the `Registry` contract over a metadata store (source of truth) and a KV (caches).

Durable invariants, each kept inside one store transaction:
- a needle key is handed out once (`sequences` row bumped atomically);
- a manifest commit or overwrite is one transaction, with its preconditions checked inside it;
- every needle key a manifest or a multipart part references has a `needles` row whose `refs` counts
  the references; when it drops to zero the row turns 'reclaimed' (final) and the needle is queued in
  `reclaim`; a commit naming a reclaimed key fails, and the orphan sweeper only claims keys that have
  no row at all. So a needle is never both committed and reclaimed.
"""

from __future__ import annotations

from arkor.registry.locks import LockOps
from arkor.registry.membership import MembershipOps
from arkor.registry.multipart import MultipartOps
from arkor.registry.ops_base import MAX_LEASE, MAX_LIST_LIMIT, MAX_PART_NUMBER, MetadataTooLarge

__all__ = ["MAX_LEASE", "MAX_LIST_LIMIT", "MAX_PART_NUMBER", "MetadataTooLarge", "RegistryService"]


class RegistryService(MembershipOps, MultipartOps, LockOps):
    """Implements `arkor.transfer.contracts.Registry` in-process (used by the HTTP app and by
    `arkor allinone`). Its operations are split by concern, one module each (as SeaweedFS splits a
    volume's operations by file): membership, needles (leases, discards, reclaim queue), objects,
    multipart and locks (multipart builds on objects, objects on needles), over the shared state
    and checks of `ops_base.RegistryBase`."""
