"""A KV-event subscription's connect to an address that does not answer (an engine's host gone,
its pod's address not reused yet) is given up and made again, not left to the kernel."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from trunkline.gateway.endpoints import kv_subscriber


@pytest.fixture
def unanswered() -> Iterator[str]:
    """``tcp://`` address whose SYNs go unanswered: a listener whose accept queue is full drops
    them (Linux), as a host that vanished does, where a closed port would refuse at once."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    for _ in range(4):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        queued.append(client)
    try:  # a plain connect there hangs: the queue is full
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        pytest.fail("this kernel answers SYNs beyond a full accept queue: no address to test on")
    except TimeoutError:
        pass
    yield f"tcp://127.0.0.1:{port}"
    for client in queued:
        client.close()
    listener.close()


async def test_a_connect_left_unanswered_is_given_up_and_made_again(
    monkeypatch: pytest.MonkeyPatch, unanswered: str
) -> None:
    """Before, a SUB socket's connect waited for the kernel to give up on its SYNs, about
    127 s (heartbeats only start once connected): an engine back meanwhile, or a name that
    resolves to its new pod's address, stayed without a subscription that long. Now the
    subscription gives up after ``CONNECT_TIMEOUT_S`` and connects anew (resolving the name
    again)."""
    monkeypatch.setattr(kv_subscriber, "CONNECT_TIMEOUT_S", 0.1)
    context = zmq.asyncio.Context()
    sub = kv_subscriber.subscription_socket(context)
    monitor = sub.get_monitor_socket(zmq.EVENT_CONNECT_RETRIED)
    retried = []

    async def watch() -> None:
        while await monitor.poll(0):
            retried.append(parse_monitor_message(await monitor.recv_multipart())["event"])

    try:
        sub.connect(unanswered)
        for _ in range(500):  # 5 s; the kernel alone would have waited about 127 s
            await watch()
            if retried:
                break
            await asyncio.sleep(0.01)
        assert retried, "the connect was still waiting on the kernel"
    finally:
        sub.disable_monitor()
        monitor.close()
        sub.close()
        context.term()
