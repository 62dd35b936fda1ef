"""The event models as JSON Schema files, for producers and consumers in other languages.

The models are the one definition: msgspec structs for the upstream events (``Click``,
``Purchase``: decoded on the hot path), pydantic models for the rest (``slidr/events.py``,
``slidr/replay_messages.py``). The files under ``contracts/`` are generated from
them by ``slidr contracts`` and committed, and a test fails when they differ. Each schema is the
model's *validation* schema: what slidr accepts, and what a consumer can rely on across the
topic's retention (a field with a default may be absent from messages written before it
existed). A rule a model keeps in code is written here in JSON Schema (:data:`EXTRA_RULES`; the
IP formats are on the field's ``Meta`` in ``slidr/events.py``); the rest are prose in
``docs/contracts.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from pydantic import BaseModel

from slidr.events import Click, DeadLetter, Decision, Purchase
from slidr.replay_messages import ReplayProgress, ReplayRequest
from slidr.settings import PROJECT_ROOT, Settings

#: Where the committed schema files live.
CONTRACTS_DIR = PROJECT_ROOT / "contracts"
#: The one command that rewrites them (named by the sync test and ``--check``).
REGENERATE = ".venv/bin/slidr contracts"
SUFFIX = ".schema.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

Model = type[BaseModel] | type[msgspec.Struct]


@dataclass(frozen=True)
class Contract:
    """One message type: its file stem, its model, and the topics that carry it."""

    name: str
    model: Model
    topics: Callable[[Settings], tuple[str, ...]]

    @property
    def filename(self) -> str:
        return self.name + SUFFIX


CONTRACTS: tuple[Contract, ...] = (
    Contract("click", Click, lambda s: (s.topics.clicks,)),
    Contract("purchase", Purchase, lambda s: (s.topics.purchases,)),
    Contract("decision", Decision, lambda s: (s.topics.decisions, s.topics.replayed_decisions)),
    Contract("dead-letter", DeadLetter, lambda s: (s.topics.dead_letters,)),
    Contract("replay-request", ReplayRequest, lambda s: (s.replay.requests_topic,)),
    Contract("replay-progress", ReplayProgress, lambda s: (s.replay.progress_topic,)),
)

#: Cross-field rules the models keep in code, stated in JSON Schema (a test checks that the model
#: and a JSON Schema validator agree on events that break them).
EXTRA_RULES: Mapping[Model, list[dict[str, Any]]] = {
    Click: [
        {
            "$comment": "logged_in is true exactly when customer_id is set",
            "if": {"properties": {"logged_in": {"const": True}}, "required": ["logged_in"]},
            "then": {"properties": {"customer_id": {"type": "string"}}},
            "else": {"properties": {"customer_id": {"type": "null"}}},
        }
    ],
}


def _body(model: Model) -> dict[str, Any]:
    if issubclass(model, BaseModel):
        return model.model_json_schema(mode="validation")
    # msgspec puts every struct and enum in $defs and refers to the model; its own definition
    # goes at the top, as pydantic writes it.
    out = msgspec.json.schema(model)
    defs: dict[str, Any] = out["$defs"]
    body: dict[str, Any] = defs.pop(model.__name__)
    return {"$defs": defs, **body} if defs else body


def schema_of(model: Model) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one model, with its extra rules."""
    schema: dict[str, Any] = {"$schema": DIALECT, **_body(model)}
    if model in EXTRA_RULES:
        schema["allOf"] = EXTRA_RULES[model]
    return schema


def render(contract: Contract) -> str:
    """The file's exact text: stable key order, two-space indent, a final newline."""
    return json.dumps(schema_of(contract.model), indent=2, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    """Every contract file's name and text."""
    return {c.filename: render(c) for c in CONTRACTS}


def stale_files(directory: Path = CONTRACTS_DIR) -> list[str]:
    """Names of the files in ``directory`` that are missing, differ from the models, or belong
    to no contract; empty when the directory is in sync."""
    expected = render_all()
    stale = [
        name
        for name, text in expected.items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]
    if directory.is_dir():
        stale += sorted(p.name for p in directory.glob("*" + SUFFIX) if p.name not in expected)
    return stale


def write_all(directory: Path = CONTRACTS_DIR) -> list[str]:
    """Write every contract file, delete schema files of no contract; return what changed."""
    changed = stale_files(directory)
    directory.mkdir(parents=True, exist_ok=True)
    expected = render_all()
    for name in changed:
        if name in expected:
            (directory / name).write_text(expected[name])
        else:
            (directory / name).unlink()
    return changed
