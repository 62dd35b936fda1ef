"""Adaptive micro-batches from a Faust stream.

Faust's ``take_events(n, within)`` waits up to ``within`` for a batch to fill, so at low load
every click waits that long for nothing. :func:`take_available` instead takes what the consumer
has already fetched, up to ``max_size`` events, the moment the first event arrives: a batch of
one at low load (low latency), full batches under a backlog (high throughput). ``wait_s`` > 0
restores a bounded wait for fuller batches when fewer, larger requests matter more than latency.

It follows ``take_events`` closely (a stream processor fills the buffer, the stream is drained
passively, events are acknowledged only after the caller's loop body returns); only the moment
a batch is handed out differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


async def take_available(stream: Any, max_size: int, wait_s: float = 0.0) -> AsyncIterator[Any]:
    """Yield lists of Faust events: what is buffered when the first one arrives, at most
    ``max_size``, after waiting up to ``wait_s`` for a full batch. Each batch is acknowledged
    when the caller asks for the next one, never when its loop body raised."""
    events: list[Any] = []
    ready = asyncio.Event()  # the buffer holds everything fetched so far, or is full
    full = asyncio.Event()
    consumed = asyncio.Event()
    handing_out: asyncio.Future[None] | None = None
    # The channel's queue holds what the consumer fetched and the stream has not read yet.
    fetched = stream.channel.queue

    async def add(value: Any) -> Any:
        nonlocal handing_out
        if handing_out is not None:
            try:
                await handing_out  # the caller holds a batch: wait until it is done with it
            finally:
                handing_out = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("a stream value without its event")
        events.append(event)
        if len(events) >= max_size:
            ready.set()
            full.set()
            consumed.clear()
            # Never more than max_size in a batch: wait for this one to be handed out.
            await stream.wait(consumed)
        elif fetched.empty():
            ready.set()
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # events are acknowledged below, once their batch is done
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(ready)
            if wait_s > 0 and not full.is_set():
                await stream.wait_for_stopped(full, timeout=wait_s)
            if not events:
                continue
            handing_out = asyncio.get_running_loop().create_future()
            batch = list(events)
            try:
                yield batch
                # Resumed: the caller is done with the batch. A caller that raised instead
                # never resumes us, and its batch stays unacknowledged (consumed again).
                for event in batch:
                    await stream.ack(event)
            finally:
                events.clear()
                handing_out.set_result(None)
                ready.clear()
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add)
