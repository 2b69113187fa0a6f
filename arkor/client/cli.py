"""The client commands of `arkor`: cp, ls, rm, stat, mb, rb.

Remote paths are ``arkor://bucket/key``; ``-`` is stdin/stdout for cp. The endpoint comes from
``--endpoint``, else ARKOR_ENDPOINT, else ~/.config/arkor/client.yaml, else http://127.0.0.1:8125;
credentials from ARKOR_ACCESS_KEY / ARKOR_SECRET_KEY or that file (never from the command line, where
other users could read them). Every failure prints one line ``arkor: ...`` on stderr and exits 1
(2 for bad usage or configuration), so scripts can rely on the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from arkor.client.errors import ConnectionFailed
from arkor.client.progress import ProgressBar, human_bytes
from arkor.client.sdk import ArkorClient
from arkor.client.settings import ClientConfigError
from arkor.config import parse_size
from arkor.errors import ArkorError

SCHEME = "arkor://"
STDIO = "-"
_READ_CHUNK = 1024 * 1024
_PARALLEL_FILES = 4  # files of a recursive copy transferred at once


class UsageError(Exception):
    """A command line that cannot be executed (exit code 2)."""


@dataclass(frozen=True)
class Remote:
    bucket: str
    key: str  # may be empty (bucket root) or end with "/" (a prefix)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"


def parse_remote(text: str) -> Remote | None:
    """`arkor://bucket/key` as a Remote; None for local paths."""
    if not text.startswith(SCHEME):
        return None
    bucket, _, key = text[len(SCHEME) :].partition("/")
    if not bucket:
        raise UsageError(f"{text!r}: missing bucket name")
    return Remote(bucket, key)


def _remote_arg(text: str, *, need_key: bool) -> Remote:
    remote = parse_remote(text)
    if remote is None:
        raise UsageError(f"{text!r}: expected arkor://bucket{'/key' if need_key else ''}")
    if need_key and (not remote.key or remote.key.endswith("/")):
        raise UsageError(f"{text!r}: expected an object, arkor://bucket/key")
    return remote


def _client(args: argparse.Namespace) -> ArkorClient:
    return ArkorClient(
        args.endpoint,
        concurrency=getattr(args, "concurrency", 4),
        part_size=getattr(args, "part_size", 8 * 1024 * 1024),
    )


def _bar(args: argparse.Namespace, label: str, total: int | None) -> ProgressBar:
    return ProgressBar(label, total, enabled=False if args.quiet else None)


# --- cp ------------------------------------------------------------------------------------------


async def _stdin_chunks() -> AsyncIterator[bytes]:
    stdin = sys.stdin.buffer
    while True:
        chunk = await trio.to_thread.run_sync(stdin.read, _READ_CHUNK, abandon_on_cancel=True)
        if not chunk:
            return
        yield chunk


def _local_kind(path: Path) -> str | None:
    if path.is_dir():
        return "dir"
    return "file" if path.exists() else None


def _walk_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _local_targets(dst: str, prefix: str, keys: list[str]) -> list[tuple[str, Path]]:
    """Where each key under `prefix` lands below `dst`; refuses keys that would escape it."""
    root = Path(os.path.abspath(dst))
    out = []
    for key in keys:
        relative = key[len(prefix) :]
        target = Path(os.path.normpath(root.joinpath(*relative.split("/"))))
        if not relative or not target.is_relative_to(root) or target == root:
            raise UsageError(f"{key!r}: would be written outside {dst}")
        out.append((key, target))
    return out


async def _upload(client: ArkorClient, args: argparse.Namespace, src: str, dst: Remote) -> None:
    if src == STDIO:
        if not dst.key or dst.key.endswith("/"):
            raise UsageError("cp - needs a destination object name, arkor://bucket/key")
        bar = _bar(args, "<stdin>", None)
        try:
            await client.put(dst.bucket, dst.key, _stdin_chunks(), content_type=args.content_type,
                             progress=bar)
        finally:
            bar.close()
        return
    path = Path(src)
    kind = await trio.to_thread.run_sync(_local_kind, path)
    if kind == "dir":
        if not args.recursive:
            raise UsageError(f"{src}: is a directory (use -r)")
        prefix = dst.key if not dst.key or dst.key.endswith("/") else dst.key + "/"
        files = await trio.to_thread.run_sync(_walk_files, path)
        jobs = [(p, Remote(dst.bucket, prefix + p.relative_to(path).as_posix())) for p in files]
        await _parallel(jobs, lambda job: _upload_file(client, args, job[0], job[1]))
        return
    if kind is None:
        raise UsageError(f"{src}: no such file or directory")
    key = dst.key + path.name if not dst.key or dst.key.endswith("/") else dst.key
    await _upload_file(client, args, path, Remote(dst.bucket, key))


async def _upload_file(client: ArkorClient, args: argparse.Namespace, path: Path, dst: Remote) -> None:
    size = (await trio.to_thread.run_sync(os.stat, path)).st_size
    bar = _bar(args, str(path), size)
    try:
        await client.put_file(dst.bucket, dst.key, path, content_type=args.content_type, progress=bar)
    finally:
        bar.close()
    if args.verbose:
        print(f"{path} -> {dst}")


async def _download(client: ArkorClient, args: argparse.Namespace, src: Remote, dst: str) -> None:
    if args.recursive:
        if dst == STDIO:
            raise UsageError("cp -r cannot write to stdout")
        prefix = src.key if not src.key or src.key.endswith("/") else src.key + "/"
        entries = [e async for e in client.list(src.bucket, prefix) if not e.is_prefix]
        if not entries:
            raise UsageError(f"{SCHEME}{src.bucket}/{prefix}: no objects")
        targets = _local_targets(dst, prefix, [e.key for e in entries])
        jobs = [(Remote(src.bucket, key), target) for key, target in targets]

        async def one(job: tuple[Remote, Path]) -> None:
            await trio.to_thread.run_sync(lambda: job[1].parent.mkdir(parents=True, exist_ok=True))
            await _download_file(client, args, job[0], job[1])

        await _parallel(jobs, one)
        return
    if not src.key or src.key.endswith("/"):
        raise UsageError(f"{src}: not an object (use -r for a prefix)")
    if dst == STDIO:
        out = sys.stdout.buffer
        async with client.open_read(src.bucket, src.key) as reader:
            bar = _bar(args, str(src), reader.info.size if reader.info else None)
            try:
                async for chunk in reader:
                    await trio.to_thread.run_sync(out.write, chunk)
                    bar(len(chunk))
                await trio.to_thread.run_sync(out.flush)
            finally:
                bar.close()
        return
    target = Path(dst)
    if dst.endswith(os.sep) or await trio.to_thread.run_sync(target.is_dir):
        target = target / src.key.rsplit("/", 1)[-1]
    await _download_file(client, args, src, target)


async def _download_file(client: ArkorClient, args: argparse.Namespace, src: Remote, target: Path) -> None:
    info = await client.head(src.bucket, src.key)
    bar = _bar(args, str(src), info.size)
    try:
        await client.get_file(src.bucket, src.key, target, progress=bar)
    finally:
        bar.close()
    if args.verbose:
        print(f"{src} -> {target}")


async def _parallel(jobs: list[Any], run: Callable[[Any], Awaitable[None]]) -> None:
    """Run `run(job)` for every job, at most _PARALLEL_FILES at once; the first failure stops all."""
    limit = trio.Semaphore(_PARALLEL_FILES)

    async def one(job: Any) -> None:
        async with limit:
            await run(job)

    async with trio.open_nursery() as nursery:
        for job in jobs:
            await limit.acquire()  # do not start (and hold) more tasks than can run
            limit.release()
            nursery.start_soon(one, job)


async def cmd_cp(client: ArkorClient, args: argparse.Namespace) -> None:
    src, dst = parse_remote(args.src), parse_remote(args.dst)
    if src is None and dst is None:
        raise UsageError("cp needs at least one arkor://bucket/key argument")
    if src is not None and dst is not None:
        if not src.key or not dst.key:
            raise UsageError("a server-side copy needs arkor://bucket/key on both sides")
        key = dst.key + src.key.rsplit("/", 1)[-1] if dst.key.endswith("/") else dst.key
        await client.copy(src.bucket, src.key, dst.bucket, key)
        return
    if dst is not None:
        await _upload(client, args, args.src, dst)
    else:
        assert src is not None
        await _download(client, args, src, args.dst)


# --- ls, stat, rm, mb, rb ------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-" * 19


async def cmd_ls(client: ArkorClient, args: argparse.Namespace) -> None:
    if not args.target:
        for bucket in await client.list_buckets():
            print(f"{_when(bucket.created)}  {bucket.objects:>8}  {bucket.bytes:>14}  {bucket.name}")
        return
    remote = _remote_arg(args.target, need_key=False)
    delimiter = None if args.recursive else "/"
    async for entry in client.list(remote.bucket, remote.key, delimiter=delimiter):
        if entry.is_prefix:
            print(f"{'PRE':>19}  {'':>14}  {entry.key}")
        else:
            size = human_bytes(entry.size) if args.human else str(entry.size)
            print(f"{_when(entry.last_modified)}  {size:>14}  {entry.key}")


async def cmd_stat(client: ArkorClient, args: argparse.Namespace) -> None:
    remote = _remote_arg(args.target, need_key=True)
    info = await client.head(remote.bucket, remote.key)
    print(f"key:           {remote}")
    print(f"size:          {info.size}")
    print(f"etag:          {info.etag}")
    print(f"content-type:  {info.content_type}")
    print(f"last-modified: {_when(info.last_modified)}")
    for name, value in sorted(info.metadata.items()):
        print(f"meta-{name}: {value}")


async def cmd_rm(client: ArkorClient, args: argparse.Namespace) -> None:
    for target in args.targets:
        remote = _remote_arg(target, need_key=not args.recursive)
        if args.recursive:
            keys = [e.key async for e in client.list(remote.bucket, remote.key) if not e.is_prefix]
            for key in keys:
                await client.delete(remote.bucket, key)
                if args.verbose:
                    print(f"deleted {SCHEME}{remote.bucket}/{key}")
        else:
            await client.delete(remote.bucket, remote.key)
            if args.verbose:
                print(f"deleted {remote}")


async def cmd_mb(client: ArkorClient, args: argparse.Namespace) -> None:
    remote = _remote_arg(args.target, need_key=False)
    if not await client.make_bucket(remote.bucket):
        print(f"{SCHEME}{remote.bucket}: name is valid; the bucket appears with its first upload")


async def cmd_rb(client: ArkorClient, args: argparse.Namespace) -> None:
    remote = _remote_arg(args.target, need_key=False)
    if args.force:
        keys = [e.key async for e in client.list(remote.bucket) if not e.is_prefix]
        for key in keys:
            await client.delete(remote.bucket, key)
    await client.remove_bucket(remote.bucket)


# --- wiring --------------------------------------------------------------------------------------


def _handler(command: Callable[[ArkorClient, argparse.Namespace], Awaitable[None]]) -> Callable[..., int]:
    def handle(args: argparse.Namespace) -> int:
        async def main() -> None:
            async with _client(args) as client:
                await command(client, args)

        try:
            trio.run(main)
        except (UsageError, ClientConfigError, ArkorError, OSError, KeyboardInterrupt) as exc:
            message, status = _failure(exc, args.endpoint)
            if message:
                print(f"arkor: {message}", file=sys.stderr)
            return status
        return 0

    return handle


def _failure(exc: BaseException, endpoint: str | None) -> tuple[str, int]:
    """What to say about an error that ends a command (empty: nothing) and the exit status:
    2 for a mistake in the command or the config, 130 for Ctrl-C, else 1."""
    match exc:
        case UsageError():
            return str(exc), 2
        case ClientConfigError():
            return f"client config: {exc}", 2
        case ConnectionFailed():
            return f"cannot reach {endpoint or 'the server'}: {exc.message}", 1
        case ArkorError():
            return f"{exc.message} ({exc.code})", 1
        case BrokenPipeError():
            return "", 1
        case OSError():
            return f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1
        case _:
            return "interrupted", 130


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default=None,
                        help="object server URL (default $ARKOR_ENDPOINT or http://127.0.0.1:8125)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each object transferred")


def _size(text: str) -> int:
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 64 * 1024:
        raise argparse.ArgumentTypeError("must be at least 64KiB")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return int(text)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the client commands on the `arkor` command's subparsers."""
    cp = sub.add_parser("cp", help="copy files to, from or within Arkor (arkor://bucket/key, - for stdio)")
    cp.add_argument("src")
    cp.add_argument("dst")
    cp.add_argument("-r", "--recursive", action="store_true", help="copy a directory or a key prefix")
    cp.add_argument("-j", "--concurrency", type=_positive, default=4,
                    help="parts or ranges in flight for one large file (default 4)")
    cp.add_argument("--part-size", type=_size, default=8 * 1024 * 1024, help="multipart part size (8MiB)")
    cp.add_argument("--content-type", default=None)
    _common(cp)
    cp.set_defaults(handler=_handler(cmd_cp))

    ls = sub.add_parser("ls", help="list buckets, or objects under arkor://bucket[/prefix]")
    ls.add_argument("target", nargs="?")
    ls.add_argument("-r", "--recursive", action="store_true", help="list every key, not one level")
    ls.add_argument("-H", "--human", action="store_true", help="sizes as KiB/MiB/GiB")
    _common(ls)
    ls.set_defaults(handler=_handler(cmd_ls))

    rm = sub.add_parser("rm", help="delete objects (arkor://bucket/key ...; -r for a prefix)")
    rm.add_argument("targets", nargs="+")
    rm.add_argument("-r", "--recursive", action="store_true")
    _common(rm)
    rm.set_defaults(handler=_handler(cmd_rm))

    stat = sub.add_parser("stat", help="show an object's size, ETag, type and metadata")
    stat.add_argument("target")
    _common(stat)
    stat.set_defaults(handler=_handler(cmd_stat))

    mb = sub.add_parser("mb", help="create a bucket (arkor://bucket)")
    mb.add_argument("target")
    _common(mb)
    mb.set_defaults(handler=_handler(cmd_mb))

    rb = sub.add_parser("rb", help="remove an empty bucket (arkor://bucket; --force deletes its objects)")
    rb.add_argument("target")
    rb.add_argument("--force", action="store_true")
    _common(rb)
    rb.set_defaults(handler=_handler(cmd_rb))
