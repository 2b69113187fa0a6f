"""Where LFS objects live in the object store: one reserved bucket, one key prefix per repository.

A repository is ``namespace/repo`` (from ``/{namespace}/{repo}[.git]/info/lfs``). Its objects are
stored as ``git-lfs/{namespace}/{repo}/{oid}``: namespace and repo are single path segments (no
``/``) and the oid is exactly 64 hex digits, so the mapping is injective and two repositories can
never share or overwrite each other's objects, even for the same oid. ``foo`` and ``foo.git`` name
the same repository (git's own convention). The bucket is reserved for LFS (see docs/specs/API.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from arkor.errors import NotFound

LFS_BUCKET = "git-lfs"
# Single URL path segments; "v1" is the public API's prefix and cannot be a namespace.
RESERVED_NAMESPACES = frozenset({"v1", "healthz", "metrics"})
# The URL forms the client uses: <remote>.git/info/lfs (default) and <remote>/info/lfs.
_SEG = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}"
_SEGMENT = re.compile(_SEG)
LFS_PREFIX = (
    r"/(?!(?:v1|healthz|metrics)/)(?P<ns>" + _SEG + r")/(?P<repo>" + _SEG + r"?)(?:\.git)?/info/lfs"
)


@dataclass(frozen=True, slots=True)
class Repo:
    namespace: str
    name: str

    @property
    def full_name(self) -> str:
        """``namespace/repo`` as used in access lists and lock records."""
        return f"{self.namespace}/{self.name}"

    def object_key(self, oid: str) -> str:
        return f"{self.namespace}/{self.name}/{oid}"

    def base_path(self) -> str:
        """The canonical LFS endpoint path of this repository (used in action hrefs)."""
        return f"/{self.namespace}/{self.name}.git/info/lfs"


def lfs_repo_of_key(key: str) -> str:
    """The repository (``namespace/repo``) a key of the git-lfs bucket belongs to: what v1 reads of
    that bucket are authorized against. A key outside the layout names no repository (a resource
    only ``*`` matches)."""
    namespace, _, rest = key.partition("/")
    name, _, oid = rest.partition("/")
    if _SEGMENT.fullmatch(namespace) and _SEGMENT.fullmatch(name) and oid and "/" not in oid:
        return f"{namespace}/{name}"
    return f"{LFS_BUCKET}:{key}"


def repo_from_params(namespace: str, name: str) -> Repo:
    """Validate route captures; NotFound for names the scheme does not allow."""
    if (
        namespace in RESERVED_NAMESPACES
        or not _SEGMENT.fullmatch(namespace)
        or not _SEGMENT.fullmatch(name)
        or name.endswith(".git")
    ):
        raise NotFound(f"no Git LFS repository {namespace[:100]}/{name[:100]}", code="no_such_repo")
    return Repo(namespace, name)
