"""The Redis connection settings (user, password, database, TLS), mapped once for every client.

redis-py clients (the feature store's admin calls and cluster slot map, the local stack's
checks, the benchmarks' probes) take :func:`client_options` or :func:`sync_client`; the feature
store's own script link (``streams/feature_store/nodes.py``) takes :func:`ssl_context`. So a
Redis that requires a user, a password or TLS is reached by all of them or by none
(tests/test_redis_tls.py checks every construction site).

:data:`APP_COMMANDS` is what the slidr ACL user may run (the local stack's ``redis.conf``;
docs/security.md gives the same rule for another Redis).
"""

from __future__ import annotations

import ssl
from typing import Any

import redis

from slidr.settings import RedisSettings

#: The commands the feature store, replays and the stack's checks send as the slidr ACL user
#: (``SLIDR_REDIS__USERNAME``), and nothing else: no FLUSHALL, CONFIG, KEYS, DEBUG, MONITOR,
#: ACL, SHUTDOWN, MODULE, or cluster changes. Every name exists in Redis 7.0 (an unknown one
#: would stop redis-server from reading its config).
APP_COMMANDS = (
    # connecting: the store's link and redis-py (which also tries CLIENT SETINFO, ignoring a
    # refusal)
    "auth", "hello", "ping", "select", "client|setname",
    # the scripts (streams/feature_store/*.lua: two calls per node per batch for the features,
    # one for the decision cache), and what they call
    "evalsha", "script|load", "hmget", "hset", "set", "append", "getrange", "strlen", "pexpire",
    "hsetnx", "hget",
    # dropping a private namespace (offline features, replays): SCAN, then UNLINK in a script
    "scan", "eval", "unlink",
    # memory and key-count metrics, the stack's health, benchmark probes
    "info", "dbsize",
    # a cluster: redis-py reads the command table and the slot map; the stack checks its state
    "command", "cluster|slots", "cluster|shards", "cluster|nodes", "cluster|info", "cluster|myid",
)  # fmt: skip


def acl_commands() -> str:
    """The ACL rule of :data:`APP_COMMANDS`: everything refused but them.

    >>> acl_commands().split()[:3]
    ['-@all', '+auth', '+hello']
    """
    return " ".join(["-@all", *(f"+{c}" for c in APP_COMMANDS)])


def ssl_context(settings: RedisSettings) -> ssl.SSLContext | None:
    """The TLS context of a connection to Redis (None without ``tls``): verifies the node's
    certificate and host name against the CA file, and presents the client certificate when
    one is set."""
    if not settings.tls:
        return None
    cafile = str(settings.tls_cafile) if settings.tls_cafile is not None else None
    context = ssl.create_default_context(cafile=cafile)
    if settings.tls_certfile is not None:
        context.load_cert_chain(str(settings.tls_certfile), str(settings.tls_keyfile))
    return context


def client_options(settings: RedisSettings, timeout_s: float) -> dict[str, Any]:
    """redis-py keyword arguments (sync, asyncio and cluster clients alike): the login, the
    timeouts and TLS. The password is in clear: never log the result."""
    password = settings.password.get_secret_value() if settings.password else None
    options: dict[str, Any] = {
        "username": settings.username,
        "password": password,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    if settings.tls:
        options |= {
            "ssl": True,
            "ssl_ca_certs": str(settings.tls_cafile) if settings.tls_cafile else None,
            "ssl_certfile": str(settings.tls_certfile) if settings.tls_certfile else None,
            "ssl_keyfile": str(settings.tls_keyfile) if settings.tls_keyfile else None,
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
        }
    return options


def sync_client(
    settings: RedisSettings, *, port: int | None = None, timeout_s: float = 2.0
) -> redis.Redis:
    """A plain (blocking) client of one node: ``port`` (default the settings'), database 0 on
    a cluster node."""
    return redis.Redis(
        host=settings.host,
        port=settings.port if port is None else port,
        db=0 if settings.cluster_nodes else settings.db,
        **client_options(settings, timeout_s),
    )


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def explain(exc: BaseException, where: str, settings: RedisSettings) -> str | None:
    """What to fix when ``exc`` is a refused login or a failed TLS handshake, naming the
    settings (never their values: Redis does not echo a password back); None for any other
    failure."""
    chain = _chain(exc)
    if any(
        isinstance(e, redis.AuthenticationError) or str(e).startswith(("NOAUTH", "WRONGPASS"))
        for e in chain
    ):
        cause = chain[-1] if len(chain) > 1 else exc
        return (
            f"{where} refused the login ({cause}): check SLIDR_REDIS__USERNAME and "
            "SLIDR_REDIS__PASSWORD"
        )
    tls = [e for e in chain if isinstance(e, ssl.SSLError) or "[SSL" in str(e)]
    if tls:
        return (
            f"the TLS handshake with {where} failed ({tls[-1]}): check SLIDR_REDIS__TLS_CAFILE "
            "(the CA that signed Redis's certificate), SLIDR_REDIS__TLS_CERTFILE and "
            "SLIDR_REDIS__TLS_KEYFILE (a client certificate, if Redis asks for one) and "
            "SLIDR_REDIS__TLS (whether the port serves TLS)"
        )
    closed = ("closed", "reset by peer", "lost")
    if not settings.tls and any(word in str(e).lower() for e in chain for word in closed):
        return (
            f"{where} closed the connection ({exc}); if it serves TLS only, set "
            "SLIDR_REDIS__TLS=true and SLIDR_REDIS__TLS_CAFILE"
        )
    return None
