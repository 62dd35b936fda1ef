"""Redis over TLS (``SLIDR_REDIS__TLS``) with the slidr ACL user: every client built from one
settings block (slidr/redis_config.py), a TLS-only local Redis (one node and a cluster), a
worker deciding clicks through it, the narrow command list, and errors that name the setting."""

from __future__ import annotations

import ast
import datetime as dt
import re
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr, ValidationError

from slidr.redis_config import APP_COMMANDS, client_options, ssl_context, sync_client
from slidr.settings import PROJECT_ROOT, RedisSettings, Settings
from slidr.stack.redis_server import CLUSTER_ADMIN, RedisService
from streams.feature_store import FeatureStoreUnavailable, RedisFeatureStore
from tests.client_sites import called_name, construction_sites, spreads_a_call_to
from tests.factories import mixed_traffic
from tests.pki import make_pki
from tests.stack_fixtures import redis_only, running
from tests.test_feature_store import T0, make_click
from tests.worker_harness import WorkerProcess, isolated

PASSWORD = f"tls-{uuid.uuid4().hex}"
USER = "slidr-app"
_CLIENTS = {"Redis", "RedisCluster", "StrictRedis"}
_BUILDERS = {"client_options", "_client_options"}


# --- every client goes through slidr.redis_config ----------------------------------------------


