"""Adaptive micro-batches from a Faust stream.

Faust's ``take_events(n, within)`` waits up to ``within`` for a batch to fill, so at low load
every click waits that long for nothing. :func:`take_available` hands a batch out as soon as
nothing more is coming: when the consumer's buffer is empty and the batch's partitions are read
up to their end (no backlog in Kafka). So a batch of one at low load (low latency), full
batches of ``max_size`` under a backlog (high throughput), and in between a batch waits at most
``wait_s`` to fill, which also hands out what is buffered when Faust pauses the stream (a
rebalance waits for those events' acknowledgements).

It follows ``take_events`` closely (a stream processor fills the buffer, the stream is drained
passively, events are acknowledged only after the caller's loop body returns); only the moment
a batch is handed out differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


async def take_available(stream: Any, max_size: int, wait_s: float) -> AsyncIterator[Any]:
    """Yield lists of Faust events: at most ``max_size``, handed out once nothing more is
    buffered or due, or ``wait_s`` after the first one. Each batch is acknowledged when the
    caller asks for the next one, never when its loop body raised."""
    events: list[Any] = []
    started = asyncio.Event()  # the batch has its first event
    ready = asyncio.Event()  # nothing more to wait for: full, or caught up
    consumed = asyncio.Event()
    handing_out: asyncio.Future[None] | None = None
    # What the consumer fetched and the stream has not read yet.
    fetched = stream.channel.queue
    highwater = stream.app.consumer.highwater

    def caught_up(event: Any) -> bool:
        end = highwater(event.message.tp)
        return end is None or event.message.offset >= end - 1

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
        started.set()
        if len(events) >= max_size:
            ready.set()
            consumed.clear()
            # Never more than max_size in a batch: wait for this one to be handed out.
            await stream.wait(consumed)
        elif fetched.empty() and caught_up(event):
            ready.set()
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # events are acknowledged below, once their batch is done
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(started)
            await stream.wait_for_stopped(ready, timeout=wait_s)
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
                started.clear()
                ready.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add)
