"""Redis from Debian's redis-server package, in-memory only (no RDB, no AOF).

One node at ``redis.port``, or, with ``redis.cluster_nodes`` = N >= 3, a Redis Cluster of N
masters on ports port .. port + N - 1 (cluster bus on each port + 10000), formed with
``redis-cli --cluster create``. Every node gets ``maxmemory`` and its policy from the settings.
The password goes in a 0600 ``redis.conf`` beside each node's data, never on the command line;
with ``redis.username`` that file defines the ACL user (limited to the key prefixes and
:data:`slidr.redis_config.APP_COMMANDS`) and turns the default user off. With ``redis.tls`` every
node serves TLS only on its port (and the cluster bus too), with ``server_certfile``, checked
against ``tls_cafile``; a client certificate is then required when the settings have one.
Debian's redis-server is built with TLS (it links libssl).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from pathlib import Path

import redis
from pydantic import SecretStr

from slidr.errors import StackError
from slidr.redis_config import acl_commands, explain, sync_client
from slidr.settings import Settings
from slidr.stack.process import ManagedProcess, ProcessGroup, wait_until, write_private
from slidr.stack.service import Health, require_program

_INSTALL = "apt-get install -y redis-server"
#: The user `redis-cli --cluster create` forms a cluster as (the slidr user may not change a
#: cluster): defined with a fresh random password at each start, deleted once the cluster is
#: formed.
CLUSTER_ADMIN = "slidr-cluster-admin"


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
        self._admin_password: str | None = None

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
        return sync_client(self.settings, port=port, timeout_s=timeout_s)

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
            *self._listener(port),
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

    def _listener(self, port: int) -> list[str]:
        """``--port``, or with TLS no plaintext port and ``--tls-port`` with its files."""
        s = self.settings
        if not s.tls:
            return ["--port", str(port)]
        if s.server_certfile is None or s.server_keyfile is None or s.tls_cafile is None:
            raise StackError(
                "a TLS Redis needs its certificate and the CA: set SLIDR_REDIS__SERVER_CERTFILE, "
                "SLIDR_REDIS__SERVER_KEYFILE and SLIDR_REDIS__TLS_CAFILE"
            )
        argv = [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(s.server_certfile),
            "--tls-key-file", str(s.server_keyfile),
            "--tls-ca-cert-file", str(s.tls_cafile),
            # a client certificate is required when the settings give one to the clients
            "--tls-auth-clients", "yes" if s.tls_certfile is not None else "no",
        ]  # fmt: skip
        if self.cluster:
            argv += ["--tls-cluster", "yes", "--tls-replication", "yes"]
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
            # The user's keys and the commands the store and the stack's checks send, no
            # other; the default user, passwordless, is off. No replicas (--cluster-replicas
            # 0): one would need a user of its own with PSYNC and REPLCONF (docs/security.md).
            lines += [
                f"user {_config_quote(user)} reset on "
                f"{_config_quote('>' + password.get_secret_value())} {keys} {acl_commands()}",
                "user default off",
            ]
            if self.cluster:
                assert self._admin_password is not None  # start() draws it first
                lines.append(
                    f"user {CLUSTER_ADMIN} reset on "
                    f"{_config_quote('>' + self._admin_password)} ~* &* +@all"
                )
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "redis.conf"
        write_private(path, "\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        if not self.cluster:
            self.proc.members[0].start(self._argv(self.settings.port, self.workdir))
            wait_until(lambda: self.health().ok, "redis PING", 15, self.proc)
            return
        self._admin_password = secrets.token_urlsafe(32)
        for member, port in zip(self.proc.members, self.ports, strict=True):
            node_dir = self.workdir / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            # Nothing is persisted, so every start forms a new cluster; a node that remembers an
            # old one (its nodes.conf) would refuse to join it.
            (node_dir / "nodes.conf").unlink(missing_ok=True)
            member.start(self._argv(port, node_dir))
        wait_until(self._all_ping, "redis cluster nodes PING", 15, self.proc)
        self._create_cluster()
        self._drop_cluster_admin()
        wait_until(lambda: self.health().ok, "redis cluster_state ok", 30, self.proc)

    def _admin(self) -> tuple[str | None, str | None]:
        """(user, password) that may form the cluster: the cluster admin with an ACL user."""
        s = self.settings
        if s.username is not None:
            return CLUSTER_ADMIN, self._admin_password
        return None, s.password.get_secret_value() if s.password else None

    def _drop_cluster_admin(self) -> None:
        user, password = self._admin()
        if user is None:
            return
        admin = self.settings.model_copy(
            update={"username": user, "password": SecretStr(password or "")}
        )
        for port in self.ports:
            # DELUSER closes the admin's own connection, often before the reply
            with (
                contextlib.closing(sync_client(admin, port=port)) as client,
                contextlib.suppress(redis.ConnectionError),
            ):
                client.acl_deluser(CLUSTER_ADMIN)
        self._admin_password = None

    def _tls_cli_args(self) -> list[str]:
        s = self.settings
        if not s.tls:
            return []
        argv = ["--tls", "--cacert", str(s.tls_cafile)]
        if s.tls_certfile is not None:
            argv += ["--cert", str(s.tls_certfile), "--key", str(s.tls_keyfile)]
        return argv

    def _create_cluster(self) -> None:
        env = dict(os.environ)
        user, password = self._admin()
        if password is not None:
            env["REDISCLI_AUTH"] = password  # not on argv
        nodes = [f"{self.settings.host}:{port}" for port in self.ports]
        cli = require_program("redis-cli", "", _INSTALL)
        argv = [cli, *(["--user", user] if user else []), *self._tls_cli_args()]
        argv += ["--cluster", "create", *nodes, "--cluster-replicas", "0"]
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
            except redis.RedisError as exc:
                # A login refused (typically a node still running with other credentials than
                # the settings') or a TLS handshake failed: the settings to check.
                hint = explain(exc, f"port {port}", self.settings)
                return Health(False, hint or f"no reply from port {port}: {exc}")
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
