"""One pooled httpx connection set to an object server, with retries, timeouts and typed errors.

Every request goes through `Transport.request` (whole response) or `Transport.open_stream` (body
read by the caller, released with `close_stream`). Connection failures and 5xx answers are retried
with backoff and jitter (`arkor.transfer.retry`); 4xx answers become the server's typed error at
once. Each request has its own timeouts (connect, and per read/write of the body), so a stalled
server cannot hang a caller.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import trio

from arkor import __version__
from arkor.client.errors import ConnectionFailed, error_from_response, is_retryable
from arkor.client.settings import ClientSettings
from arkor.errors import ArkorError
from arkor.transfer.retry import Backoff, retry

log = logging.getLogger(__name__)

T = TypeVar("T")
Content = bytes | bytearray | memoryview | None


_RELEASE_MIN = 1024 * 1024


class _ReleasingBody:
    """A request body that drops its buffer once sent.

    Why: httpx/httpcore keep request objects in reference cycles that live until the cyclic GC
    runs, so a plain `bytes` body (a multipart part) would stay in memory long after it was sent
    and memory would grow with the number of parts. Each attempt gets a fresh wrapper.
    """

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data: bytes | bytearray | memoryview | None = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        data, self._data = self._data, None
        if data:
            yield data  # type: ignore[misc]


def _note_retry(failures: int, exc: Exception, pause: float) -> None:
    log.info("request failed (%s, failure %d), retrying in %.2fs", exc, failures, pause)


def _auth(settings: ClientSettings) -> tuple[httpx.Auth | None, dict[str, str]]:
    """HTTP Basic with access and secret key; a secret key alone is sent as a bearer token."""
    if settings.access_key and settings.secret_key:
        return httpx.BasicAuth(settings.access_key, settings.secret_key), {}
    if settings.secret_key:
        return None, {"Authorization": f"Bearer {settings.secret_key}"}
    return None, {}


@contextmanager
def _connecting(method: str, url: str) -> Iterator[None]:
    """A failure to connect or to get the answer's head, as the retryable ConnectionFailed."""
    try:
        yield
    except httpx.TransportError as exc:
        raise ConnectionFailed(f"{method} {url}: {type(exc).__name__}: {exc}") from exc


def _error(response: httpx.Response, body: bytes) -> ArkorError:
    exc = error_from_response(response.status_code, body, response.headers)
    exc.headers = dict(response.headers)
    return exc


class Transport:
    """The HTTP side of `ArkorClient`; `connections` bounds the pool (and so the parallelism)."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        connections: int = 16,
        backoff: Backoff = Backoff(attempts=6, base=0.2, cap=5.0),
    ) -> None:
        self.settings = settings
        self.backoff = backoff
        auth, auth_headers = _auth(settings)
        self._http = httpx.AsyncClient(
            base_url=settings.endpoint,
            auth=auth,
            # Every phase explicit; a task may wait for a pooled connection as long as for a read
            # (the pool is sized to the client's concurrency, a wait means a transfer in flight).
            timeout=httpx.Timeout(connect=connect_timeout, read=timeout, write=timeout, pool=timeout),
            limits=httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                keepalive_expiry=2.0,  # below the servers' keep-alive timeout: no reuse races
            ),
            headers={"User-Agent": f"arkor-sdk/{__version__}", **auth_headers},
        )

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await self._http.aclose()

    async def retrying(self, operation: Callable[[], Awaitable[T]], *, retries: bool = True) -> T:
        """Run `operation` with this client's backoff; connection errors and 5xx are retried."""
        return await retry(
            operation, policy=self.backoff if retries else Backoff(attempts=1), retryable=is_retryable,
            on_retry=_note_retry,
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: Content = None,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
        retries: bool = True,
    ) -> httpx.Response:
        """Send and read the whole response; raise the typed error for any status not in `ok`."""

        async def once() -> httpx.Response:
            body: Any = content
            send_headers = dict(headers or {})
            if content is not None and len(content) >= _RELEASE_MIN:
                body = _ReleasingBody(content)
                send_headers["Content-Length"] = str(len(content))
            elif isinstance(content, memoryview):
                body = bytes(content)
            with _connecting(method, url):
                response = await self._http.request(
                    method, url, params=params, headers=send_headers, content=body, json=json
                )
            if response.status_code not in ok:
                raise _error(response, response.content)
            return response

        return await self.retrying(once, retries=retries)

    @property
    def attempts(self) -> int:
        return self.backoff.attempts

    def backoff_delay(self, failures: int) -> float:
        """The same full-jitter delay `retrying` uses, for callers that resume by hand."""
        return self.backoff.delay(failures)

    async def open_stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        retries: bool = True,
    ) -> httpx.Response:
        """A response whose body the caller reads and must release with `close_stream`; retries
        cover only getting the response head."""

        async def once() -> httpx.Response:
            request = self._http.build_request(method, url, headers=headers)
            with _connecting(method, url):
                response = await self._http.send(request, stream=True)
            if response.status_code not in ok:
                try:
                    body = await response.aread()
                except httpx.TransportError:
                    body = b""
                finally:
                    await _close(response)
                raise _error(response, body)
            return response

        return await self.retrying(once, retries=retries)

    async def close_stream(self, response: httpx.Response) -> None:
        await _close(response)


async def _close(response: httpx.Response) -> None:
    """Release the connection even when the caller is being cancelled."""
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        await response.aclose()


def body_error(method: str, url: str, exc: httpx.TransportError) -> ConnectionFailed:
    """A broken connection while reading a body, as a retryable client error."""
    return ConnectionFailed(f"{method} {url}: body interrupted: {type(exc).__name__}: {exc}")
