"""An upgraded slidr whose feature list changed: `slidr stack up` serves a day-zero version of
the current features instead of leaving the local pipeline on a version no worker accepts."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from models.day_zero import serve_current_features
from slidr.features import FEATURE_HASH
from slidr.model_record import METADATA_FILE
from slidr.registry import Registry, TritonVersions
from slidr.settings import Settings
from streams.scorer import TritonScorer
from streams.serving_model import ServingModel
from tests.stack_fixtures import private_model

pytestmark = pytest.mark.integration


async def _worker_check(settings: Settings) -> int:
    scorer = TritonScorer(settings.triton)
    try:
        return (await ServingModel(settings, scorer).load()).version
    finally:
        await scorer.aclose()


def test_a_serving_version_of_another_feature_list_is_replaced_by_day_zero(
    stack_settings: Settings,
) -> None:
    settings = private_model(stack_settings)
    t = settings.triton
    model_dir = Path(t.model_repository) / t.model_name
    registry = Registry(settings, TritonVersions(t))
    assert registry.serving().version == 1
    assert serve_current_features(settings) is None  # current features: nothing to do

    # What an older slidr left: a version trained on another feature list, serving.
    shutil.copytree(model_dir / "1", model_dir / "2")
    meta_path = model_dir / "2" / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "feature_hash": "0123456789abcdef"}))
    registry.register(2)
    registry.promote(2)
    with pytest.raises(Exception, match="trained on features"):
        asyncio.run(_worker_check(settings))

    assert serve_current_features(settings) == (2, 3)
    serving = registry.serving()
    assert serving.version == 3 and serving.metadata["feature_hash"] == FEATURE_HASH
    assert "version 2 was trained on 0123456789abcdef" in serving.history[-1].why
    assert asyncio.run(_worker_check(settings)) == 3
    assert serve_current_features(settings) is None
