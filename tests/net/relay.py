"""A TCP relay for the net test bed: listen in one network namespace, connect out in another, and
optionally hold every chunk for a delay (the kernel here has no netem, so latency is added here).

    python -m tests.net.relay --listen HOST:PORT --connect HOST:PORT
        [--listen-ns NS] [--connect-ns NS] [--delay-file PATH]

NS is a name under /run/netns or a path such as /proc/PID/ns/net; omitted: the relay's own. The
delay file holds the one-way delay in seconds (re-read every 0.2 s; missing or empty: 0), applied in
both directions, so a round trip gets twice it. Connections (256) and each one's buffering (64
chunks a direction) are bounded. Prints "ready" once listening. What must not live here: anything about Arkor.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import trio

from tests.net.netns import socket_in

CHUNK = 64 * 1024
MAX_CONNECTIONS = 256


class Delay:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.seconds = 0.0

    async def watch(self) -> None:
        while self.path is not None:
            try:
                text = self.path.read_text().strip()
                self.seconds = float(text) if text else 0.0
            except (OSError, ValueError):
                self.seconds = 0.0
            await trio.sleep(0.2)


async def pump(source: trio.SocketStream, sink: trio.SocketStream, delay: Delay) -> None:
    """Copy one direction; each chunk leaves `delay` seconds after it arrived (order kept)."""
    send, receive = trio.open_memory_channel[tuple[float, bytes]](64)

    async def reader() -> None:
        async with send:
            while chunk := await source.receive_some(CHUNK):
                await send.send((trio.current_time() + delay.seconds, chunk))

    async def writer() -> None:
        async with receive:
            async for due, chunk in receive:
                await trio.sleep_until(due)
                await sink.send_all(chunk)
        try:
            await sink.send_eof()
        except trio.ClosedResourceError:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(writer)


async def serve_one(client: trio.SocketStream, target: tuple[str, int], connect_ns: str | None,
                    delay: Delay) -> None:
    sock = trio.socket.from_stdlib_socket(socket_in(connect_ns))
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with trio.fail_after(10):
            await sock.connect(target)
    except (OSError, trio.TooSlowError):
        sock.close()
        await client.aclose()
        return
    upstream = trio.SocketStream(sock)
    async with client, upstream:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, upstream, delay)
                nursery.start_soon(pump, upstream, client, delay)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # one side reset or closed: the other side is closed with it


async def main(args: argparse.Namespace) -> None:
    host, port = args.listen.rsplit(":", 1)
    chost, cport = args.connect.rsplit(":", 1)
    listener_sock = socket_in(args.listen_ns)
    listener_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener_sock.bind((host, int(port)))
    listener_sock.listen(128)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(listener_sock))
    delay = Delay(Path(args.delay_file) if args.delay_file else None)
    slots = trio.Semaphore(MAX_CONNECTIONS)

    async def serve(client: trio.SocketStream) -> None:
        try:
            await serve_one(client, (chost, int(cport)), args.connect_ns, delay)
        finally:
            slots.release()

    print("ready", flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(delay.watch)
        while True:
            await slots.acquire()
            nursery.start_soon(serve, await accept(listener))


async def accept(listener: trio.SocketListener) -> trio.SocketStream:
    """The next connection; a failed accept (out of file descriptors, a reset) is waited out."""
    while True:
        try:
            return await listener.accept()
        except OSError:
            await trio.sleep(0.05)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--connect", required=True)
    parser.add_argument("--listen-ns")
    parser.add_argument("--connect-ns")
    parser.add_argument("--delay-file")
    try:
        trio.run(main, parser.parse_args())
    except KeyboardInterrupt:
        sys.exit(0)