def _client_constructions(path: Path) -> list[tuple[int, bool]]:
    """(line, built from the settings) for each Redis/RedisCluster construction in a file: it
    counts if one of its ``**`` arguments is a client_options(...) call."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and called_name(node) in _CLIENTS:
            found.append((node.lineno, spreads_a_call_to(node, _BUILDERS)))
    return found


def test_every_redis_client_in_the_project_is_built_from_the_settings() -> None:
    sites = construction_sites(_client_constructions)
    # the enumeration must see the constructions there are, or it proves nothing: the store's
    # single-node and cluster clients and the one blocking client everything else uses
    for module in ("streams/feature_store/nodes.py", "slidr/redis_config.py"):
        assert any(site.startswith(module + ":") for site in sites), module
    assert sum(site.startswith("streams/feature_store/nodes.py:") for site in sites) == 2
    assert [site for site, ok in sites.items() if not ok] == []


def test_the_acl_user_may_run_every_command_the_scripts_call() -> None:
    called = set()
    for path in sorted((PROJECT_ROOT / "streams").rglob("*.lua")):
        called |= set(re.findall(r"redis\.p?call\(['\"](\w+)['\"]", path.read_text()))
    assert {"HMGET", "HSET", "PEXPIRE"} <= called  # the scan finds the scripts' calls
    assert {c.lower() for c in called} <= set(APP_COMMANDS)


def test_tls_settings_map_to_redis_py_and_the_link(tmp_path: Path) -> None:
    ca, certs, keys = make_pki(tmp_path, ("client",))
    plain = RedisSettings()
    assert ssl_context(plain) is None and "ssl" not in client_options(plain, 1.0)
    assert plain.url == "redis://127.0.0.1:16379/0"
    tls = RedisSettings(
        tls=True, tls_cafile=ca, tls_certfile=certs["client"], tls_keyfile=keys["client"]
    )
    options = client_options(tls, 1.0)
    assert options["ssl"] is True and options["ssl_ca_certs"] == str(ca)
    assert (options["ssl_certfile"], options["ssl_keyfile"]) == (
        str(certs["client"]),
        str(keys["client"]),
    )
    assert options["ssl_check_hostname"] is True and options["ssl_cert_reqs"] == "required"
    context = ssl_context(tls)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert tls.url.startswith("rediss://")


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValidationError, match="SLIDR_REDIS__TLS_KEYFILE"):
        RedisSettings(tls=True, tls_certfile=Path("c.pem"))
    with pytest.raises(ValidationError, match="SLIDR_REDIS__SERVER_KEYFILE"):
        RedisSettings(tls=True, server_certfile=Path("c.pem"))


# --- a TLS-only local Redis with the ACL user ----------------------------------------------------


def _tls(root: Path) -> dict[str, Any]:
    """The slidr user over mutual TLS: the settings of a client and of the local Redis."""
    ca, certs, keys = make_pki(root / "pki", ("server", "client"))
    return {
        "username": USER,
        "password": SecretStr(PASSWORD),
        "tls": True,
        "tls_cafile": ca,
        "tls_certfile": certs["client"],
        "tls_keyfile": keys["client"],
        "server_certfile": certs["server"],
        "server_keyfile": keys["server"],
    }


@pytest.fixture(scope="module", params=[0, 3], ids=["single", "cluster"])
def tls_redis(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisService]:
    root = tmp_path_factory.mktemp("redis-tls")
    with running(RedisService(redis_only(root, request.param, **_tls(root)))) as service:
        yield service


def test_the_nodes_serve_tls_only(tls_redis: RedisService) -> None:
    health = tls_redis.health()
    assert health.ok, health
    s = tls_redis.settings
    for port in tls_redis.ports:
        # without TLS: the node closes the connection (its port speaks TLS only)
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host=s.host, port=port, socket_timeout=2).ping()
        # with TLS but no client certificate: refused (tls-auth-clients yes)
        bare = s.model_copy(update={"tls_certfile": None, "tls_keyfile": None})
        with pytest.raises(redis.ConnectionError), sync_client(bare, port=port) as client:
            client.ping()
    if tls_redis.cluster:
        # the admin that formed the cluster is gone from every node, its password with it
        conf = (tls_redis.workdir / f"node-{s.port}" / "redis.conf").read_text()
        found = re.search(rf'user {CLUSTER_ADMIN} reset on ">([\w-]+)"', conf)
        assert found is not None, conf
        admin = s.model_copy(
            update={"username": CLUSTER_ADMIN, "password": SecretStr(found.group(1))}
        )
        for port in tls_redis.ports:
            with pytest.raises(redis.AuthenticationError), sync_client(admin, port=port) as c:
                c.ping()


async def test_the_feature_store_counts_over_tls(tls_redis: RedisService) -> None:
    prefix = f"{tls_redis.settings.key_prefix}tls-{uuid.uuid4().hex}:"
    settings = tls_redis.settings.model_copy(update={"key_prefix": prefix})
    async with RedisFeatureStore(settings, timeout_s=2.0) as store:
        await store.ping()
        first = await store.features([make_click("a", T0), make_click("b", T0)])
        again = await store.features([make_click("a", T0), make_click("b", T0)])
        assert (first == again).all()
        memory = await store.memory()
        assert len(memory) == len(tls_redis.ports) and sum(m.keys for m in memory) > 0
        assert await store.drop_namespace() > 0


def test_the_user_may_not_administer_redis(tls_redis: RedisService) -> None:
    with tls_redis.client() as client:
        client.ping()
        assert client.info("memory")["used_memory"] > 0
        for command in (
            ("FLUSHALL",),
            ("FLUSHDB",),
            ("CONFIG", "SET", "maxmemory", "1"),
            ("CONFIG", "GET", "requirepass"),
            ("KEYS", "*"),
            ("ACL", "LIST"),
            ("SHUTDOWN", "NOSAVE"),
            ("MONITOR",),
            ("CLUSTER", "RESET"),
            ("SCRIPT", "FLUSH"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
    assert tls_redis.health().ok  # still up: SHUTDOWN was refused


async def test_a_client_without_the_ca_is_told_which_setting(
    tls_redis: RedisService, caplog: pytest.LogCaptureFixture
) -> None:
    no_ca = tls_redis.settings.model_copy(update={"tls_cafile": None})  # the system CAs
    async with RedisFeatureStore(no_ca, timeout_s=2.0) as store:
        for call in (store.features([make_click("a", T0)]), store.ping()):
            with pytest.raises(FeatureStoreUnavailable, match="SLIDR_REDIS__TLS_CAFILE"):
                await call
    health = RedisService(Settings(state_dir=tls_redis.workdir.parent, redis=no_ca)).health()
    assert not health.ok and "SLIDR_REDIS__TLS_CAFILE" in health.detail, health
    plain = tls_redis.settings.model_copy(update={"tls": False})
    async with RedisFeatureStore(plain, timeout_s=2.0) as store:
        with pytest.raises(FeatureStoreUnavailable, match="SLIDR_REDIS__TLS=true"):
            await store.features([make_click("a", T0)])
    assert PASSWORD not in caplog.text


# --- a worker through a TLS-only Redis ---------------------------------------------------------


@pytest.mark.integration
def test_a_worker_decides_through_a_tls_only_redis_as_the_acl_user(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """The session's Kafka and Triton, a Redis of its own that speaks TLS only (mutual) and
    knows only the slidr user: every decision judged, none degraded."""
    root = tmp_path / "redis"
    settings = isolated(
        stack_settings.model_copy(
            update={"state_dir": root / "state", "redis": redis_only(root, **_tls(root)).redis}
        )
    )
    # the user is limited to the isolated key prefix
    with running(RedisService(settings)) as service:
        clicks = mixed_traffic(40, "tls", dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        decisions = worker.decide(clicks)
        assert {d["click_id"] for d in decisions} == {c.click_id for c in clicks}, worker.log()
        assert not [d for d in decisions if d["degraded"]], worker.log()
        with service.client() as client:
            assert client.dbsize() > 0  # the counters are in this Redis
        assert PASSWORD not in worker.log_path.read_text()
