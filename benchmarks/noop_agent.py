"""Faust's consumption ceiling: `python benchmarks/noop_agent.py --messages N --out FILE`.

A Faust app built like the worker's (`slidr_app`, `raw_topic`, the worker's commit, session and
batch settings, all read from the SLIDR_* environment) whose agent only takes batches and
counts them: with Faust's `take_events` (`--batching events`, the issue's reference) or with the
worker's own `take_available` (`--batching available`). Whatever `slidr worker` costs on top of
this is ours; this part is Faust's and aiokafka's. Run by `bench_stream.py`, which samples this
process's CPU time: once ``--messages`` were consumed it writes ``{"messages", "first", "last"}``
(wall-clock seconds of the first and last batch) to ``--out`` and keeps running until stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import faust
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slidr.settings import get_settings
from streams.batches import take_available
from streams.faust_app import raw_topic, slidr_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, required=True, help="backlog size to consume")
    parser.add_argument("--out", type=Path, required=True, help="where the result is written")
    parser.add_argument("--batching", choices=["events", "available"], default="events")
    args = parser.parse_args()
    settings = get_settings()
    w = settings.worker
    # The consumer settings of streams/app.py's create_app, so only the agent's body differs.
    app = slidr_app(
        settings,
        w.consumer_group,
        "noop",
        broker_commit_every=w.batch_size,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )
    seen = {"messages": 0, "first": 0.0, "last": 0.0}

    @app.agent(raw_topic(app, settings.topics.clicks), name="noop")
    async def noop(stream: Any) -> None:
        wait_s = w.batch_wait_ms / 1000
        if args.batching == "available":
            batches = take_available(stream, w.batch_size, wait_s)
        else:
            # take_events without a timeout never hands out a part batch: the reference's 20 ms.
            batches = stream.take_events(w.batch_size, within=wait_s or 0.02)
        async for events in batches:
            seen["last"] = time.time()
            seen["first"] = seen["first"] or seen["last"]
            seen["messages"] += len(events)
            if seen["messages"] >= args.messages and not args.out.exists():
                tmp = args.out.with_suffix(".tmp")
                tmp.write_bytes(orjson.dumps(seen))
                tmp.rename(args.out)  # the benchmark never reads a half-written file

    faust.Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
