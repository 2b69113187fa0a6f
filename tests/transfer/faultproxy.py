"""A tiny TCP proxy that misbehaves on cue, for loopback network-fault tests without namespaces.

Modes: "pass" forwards both ways; "delay" adds `delay` seconds before every chunk that travels back
to the client (a slow peer: every answer and every body chunk arrives late); "blackhole" accepts
connections and forwards nothing, new or already open (a peer that went silent: TCP still
accepts, nobody answers; held bytes flow again after a heal, as after a short partition).
`close()` stops listening and resets every connection: a dead port; `reopen()` listens again on
the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = 0
        self.mode = "pass"
        self.delay = 0.0
        self._sockets: list[socket.socket] = []
        self.reopen()
        self.url = f"http://127.0.0.1:{self.port}"

    def reopen(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.port = self.listener.getsockname()[1]
        self._closed = False
        self.mode = "pass"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self._sockets.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                while self.mode == "blackhole" and not self._closed:
                    time.sleep(0.02)
                if to_client and self.mode == "delay" and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            with contextlib.suppress(OSError):
                dst.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
