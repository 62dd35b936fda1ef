"""The local stack's Redis with an ACL user (``SLIDR_REDIS__USERNAME``): the feature store and
the stack's checks log in as it, the default user is off, and a wrong password says which
settings to fix without printing it."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr
from redis.crc import key_slot

from slidr.settings import RedisSettings, Settings
from slidr.stack.redis_server import RedisService
from streams.feature_store import FeatureStoreUnavailable, RedisFeatureStore
from tests.stack_fixtures import redis_only, running
from tests.test_feature_store import T0, make_click

pytestmark = pytest.mark.integration

PASSWORD = 'acl-Test "pass" #1'  # quotes, a space and a hash: redis.conf must quote them
USER = "slidr-app"


@pytest.fixture(scope="module", params=[0, 3], ids=["single", "cluster"])
def acl_redis(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisService]:
    root = tmp_path_factory.mktemp("acl")
    user = {"username": USER, "password": SecretStr(PASSWORD)}
    with running(RedisService(redis_only(root, request.param, **user))) as service:
        yield service


def test_a_username_needs_a_password() -> None:
    with pytest.raises(ValueError, match="SLIDR_REDIS__PASSWORD"):
        RedisSettings(username=USER)


def test_the_config_defines_the_user_and_turns_the_default_off(acl_redis: RedisService) -> None:
    health = acl_redis.health()
    assert health.ok, health
    for conf in acl_redis.workdir.rglob("redis.conf"):
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        text = conf.read_text()
        assert "user default off" in text and "requirepass" not in text
    for pid in acl_redis.proc.pids().values():
        assert pid is not None
        assert PASSWORD.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_the_default_user_is_refused(acl_redis: RedisService) -> None:
    s = acl_redis.settings
    anonymous = redis.Redis(host=s.host, port=s.port)
    default = redis.Redis(host=s.host, port=s.port, username="default", password=PASSWORD)
    for client in (anonymous, default):
        with client, pytest.raises(redis.AuthenticationError):
            client.ping()


def test_the_user_is_limited_to_the_slidr_prefixes(acl_redis: RedisService) -> None:
    # A hash tag whose slot the first node owns (the lowest slots; one node owns all of them).
    tag = next(f"{{t{i}}}" for i in range(10_000) if key_slot(f"t{i}".encode()) < 100)
    with acl_redis.client() as client:
        client.set(f"{acl_redis.settings.key_prefix}{tag}acl-probe", "1", ex=60)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set(f"other:{tag}", "1")


async def test_the_feature_store_works_as_the_user(acl_redis: RedisService) -> None:
    settings = acl_redis.settings.model_copy(update={"key_prefix": f"acl-{uuid.uuid4().hex}:"})
    # A prefix outside the user's patterns is refused: proof the store is that user.
    async with RedisFeatureStore(settings) as outside:
        with pytest.raises(FeatureStoreUnavailable):
            await outside.features([make_click("a", T0)])
    settings = acl_redis.settings.model_copy(
        update={"key_prefix": f"{acl_redis.settings.key_prefix}acl-{uuid.uuid4().hex}:"}
    )
    async with RedisFeatureStore(settings) as store:
        await store.ping()
        first = await store.features([make_click("a", T0)])
        again = await store.features([make_click("a", T0)])
        assert (first == again).all()
        assert await store.drop_namespace() > 0


@pytest.mark.parametrize(
    "update",
    [{"password": SecretStr("not-it")}, {"username": "nobody"}, {"username": None}],
    ids=["wrong-password", "wrong-user", "default-user"],
)
async def test_a_wrong_login_names_the_settings_not_the_password(
    acl_redis: RedisService, update: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    wrong = acl_redis.settings.model_copy(update=update)
    async with RedisFeatureStore(wrong, timeout_s=1.0) as store:
        for call in (store.features([make_click("a", T0)]), store.ping()):
            with pytest.raises(FeatureStoreUnavailable) as caught:
                await call
            message = str(caught.value)
            assert "SLIDR_REDIS__USERNAME" in message and "SLIDR_REDIS__PASSWORD" in message
            assert "not-it" not in message and PASSWORD not in message
    assert "not-it" not in caplog.text and PASSWORD not in caplog.text
    settings = Settings(state_dir=acl_redis.workdir.parent, redis=wrong)
    health = RedisService(settings).health()
    assert not health.ok and "SLIDR_REDIS__PASSWORD" in health.detail
    assert "not-it" not in health.detail and PASSWORD not in health.detail
