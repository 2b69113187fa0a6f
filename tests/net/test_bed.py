"""The bed itself: roles advertise their own hosts' addresses, and every fault primitive really acts
on the wire and is really undone by the heal (a fault that silently does nothing would make every
scenario pass for the wrong reason).
"""

from __future__ import annotations

import httpx
import trio

from tests.net.bed import USER, Bed
from tests.net.netns import in_ns


async def timed_get(client: httpx.AsyncClient, url: str, timeout: float = 2.0) -> tuple[float, int]:  # noqa: ASYNC109
    """(seconds, status) of one GET on a fresh connection; status -1 when it failed."""
    start = trio.current_time()
    try:
        status = (await client.get(url, timeout=timeout, headers={"connection": "close"})).status_code
    except httpx.HTTPError:
        status = -1
    return trio.current_time() - start, status


def dropped(bed: Bed, host: str) -> int:
    out = in_ns(bed.ns(host), "iptables", "-w", "-L", "-v", "-x", "-n").stdout
    rows = [line.split() for line in out.splitlines() if "DROP" in line]
    return sum(int(row[0]) for row in rows if row[0].isdigit())


async def test_hosts_and_faults(bed: Bed) -> None:
    obj1, obj2 = (u + "/healthz" for u in bed.object_urls)
    async with bed.client(auth=USER) as client:
        await bed.wait_healthy(client, 60)
        urls = {s.url for g in (await bed.groups(client)).values() for s in g.servers}
        assert urls == {bed.data_url(h) for h in ("d11", "d12", "d13", "d21", "d22", "d23")}
        assert all(s == 200 for _, s in [await timed_get(client, obj1), await timed_get(client, obj2)])

        # A partition is a black hole: no refusal, the connection attempt just times out.
        await trio.to_thread.run_sync(lambda: bed.partition("obj1", peers=["cli"]))
        took, status = await timed_get(client, obj1, timeout=1.0)
        assert status == -1 and took >= 0.9
        assert (await timed_get(client, obj2))[1] == 200
        await trio.to_thread.run_sync(bed.heal)
        assert (await timed_get(client, obj1))[1] == 200

        # Link down at the switch cuts the host off.
        await trio.to_thread.run_sync(lambda: bed.link_down("obj2"))
        assert (await timed_get(client, obj2, timeout=1.0))[1] == -1
        await trio.to_thread.run_sync(bed.heal)
        assert (await timed_get(client, obj2, timeout=5.0))[1] == 200

        # The delaying relay adds the round trip it is told to (on every connection, new or not).
        base = min([(await timed_get(client, bed.data_url("d13") + "/healthz"))[0] for _ in range(3)])
        await trio.to_thread.run_sync(lambda: bed.slow(0.2))
        await trio.sleep(0.5)  # the relay re-reads its delay every 0.2 s
        slow = min([(await timed_get(client, bed.data_url("d13") + "/healthz"))[0] for _ in range(3)])
        assert slow >= 0.2, (base, slow)  # the relay accepts at once: one delayed round trip
        await trio.to_thread.run_sync(bed.heal)
        await trio.sleep(0.5)
        assert (await timed_get(client, bed.data_url("d13") + "/healthz"))[0] < slow / 2

        # Random loss drops packets (counted by the rule) but TCP still gets through.
        await trio.to_thread.run_sync(lambda: bed.lossy("obj2", 0.3))
        statuses = [(await timed_get(client, obj2, timeout=10.0))[1] for _ in range(10)]
        assert dropped(bed, "obj2") > 0 and statuses.count(200) >= 5, statuses
        await trio.to_thread.run_sync(bed.heal)
        assert dropped(bed, "obj2") == 0

        # tbf limits the rate: 1 MiB at 4 Mbit/s takes about 2 s to download.
        body = b"x" * (1 << 20)
        url = bed.object_urls[1] + "/v1/netbed-bed/rate"
        assert (await client.put(url, content=body, timeout=30)).status_code in (200, 201)
        await trio.to_thread.run_sync(lambda: bed.rate_limit("obj2", "4mbit"))
        start = trio.current_time()
        response = await client.get(url, timeout=30)
        limited = trio.current_time() - start
        await trio.to_thread.run_sync(bed.heal)
        assert response.status_code == 200 and response.content == body, response.status_code
        assert limited >= 1.5, limited
        assert "tbf" not in in_ns(bed.ns("obj2"), "tc", "qdisc", "show", "dev", "eth0").stdout
