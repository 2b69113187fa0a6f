"""A lean HTTP/1.1 client for the roles' internal calls (see `pool.py` for why).

Charter: `protocol` frames bytes with no I/O; `pool` owns sockets, TLS, keep-alive and timeouts.
Must not: import anything of Arkor's above the ground floor (it is used by transfer/ and roles).
"""

from arkor.httpclient.pool import LeanClient, LeanResponse, Timeouts
from arkor.httpclient.protocol import ProtocolError

__all__ = ["LeanClient", "LeanResponse", "ProtocolError", "Timeouts"]
