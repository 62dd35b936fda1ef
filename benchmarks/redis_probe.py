"""Server-side measurements of the Redis node(s) of a local RedisService, summed over nodes:
CPU (INFO cpu), memory (INFO memory), keys, script calls, and the pipelined INCR reference
measured with redis-benchmark on the same server(s)."""

from __future__ import annotations

import re
import subprocess
from typing import Any

from slidr.stack.redis_server import RedisService
from slidr.stack.service import require_program

_SCAN_COUNT = 10_000


class RedisNodes:
    def __init__(self, service: RedisService) -> None:
        self.service = service
        self.clients = service.clients(timeout_s=60.0)

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def _info(self, section: str) -> list[dict[str, Any]]:
        return [client.info(section) for client in self.clients]

    def cpu_s(self) -> float:
        """Server CPU seconds (user + system, all threads) so far."""
        return sum(float(i["used_cpu_sys"]) + float(i["used_cpu_user"]) for i in self._info("cpu"))

    def used_memory(self) -> int:
        return sum(int(i["used_memory"]) for i in self._info("memory"))

    def keys(self) -> int:
        return sum(int(client.dbsize()) for client in self.clients)

    def script_calls(self) -> int:
        """EVALSHA and EVAL calls served: the store's requests if it does not count them."""
        names = ("cmdstat_evalsha", "cmdstat_eval")
        return sum(
            int(stats["calls"])
            for info in self._info("commandstats")
            for name, stats in info.items()
            if name in names
        )

    def version(self) -> str:
        return str(self._info("server")[0]["redis_version"])

    def delete(self, keys: list[str]) -> None:
        """Delete these keys wherever they live (on a cluster each node deletes its own and
        answers MOVED for the others, which is ignored)."""
        for client in self.clients:
            for start in range(0, len(keys), _SCAN_COUNT):
                pipe = client.pipeline(transaction=False)
                for key in keys[start : start + _SCAN_COUNT]:
                    pipe.unlink(key)
                pipe.execute(raise_on_error=False)

    def purge_expired(self) -> None:
        """One full SCAN per node: SCAN deletes the expired keys it meets, so what is left is
        exactly the live keys, without waiting for Redis's sampling expiry cycle."""
        for client in self.clients:
            for _ in client.scan_iter(count=_SCAN_COUNT):
                pass

    def incr_reference(self, requests: int) -> tuple[float, float]:
        """(server CPU µs, wall µs) per INCR of ``redis-benchmark -P 16 -t incr``: the issue's
        reference, on the same server(s) in the same run. On a cluster it runs in --cluster
        mode (one key per node) and the CPU is summed over the nodes."""
        program = require_program(
            "redis-benchmark", "it measures the INCR reference", "apt-get install -y redis-tools"
        )
        s = self.service.settings
        argv = [program, "-h", s.host, "-p", str(s.port), "-q", "-n", str(requests)]
        argv += ["-P", "16", "-t", "incr", *(["--cluster"] if self.service.cluster else [])]
        before = self.cpu_s()
        result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
        cpu_us = (self.cpu_s() - before) * 1e6 / requests
        found = re.findall(r"INCR: ([\d.]+) requests per second", result.stdout)
        if not found:
            raise RuntimeError(f"unexpected redis-benchmark output:\n{result.stdout[-500:]}")
        return cpu_us, 1e6 / float(found[-1])
