"""Prometheus metric families of every role, on the ground floor: no web, no engine imports.

The volume engine (`arkor.data`), the transfer engine and the registry record into these; the web
layer (`arkor.web.metrics`) only counts HTTP requests and serves ``GET /metrics``. One
`arkor allinone` process therefore exports one coherent set, labelled by role or server. What must
not live here: anything that knows of ASGI, HTTP or a role's objects.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

FSYNC_SECONDS = Histogram(
    "arkor_data_fsync_seconds", "Duration of one (grouped) fsync", ["server"], buckets=LATENCY_BUCKETS
)
FSYNC_GROUP_SIZE = Histogram(
    "arkor_data_fsync_group_writes", "Writes acknowledged by one fsync", ["server"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
FSYNC_FAILURES = Counter(
    "arkor_data_fsync_failures_total", "Failed fsyncs (the volume turns read-only)", ["server"]
)
REPLICA_UP = Gauge("arkor_replica_up", "1 when a data server is up, by group", ["group", "server"])
REPAIR_NEEDLES = Counter(
    "arkor_repair_needles_total", "Needles copied to a replica by repair", ["server"]
)
REPAIR_BYTES = Counter("arkor_repair_bytes_total", "Bytes copied by repair", ["server"])
REPAIR_PENDING = Gauge("arkor_repair_pending_needles", "Needles still to copy", ["server"])
NEEDLES_LOST = Gauge(
    "arkor_needles_lost",
    "Needles corrupt here that no replica could replace after bounded retries", ["server"],
)
SCRUB_NEEDLES = Counter("arkor_scrub_needles_total", "Needles verified by the scrubber", ["server"])
SCRUB_ERRORS = Counter(
    "arkor_scrub_corrupt_total", "Needles found corrupt (by scrub or read)", ["server"]
)
RECLAIM_BACKLOG = Gauge(
    "arkor_reclaim_backlog_fragments", "Fragments queued for deletion from data servers"
)
RECLAIMED = Counter("arkor_reclaimed_fragments_total", "Fragments deleted by the reaper", ["reason"])

# Transfer engine (object servers): health of the replicas as this process sees them.
TRANSFER_CIRCUIT_OPEN = Gauge(
    "arkor_transfer_circuit_open", "1 while writes avoid this replica and reads try it last",
    ["replica"],
)
TRANSFER_HEDGED_READS = Counter(
    "arkor_transfer_hedged_reads_total", "Fragment reads raced on other replicas after the threshold"
)
TRANSFER_ABANDONED_WRITES = Counter(
    "arkor_transfer_abandoned_writes_total",
    "Fragment writes moved to another group (replica failed, timed out or lagged)", ["reason"],
)
COALESCED_BATCH_ITEMS = Histogram(
    "arkor_coalesced_batch_items", "Calls carried by one coalesced internal request, by kind",
    ["kind"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
TRANSFER_CLEANUP = Counter(
    "arkor_transfer_cleanup_total", "Background cleanups of abandoned needle copies, by outcome",
    ["outcome"],
)
