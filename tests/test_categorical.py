"""The categorical click fields as hashed bucket ids (issue 14 item 3): computed from the click
alone, stable across processes, covered by the feature hash, learned by the network and by the
baselines in their fair forms."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest
import torch
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from models import baselines
from models.dataset import LabelReport
from models.network import SlidrNet, Split, predict
from models.train import categorical_inputs, embedding_settings
from slidr.events import Click, DeviceType, Platform
from slidr.features import (
    CATEGORICAL_BUCKETS,
    CATEGORICAL_COLUMNS,
    FEATURE_HASH,
    FEATURES,
    HEAVY_TAILED,
    INDEX,
    SPEC,
    Categorical,
    FeatureSpec,
    bucket,
    category_text,
    ip_prefix,
    ua_family,
)
from slidr.settings import PROJECT_ROOT, LearnSettings
from streams.feature_store import local_features
from tests.factories import feature_rows

AT = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


def click(n: int, **fields: object) -> Click:
    values: dict[str, object] = {
        "click_id": f"c-{n}",
        "event_time": AT,
        "session_id": f"s-{n % 3}",
        "customer_id": None,
        "logged_in": False,
        "ip": f"198.51.{n % 4}.{n}",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0.0.0 Safari/537.36",
        "device_type": DeviceType.DESKTOP,
        "platform": Platform.WINDOWS,
        "marketplace": "US",
        "ad_id": f"ad-{n % 5}",
        "campaign_id": f"cmp-{n % 2}",
        "advertiser_id": "adv-1",
        "placement": None if n % 2 else f"query {n}",
    }
    values.update(fields)
    return Click(**values)  # type: ignore[arg-type]


def clicks() -> list[Click]:
    out = [click(n) for n in range(12)]
    out.append(click(12, ip="2001:db8:1:2::5", user_agent="python-requests/2.31.0"))
    out.append(click(13, ip="2001:db8:1:ffff::9", user_agent="td-device-1/os-19"))
    out.append(click(14, device_type=DeviceType.APP, platform=Platform.IOS, marketplace="DE"))
    return out


def test_the_ids_are_computed_from_the_click_alone() -> None:
    batch = clicks()
    out = local_features(batch)  # no Redis: the features a worker has without the store
    for spec in SPEC.categorical:
        want = [
            bucket(category_text(spec.source, getattr(c, spec.click_field)), spec.buckets)
            for c in batch
        ]
        assert out[:, INDEX[spec.name]].tolist() == want, spec.name
        assert all(0 <= v < spec.buckets for v in want)
    placement = out[:, INDEX["placement_bucket"]]
    assert (placement[1::2][:6] == 0).all() and (placement[0::2][:6] > 0).all()  # none -> 0
    ips = out[:, INDEX["ip_prefix_bucket"]]
    assert ips[0] == ips[4] == ips[8] != ips[1]  # one /24
    assert ips[12] == ips[13]  # one /48
    families = out[:, INDEX["ua_family_bucket"]]
    assert families[0] == families[1] != families[12] != families[13]
    # In order and alone: the ids of a click do not depend on the batch it came in.
    singles = np.vstack([local_features([c]) for c in batch])
    assert (singles[:, list(CATEGORICAL_COLUMNS)] == out[:, list(CATEGORICAL_COLUMNS)]).all()


def test_the_parses_are_the_documented_ones() -> None:
    assert ip_prefix("203.0.113.77") == "203.0.113.0/24"
    assert ip_prefix("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert ua_family("python-requests/2.31.0") == "scripted"
    assert ua_family("Mozilla/5.0 (Windows NT 10.0) Chrome/124.0 Safari/537.36 Edg/124.0") == "edge"
    assert ua_family("Mozilla/5.0 (iPhone) Version/17.4.1 Mobile/15E148 Safari/604.1") == "safari"
    assert ua_family("td-device-3032/os-607") == "td-os-607"
    assert ua_family("") == ""


_PRINT_IDS = """
import json, sys
from tests.test_categorical import clicks
from slidr.features import CATEGORICAL_COLUMNS
from streams.feature_store import local_features
out = local_features(clicks())[:, list(CATEGORICAL_COLUMNS)]
json.dump(out.tolist(), sys.stdout)
"""


@pytest.mark.parametrize("hash_seed", ["1", "4242"])
def test_the_ids_are_the_same_in_another_process(hash_seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    got = subprocess.run(
        [sys.executable, "-c", _PRINT_IDS],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    want = local_features(clicks())[:, list(CATEGORICAL_COLUMNS)].tolist()
    assert json.loads(got.stdout) == want


def test_every_device_type_and_platform_has_its_own_bucket() -> None:
    for spec, values in (
        (SPEC.categorical[0], list(DeviceType)),
        (SPEC.categorical[1], list(Platform)),
    ):
        ids = {bucket(str(v), spec.buckets) for v in values}
        assert len(ids) == len(values) and 0 not in ids, spec.name


def test_the_feature_hash_covers_the_categorical_fields() -> None:
    first = SPEC.categorical[0]
    wider = dataclasses.replace(first, buckets=first.buckets * 2)
    other = FeatureSpec(SPEC.velocity, SPEC.distinct, (wider, *SPEC.categorical[1:]))
    assert other.digest() != FEATURE_HASH
    fewer = FeatureSpec(SPEC.velocity, SPEC.distinct, SPEC.categorical[1:])
    assert fewer.digest() != FEATURE_HASH
    assert FeatureSpec(SPEC.velocity, SPEC.distinct, SPEC.categorical).digest() == FEATURE_HASH
    # Not compressed or standardised as counts: the models read them as categories.
    assert not set(HEAVY_TAILED) & set(CATEGORICAL_COLUMNS)
    assert FEATURES[-len(SPEC.categorical) :] == tuple(c.name for c in SPEC.categorical)
    # Exact in float32, the one input tensor's type.
    assert max(CATEGORICAL_BUCKETS) <= 1 << 24
    with pytest.raises(ValueError, match="unknown source"):
        Categorical("x_bucket", "no_such_field", 16)


def rows(n: int, seed: int) -> npt.NDArray[np.float32]:
    return feature_rows(n, seed, ids_per_field=40)


@pytest.mark.parametrize("cross_layers", [0, 2])
def test_the_network_reads_the_ids_and_survives_corrupt_ones(cross_layers: int) -> None:
    torch.manual_seed(0)
    x = rows(300, 1)
    net = SlidrNet((16, 8), cross_layers=cross_layers)
    net.fit_standardisation(torch.from_numpy(x))
    for table in net.embeddings:
        assert isinstance(table, torch.nn.Embedding)
        assert float(table.weight.detach().abs().max()) == 0.0  # an unseen bucket adds nothing
        torch.nn.init.normal_(table.weight)
    net.eval()
    ad = INDEX["ad_bucket"]
    other = x.copy()
    other[:, ad] = (other[:, ad] + 1) % 40
    assert np.abs(predict(net, other) - predict(net, x)).max() > 1e-4
    corrupt = x[:4].copy()
    corrupt[:, ad] = [-3.0, 1e12, 0.5, float(CATEGORICAL_BUCKETS[3])]
    assert np.isfinite(predict(net, corrupt)).all()
    # Without embeddings the ids are not read at all.
    plain = SlidrNet((16, 8), embeddings=False).eval()
    assert (predict(plain, other) == predict(plain, x)).all()


def test_the_baselines_see_the_ids_in_their_fair_forms() -> None:
    with threadpool_limits(limits=1):  # OpenMP's threads crawl when others share the cores
        check_the_baselines()


def check_the_baselines() -> None:
    rng = np.random.default_rng(3)
    x = rows(8000, 2)
    ad = INDEX["ad_bucket"]
    # 20 frequent values (each above the one-hot's and the embeddings' minimum of rows), and
    # 300 rare ones: more values than the trees' 255 categories.
    i = rng.permutation(len(x))
    x[:, ad] = np.where(i < 7000, i % 20, 100 + i % 300)
    y = (x[:, ad] % 3 == 0).astype(np.float32)  # a label only the ids carry
    fit = Split(x[:6000], y[:6000], np.ones(6000, dtype=np.float32))
    held, truth = x[6000:], y[6000:]
    for learner in (baselines.logistic_regression, baselines.boosted_trees):
        with_ids = roc_auc_score(truth, learner(fit, 0)(held))
        without = roc_auc_score(truth, learner(fit, 0, categorical=())(held))
        assert with_ids > 0.8 and without < 0.6, (learner.__name__, with_ids, without)
    unseen = held[:2].copy()
    unseen[:, ad] = 10_000.0  # a bucket no fit row had
    assert np.isfinite(baselines.logistic_regression(fit, 0)(unseen)).all()
    assert np.isfinite(baselines.boosted_trees(fit, 0)(unseen)).all()


def test_the_network_embeds_the_chosen_fields_and_reads_rare_buckets_as_none() -> None:
    x = rows(400, 4)
    ad, ua = INDEX["ad_bucket"], INDEX["user_agent_bucket"]
    x[:, ad] = np.where(np.arange(len(x)) < 390, 7.0, np.arange(len(x)) % 5 + 100)  # 7 is common
    net = SlidrNet((16, 8), embeddings=("ad_bucket", "user_agent_bucket"))
    assert [FEATURES[int(c)] for c in net.categorical] == ["ad_bucket", "user_agent_bucket"]
    net.fit_vocabulary(torch.from_numpy(x), min_rows=20)
    for table in net.embeddings:
        assert isinstance(table, torch.nn.Embedding)
        torch.nn.init.normal_(table.weight)
    net.eval()
    known = net.get_buffer("known0")
    assert bool(known[7]) and bool(known[0]) and not bool(known[100:105].any())
    rare, none = x[:1].copy(), x[:1].copy()
    rare[:, ad], none[:, ad] = 101.0, 0.0
    assert predict(net, rare) == predict(net, none)  # too few rows: read as no value
    other = x[:1].copy()
    other[:, INDEX["campaign_bucket"]] += 1  # not embedded: not read
    assert predict(net, other) == predict(net, x[:1])
    assert ua in net.categorical.tolist()
    with pytest.raises(ValueError, match="not categorical"):
        SlidrNet((16, 8), embeddings=("ip_clicks_1m",))


def test_ids_that_name_a_user_are_left_out_when_labels_are_given_per_customer() -> None:
    per_customer = LabelReport(
        clicks=10,
        without_features=0,
        not_yet_labelled=0,
        labelled=10,
        human_by_purchase=2,
        human_by_rfm=3,
        non_human=5,
        as_of="2026-01-01T00:00:00+00:00",
    )
    per_click = dataclasses.replace(per_customer, human_by_rfm=0)  # e.g. TalkingData
    learn = LearnSettings()
    inputs = categorical_inputs(learn, per_customer)
    assert [FEATURES[c] for c in CATEGORICAL_COLUMNS if c not in inputs] == [
        "ip_prefix_bucket",
        "user_agent_bucket",
    ]
    assert categorical_inputs(learn, per_click) == CATEGORICAL_COLUMNS
    always = learn.model_copy(update={"identifying_ids": "always"})
    never = learn.model_copy(update={"identifying_ids": "never"})
    assert categorical_inputs(always, per_customer) == CATEGORICAL_COLUMNS
    assert categorical_inputs(never, per_click) == inputs
    # The network embeds what the others read, narrowed further by its own choice.
    net = SlidrNet((16, 8), embeddings=embedding_settings(learn, inputs).embeddings)
    assert sorted(net.categorical.tolist()) == sorted(inputs)
    some = learn.model_copy(update={"embeddings": ("ad_bucket", "ip_prefix_bucket")})
    assert embedding_settings(some, inputs).embeddings == ("ad_bucket",)
    none = learn.model_copy(update={"embeddings": False})
    assert embedding_settings(none, inputs).embeddings is False
