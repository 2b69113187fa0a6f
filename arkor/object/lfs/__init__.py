"""Git LFS server on the object server: Batch API, basic transfer, verify and File Locking.

Protocol logic (validation, response shapes, access decisions, the object naming scheme) lives in
`protocol`, `auth` and `storage`, free of I/O so it can be checked on its own; `routes` is the thin
I/O layer that reads requests, calls `ObjectService` / the registry and streams bodies.
"""
