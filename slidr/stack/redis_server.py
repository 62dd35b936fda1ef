"""Redis from Debian's redis-server package, in-memory only (no RDB, no AOF).

One node at ``redis.port``, or, with ``redis.cluster_nodes`` = N >= 3, a Redis Cluster of N
masters on ports port .. port + N - 1 (cluster bus on each port + 10000), formed with
``redis-cli --cluster create``. Every node gets ``maxmemory`` and its policy from the settings.
The password goes in a 0600 ``redis.conf`` beside each node's data, never on the command line;
with ``redis.username`` that file defines the ACL user and turns the default user off.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import redis

from slidr.errors import StackError
from slidr.settings import Settings
from slidr.stack.process import ManagedProcess, ProcessGroup, wait_until, write_private
from slidr.stack.service import Health, require_program

_INSTALL = "apt-get install -y redis-server"


class RedisService:
    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.redis
        # The ACL user's keys: the live counters and every replay's own namespace.
        self._key_prefixes = (settings.redis.key_prefix, settings.replay.redis_prefix)
        self.workdir = Path(settings.state_dir) / "redis"
        if self.cluster:
            members = tuple(ManagedProcess(f"redis-{p}", self.workdir) for p in self.ports)
        else:
            members = (ManagedProcess("redis", self.workdir),)
        names = {m.name for m in members}
        strays = tuple(
            ManagedProcess(pid_file.stem, self.workdir)
            for pid_file in sorted(self.workdir.glob("redis*.pid"))
            if pid_file.stem not in names
        )
        self.proc = ProcessGroup("redis", members, strays)

    @property
    def cluster(self) -> bool:
        return self.settings.cluster_nodes > 0

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def ports(self) -> list[int]:
        """Every node's port (one for a single node)."""
        return [self.settings.port + i for i in range(self.settings.cluster_nodes or 1)]

    def check_prerequisites(self) -> None:
        require_program(
            "redis-server",
            "the local stack runs Redis for the velocity and entity counters",
            _INSTALL,
        )
        if self.cluster:
            require_program("redis-cli", "it forms the local Redis Cluster", _INSTALL)

    def _client(self, port: int, timeout_s: float) -> redis.Redis:
        password = self.settings.password
        return redis.Redis(
            host=self.settings.host,
            port=port,
            db=0 if self.cluster else self.settings.db,  # a cluster node has only db 0
            username=self.settings.username,
            password=password.get_secret_value() if password else None,
            socket_timeout=timeout_s,
        )

    def client(self) -> redis.Redis:
        """A client of the (first) node."""
        return self._client(self.settings.port, 2.0)

    def clients(self, timeout_s: float = 2.0) -> list[redis.Redis]:
        """One plain client per node, in port order, for per-node admin reads (INFO, DBSIZE)."""
        return [self._client(port, timeout_s) for port in self.ports]

    def _argv(self, port: int, data_dir: Path) -> list[str]:
        s = self.settings
        argv = [
            require_program("redis-server", "", _INSTALL),
            str(self._write_config(data_dir)),  # first: redis-server reads a file only there
            "--bind", s.host,
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(data_dir),
            "--daemonize", "no",
            "--maxmemory", s.maxmemory,
            "--maxmemory-policy", s.maxmemory_policy,
        ]  # fmt: skip
        if self.cluster:
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        return argv

    def _write_config(self, data_dir: Path) -> Path:
        """The node's secret settings, in a file only we can read.

        On the command line the password would be in /proc/<pid>/cmdline (redis-server
        rewrites its process title only once it runs) and in `slidr -v stack up`'s log.
        """
        lines = ["# written by slidr stack up on every start; holds the password"]
        user, password = self.settings.username, self.settings.password
        if password is not None and user is None:
            secret = _config_quote(password.get_secret_value())
            # masterauth too: a replica of this node must authenticate to it.
            lines += [f"requirepass {secret}", f"masterauth {secret}"]
        elif password is not None and user is not None:
            keys = " ".join(_config_quote(f"~{prefix}*") for prefix in self._key_prefixes)
            # All commands: the stack's health checks, `redis-cli --cluster create` and the
            # tests' admin reads need CLUSTER, CONFIG, INFO and CLIENT; the keys are what the
            # user is limited to. The default user, passwordless, is off.
            lines += [
                f"user {_config_quote(user)} reset on "
                f"{_config_quote('>' + password.get_secret_value())} {keys} +@all",
                "user default off",
                # No replicas today (--cluster-replicas 0); one would log in as this user.
                f"masteruser {_config_quote(user)}",
                f"masterauth {_config_quote(password.get_secret_value())}",
            ]
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "redis.conf"
        write_private(path, "\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        if not self.cluster:
            self.proc.members[0].start(self._argv(self.settings.port, self.workdir))
            wait_until(lambda: self.health().ok, "redis PING", 15, self.proc)
            return
        for member, port in zip(self.proc.members, self.ports, strict=True):
            node_dir = self.workdir / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            # Nothing is persisted, so every start forms a new cluster; a node that remembers an
            # old one (its nodes.conf) would refuse to join it.
            (node_dir / "nodes.conf").unlink(missing_ok=True)
            member.start(self._argv(port, node_dir))
        wait_until(self._all_ping, "redis cluster nodes PING", 15, self.proc)
        self._create_cluster()
        wait_until(lambda: self.health().ok, "redis cluster_state ok", 30, self.proc)

    def _create_cluster(self) -> None:
        env = dict(os.environ)
        if self.settings.password is not None:
            env["REDISCLI_AUTH"] = self.settings.password.get_secret_value()  # not on argv
        nodes = [f"{self.settings.host}:{port}" for port in self.ports]
        cli = require_program("redis-cli", "", _INSTALL)
        user = ["--user", self.settings.username] if self.settings.username else []
        argv = [cli, *user, "--cluster", "create", *nodes, "--cluster-replicas", "0"]
        argv.append("--cluster-yes")
        try:
            result = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=60, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"`redis-cli --cluster create` hung for {exc.timeout:.0f} s") from exc
        if result.returncode != 0:
            raise StackError(
                f"`redis-cli --cluster create` failed:\n{(result.stdout + result.stderr)[-2000:]}"
            )

    def _all_ping(self) -> bool:
        return all(self._node_health(port, cluster=False).ok for port in self.ports)

    def _node_health(self, port: int, *, cluster: bool) -> Health:
        with contextlib.closing(self._client(port, 2.0)) as client:
            try:
                if not cluster:
                    client.ping()
                    return Health(True, "PING ok")
                info = client.cluster("INFO")
            except redis.AuthenticationError as exc:
                # Typically a node still running with other credentials than the settings'.
                return Health(
                    False,
                    f"port {port} refused the login ({exc}): check SLIDR_REDIS__USERNAME and "
                    "SLIDR_REDIS__PASSWORD",
                )
            except redis.RedisError as exc:
                return Health(False, f"no reply from port {port}: {exc}")
        fields = _cluster_info(info)
        state = fields.get("cluster_state", "?")
        known = int(fields.get("cluster_known_nodes", "0"))
        if state != "ok" or known != len(self.ports):
            return Health(False, f"node {port}: state {state}, {known} known nodes")
        return Health(True, "state ok")

    def health(self) -> Health:
        if not self.cluster:
            return self._node_health(self.settings.port, cluster=False)
        n = len(self.ports)
        for port in self.ports:
            node = self._node_health(port, cluster=True)
            if not node.ok:
                return Health(False, f"cluster of {n} nodes: {node.detail}")
        return Health(
            True, f"cluster of {n} nodes on ports {self.ports[0]}-{self.ports[-1]}, state ok"
        )


def _config_quote(value: str) -> str:
    """A redis.conf string: double-quoted, every byte that could end or bend it as \\xHH."""
    return (
        '"'
        + "".join(
            chr(b) if 0x20 < b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in value.encode()
        )
        + '"'
    )


def _cluster_info(reply: object) -> dict[str, str]:
    """CLUSTER INFO as a dict, whether redis-py parsed it already or not."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    pairs = (line.strip().partition(":") for line in text.splitlines())
    return {key: value for key, sep, value in pairs if sep}
