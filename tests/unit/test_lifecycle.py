"""arkor.web.lifecycle.RequestCycle without a server: the decisions of an early answer."""

from __future__ import annotations

from arkor.web.lifecycle import RequestCycle, declares_body

CHUNK = {"type": "http.request", "body": b"x", "more_body": True}
LAST = {"type": "http.request", "body": b"x", "more_body": False}
DISCONNECT = {"type": "http.disconnect"}


def test_declared_body() -> None:
    assert not declares_body([])
    assert not declares_body([(b"content-length", b"0")])
    assert declares_body([(b"content-length", b"12")])
    assert declares_body([(b"transfer-encoding", b"chunked")])
    assert not RequestCycle.for_scope({"headers": [(b"host", b"x")]}).abandoned()


def test_answer_after_the_whole_body_keeps_the_connection() -> None:
    cycle = RequestCycle(has_body=True)
    cycle.received(CHUNK)
    cycle.received(LAST)
    assert cycle.starting(201) is False  # no Connection: close
    assert cycle.finishing() is False  # nothing to drain
    assert cycle.finished() is False  # nothing left to discard
    assert not cycle.abandoned()


def test_early_answer_closes_and_drains() -> None:
    cycle = RequestCycle(has_body=True)
    cycle.received(CHUNK)
    assert cycle.starting(400) is True
    message = cycle.with_close({"type": "http.response.start", "status": 400, "headers": [[b"a", b"b"]]})
    assert message["headers"] == [[b"a", b"b"], [b"connection", b"close"]]
    assert cycle.finishing() is True  # drain the rest so the client reads the 400
    cycle.received(CHUNK)
    cycle.received(LAST)  # the drain reached the end
    assert cycle.finished() is False and not cycle.abandoned()


def test_drain_past_bounds_discards_until_closed() -> None:
    cycle = RequestCycle(has_body=True)
    assert cycle.starting(413) is True and cycle.finishing() is True
    # the drain gave up (too much, too slow): hypercorn may still queue chunks
    assert cycle.finished() is True
    assert cycle.answered and not cycle.abandoned()


def test_no_drain_after_a_body_timeout() -> None:
    cycle = RequestCycle(has_body=True)
    assert cycle.starting(408) is True  # still closes the connection ...
    assert cycle.finishing() is False  # ... but does not wait for a client that stopped sending


def test_handler_without_answer_is_abandoned_until_the_body_ends() -> None:
    cycle = RequestCycle(has_body=True)
    cycle.received(CHUNK)
    assert cycle.abandoned()
    cycle.received(DISCONNECT)
    assert cycle.body_done and not cycle.abandoned()


def test_bodiless_request() -> None:
    cycle = RequestCycle(has_body=False)
    assert cycle.starting(404) is False and cycle.finishing() is False and cycle.finished() is False
