"""The Arkor Python SDK (async on trio: `ArkorClient`; blocking: `arkor.client.sync.SyncClient`)."""

from arkor.client.errors import ConnectionFailed, IntegrityError
from arkor.client.sdk import ArkorClient, ObjectListing, ObjectReader
from arkor.client.types import BucketSummary, ObjectInfo

__all__ = [
    "ArkorClient",
    "BucketSummary",
    "ConnectionFailed",
    "IntegrityError",
    "ObjectInfo",
    "ObjectListing",
    "ObjectReader",
]
