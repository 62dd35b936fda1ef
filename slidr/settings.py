"""One settings tree for the whole system.

Every value can be overridden by an environment variable: ``SLIDR_`` plus the path in upper
case joined by ``__``, e.g. ``SLIDR_KAFKA__PORT=9092`` or ``SLIDR_TOPICS__CLICKS=clicks``.
Ports, hosts and topic names are defined here only; the local stack, docker-compose.yml and the
tests read them from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from slidr.errors import SettingsError
from slidr.slices import DEFAULT_SLICE_FIELDS, check_fields

#: The repository (or installed source tree) root: triton_repo/ sits here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "slidr"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    #: Its variables' prefix, SLIDR_ and its name in the settings tree (set by the sections
    #: whose checks name their variables).
    ENV: ClassVar[str] = "SLIDR_"

    def _paired(self, what: str, first: str, second: str) -> None:
        """Refuse one of two settings that go together (a certificate and its key) without
        the other, naming both variables."""
        if (getattr(self, first) is None) != (getattr(self, second) is None):
            both = f"{self.ENV}{first.upper()} and {self.ENV}{second.upper()}"
            raise ValueError(f"{what} needs both {both}")


class KafkaSettings(_Section):
    ENV = "SLIDR_KAFKA__"
    host: str = "127.0.0.1"
    port: int = 19092
    controller_port: int = 19093
    #: Broker version fetched from Maven Central by the local stack.
    version: str = "4.1.1"
    #: Heap of each local broker; small on purpose, it shares 2 cores with everything else.
    heap: str = "512m"
    #: Brokers of the cluster. 1: one broker at host:port. N: broker i (0-based) listens on
    #: port + 2i and its KRaft controller on controller_port + 2i (19092/19093, 19094/19095,
    #: 19096/19097); every client bootstraps from all of them, and the local stack runs N
    #: combined broker+controller processes (a quorum of N voters).
    brokers: int = Field(default=1, ge=1, le=9)
    #: Copies of every partition slidr creates (its topics, and the broker's consumer-offsets
    #: and transaction-state topics). 3 on a production cluster; at most ``brokers``.
    replication_factor: int = Field(default=1, ge=1)
    #: In-sync copies a write needs before it is acknowledged (producers use ``acks=all``):
    #: with 3 replicas and 2 here, one broker can be lost without losing an acknowledged
    #: message or refusing writes. At most ``replication_factor``.
    min_insync_replicas: int = Field(default=1, ge=1)
    #: How every client (Faust's aiokafka, librdkafka) talks to the broker; mapped once in
    #: slidr/kafka_config.py. The local stack opens its listener with the same protocol.
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: PEM CA bundle that signed the broker's certificate (SSL, SASL_SSL); None: system CAs.
    ssl_cafile: Path | None = None
    #: Optional client certificate and its unencrypted PEM key (mutual TLS).
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    #: Local stack only: the broker's certificate chain and unencrypted PEM key (SSL listeners).
    broker_certfile: Path | None = None
    broker_keyfile: Path | None = None

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        # Refused here, at start-up, rather than as an authentication failure at the broker.
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs SLIDR_KAFKA__SASL_USERNAME "
                "and SLIDR_KAFKA__SASL_PASSWORD"
            )
        self._paired("a client certificate", "ssl_certfile", "ssl_keyfile")
        return self

    @model_validator(mode="after")
    def _replication_fits(self) -> KafkaSettings:
        if self.replication_factor > self.brokers:
            raise ValueError(
                f"SLIDR_KAFKA__REPLICATION_FACTOR={self.replication_factor} needs at least as "
                f"many brokers (SLIDR_KAFKA__BROKERS={self.brokers})"
            )
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"SLIDR_KAFKA__MIN_INSYNC_REPLICAS={self.min_insync_replicas} is more than the "
                f"replication factor ({self.replication_factor}): every write would be refused"
            )
        ports = [*self.broker_ports, *self.controller_ports]
        if len(set(ports)) != len(ports):
            raise ValueError(
                f"broker ports {self.broker_ports} and controller ports {self.controller_ports} "
                "overlap: broker i uses SLIDR_KAFKA__PORT + 2i and SLIDR_KAFKA__CONTROLLER_PORT "
                "+ 2i; choose ports that keep them apart"
            )
        return self

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def broker_ports(self) -> list[int]:
        """Each broker's client port, broker 0 first.

        >>> KafkaSettings(brokers=3).broker_ports
        [19092, 19094, 19096]
        """
        return [self.port + 2 * i for i in range(self.brokers)]

    @property
    def controller_ports(self) -> list[int]:
        """Each broker's KRaft controller port, broker 0 first."""
        return [self.controller_port + 2 * i for i in range(self.brokers)]

    @property
    def bootstrap(self) -> str:
        """Every client's ``bootstrap.servers``: all brokers, so any one of them may be down.

        >>> KafkaSettings(brokers=3, port=9092, controller_port=9093).bootstrap
        '127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096'
        """
        return ",".join(f"{self.host}:{port}" for port in self.broker_ports)


class TopicSettings(_Section):
    clicks: str = "slidr.clicks"
    purchases: str = "slidr.purchases"
    decisions: str = "slidr.decisions"
    replayed_decisions: str = "slidr.decisions.replayed"
    dead_letters: str = "slidr.dead-letters"
    #: Ground truth of simulated traffic, for evaluation only; never read by the pipeline.
    truth: str = "slidr.sim.truth"
    partitions: int = 4
    #: Clicks are kept long enough for a weekly replay.
    clicks_retention_hours: int = 24 * 8
    decisions_retention_hours: int = 24 * 8
    dead_letters_retention_hours: int = 24 * 14


class RedisSettings(_Section):
    ENV = "SLIDR_REDIS__"
    host: str = "127.0.0.1"
    port: int = 16379
    db: int = 0
    #: An ACL user (with ``password``). None: the password is the default user's
    #: (``requirepass``). Set, the local stack defines this user, limited to the live and
    #: replay key prefixes, and turns the passwordless default user off.
    username: str | None = None
    password: SecretStr | None = None
    #: Prefix of every key the pipeline writes; tests and replays use their own.
    key_prefix: str = "slidr:"
    #: 0: one Redis node at host:port. N (3 or more): a Redis Cluster of N masters; clients
    #: start from host:port and discover the rest, and the local stack runs the nodes on ports
    #: port .. port + N - 1.
    cluster_nodes: int = Field(default=0, ge=0)
    #: Memory ceiling of each local node (redis-server ``maxmemory``) and what happens there.
    #: ``noeviction``: a full node refuses writes, so batches fail open, visibly (degraded
    #: decisions, an alert), instead of silently losing counters and missing bots.
    maxmemory: str = "1gb"
    maxmemory_policy: Literal["noeviction", "volatile-ttl", "volatile-lru", "allkeys-lru"] = (
        "noeviction"
    )
    #: A click delivered again within this long (wall clock) gets the feature row it got the
    #: first time. Redelivery comes from offsets not yet committed (a crash, a rebalance), so
    #: minutes are enough; past it, a redelivered click is treated as new (docs/redis-keys.md).
    row_horizon_s: int = Field(default=600, ge=1)
    #: TLS to every Redis node, for every client (the feature store, the stack's checks,
    #: replays, benchmarks: slidr/redis_config.py). The local stack then serves TLS only:
    #: ``port`` is each node's tls-port and no plaintext port is open.
    tls: bool = False
    #: PEM CA bundle that signed the nodes' certificates (None: the system CAs). The local
    #: stack also checks client certificates against it.
    tls_cafile: Path | None = None
    #: Optional client certificate and its unencrypted PEM key (mutual TLS: the local stack
    #: then requires one from every client, ``tls-auth-clients yes``).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    #: Local stack only: every node's certificate chain and unencrypted PEM key.
    server_certfile: Path | None = None
    server_keyfile: Path | None = None

    @field_validator("cluster_nodes")
    @classmethod
    def _cluster_size(cls, n: int) -> int:
        if n in (1, 2):
            raise ValueError("a Redis Cluster needs at least 3 masters; use 0 for one node")
        return n

    @model_validator(mode="after")
    def _user_has_password(self) -> RedisSettings:
        # An ACL user without a password would be refused at every connection.
        if self.username is not None and self.password is None:
            raise ValueError("SLIDR_REDIS__USERNAME needs SLIDR_REDIS__PASSWORD")
        self._paired("a Redis client certificate", "tls_certfile", "tls_keyfile")
        self._paired("the local Redis's certificate", "server_certfile", "server_keyfile")
        return self

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


#: Header Triton checks on its restricted model-repository API (``TritonSettings.repository_key``);
#: over gRPC it travels as ``triton-grpc-protocol-<header>`` metadata (Triton's prefix).
REPOSITORY_KEY_HEADER = "slidr-repository-key"


class TritonSettings(_Section):
    ENV = "SLIDR_TRITON__"
    host: str = "127.0.0.1"
    http_port: int = 18000
    grpc_port: int = 18001
    metrics_port: int = 18002
    model_name: str = "slidr"
    model_repository: Path = PROJECT_ROOT / "triton_repo"
    #: Deadline of each readiness, metadata, config and repository-index call (the worker's
    #: checks, the registry): a server that accepts connections but never answers must not
    #: hang a worker's reload or hold the registry lock the monitor takes every second.
    control_timeout_s: float = Field(default=5.0, gt=0)
    #: Deadline of a load request (the registry's promote, rollback and sync): loading a
    #: version takes seconds, and the registry lock is held meanwhile.
    load_timeout_s: float = Field(default=60.0, gt=0)
    #: Closes Triton's model-repository API (load, unload, index) to every caller without it:
    #: docker-compose and the local stack start Triton restricted to this header value, and the
    #: registry sends it. Unset: the API is open to whoever reaches the ports (loopback).
    repository_key: SecretStr | None = None
    #: gRPC over TLS for every gRPC client (the worker's scorer, replays, the registry:
    #: slidr/triton_config.py). The local stack then serves gRPC over TLS only; HTTP and
    #: metrics stay plaintext on ``host`` (loopback).
    grpc_tls: bool = False
    #: PEM CA bundle that signed Triton's certificate (None: gRPC's default roots).
    grpc_tls_cafile: Path | None = None
    #: Optional client certificate and its unencrypted PEM key (mutual TLS: the local stack then
    #: requires one, checked against ``grpc_tls_cafile``).
    grpc_tls_certfile: Path | None = None
    grpc_tls_keyfile: Path | None = None
    #: Local stack only: Triton's gRPC certificate chain and unencrypted PEM key.
    grpc_server_certfile: Path | None = None
    grpc_server_keyfile: Path | None = None

    @model_validator(mode="after")
    def _tls_pairs(self) -> TritonSettings:
        self._paired("a Triton client certificate", "grpc_tls_certfile", "grpc_tls_keyfile")
        self._paired(
            "the local Triton's certificate", "grpc_server_certfile", "grpc_server_keyfile"
        )
        return self

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def repository_headers(self) -> dict[str, str] | None:
        """The gRPC metadata that opens the restricted model-repository API, if it is closed."""
        if self.repository_key is None:
            return None
        key = self.repository_key.get_secret_value()
        return {f"triton-grpc-protocol-{REPOSITORY_KEY_HEADER}": key}


class EventLimits(_Section):
    #: Larger payloads go to the dead-letter topic unparsed.
    max_event_bytes: int = 8192
    #: A click's Kafka key (its click_id) must be UTF-8 of at most this many bytes.
    max_key_bytes: int = 512
    #: Events further than this from the processing clock are rejected.
    max_future_skew_s: int = 300
    max_age_days: int = 8


class WorkerSettings(_Section):
    #: A micro-batch leaves as soon as nothing more is buffered or due (its partitions read to
    #: their end): one click at low load, at most this many under a backlog.
    batch_size: int = Field(default=500, ge=1, le=1024)
    #: The longest a batch waits to fill while its partitions have a backlog (0: never wait).
    batch_wait_ms: int = Field(default=20, ge=0)
    #: A batch's decisions not all acknowledged by Kafka within this long fail the batch: the
    #: worker exits without committing it, and its clicks are consumed again.
    delivery_timeout_s: float = Field(default=30.0, gt=0)
    consumer_group: str = "slidr-worker"
    #: Threshold for every slice until a calibration record exists for the serving version.
    global_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    #: Pin a model version; None follows the serving pointer (or the newest version).
    model_version: int | None = None
    #: How often the worker looks for a new serving version or calibration record.
    reload_every_s: float = 2.0
    #: A switch that failed (version not loaded in Triton, bad record), or a served version
    #: Triton no longer has, is retried after this long, doubling up to the max; meanwhile
    #: the worker keeps scoring with its last good version.
    reload_backoff_s: float = Field(default=1.0, gt=0)
    reload_backoff_max_s: float = Field(default=60.0, gt=0)
    redis_timeout_s: float = 0.5
    triton_timeout_s: float = 1.0
    #: Keep each decision in Redis for ``redis.row_horizon_s`` so that a click consumed again
    #: gets its first decision back (docs/contracts.md). Off: a redelivery is decided afresh
    #: and the final-decision rule chooses between its decisions.
    decision_cache: bool = True
    #: How often the worker exports Redis memory and key counts.
    redis_memory_every_s: float = Field(default=15.0, gt=0)
    #: Prometheus endpoint; 0 disables it.
    metrics_port: int = 19100


class ArchiveSettings(_Section):
    #: Root of the Parquet archive (clicks/, purchases/, decisions/ partitioned by date and hour).
    root: Path = Field(default_factory=lambda: _default_state_dir() / "archive")
    #: A file per partition and hour is written (and offsets committed) every this many
    #: buffered events or seconds; rarer flushes mean fewer, larger files.
    flush_rows: int = Field(default=50_000, ge=1)
    flush_every_s: float = Field(default=300.0, gt=0)
    #: Receives the archived offsets for lag monitoring only; the archive keeps its own.
    consumer_group: str = "slidr-archive"


class LearnSettings(_Section):
    #: A click is labelled human if a purchase followed it within this window; younger clicks
    #: are not labelled yet.
    attribution_window_h: float = Field(default=24.0, gt=0)
    #: ... or if its customer's RFM score (0..1) is above this.
    rfm_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    #: Robotic coverage: clicks in sessions with more than k clicks in one clock hour.
    coverage_k: int = Field(default=10, ge=1)
    #: Cap on one sample weight, as a multiple of the mean weight (tiny cells stay bounded).
    weight_cap: float = Field(default=20.0, gt=1.0)
    seed: int = 7
    #: Widths of the two hidden layers; 128-64 edged out 64-32 on simulated data (docs/learning.md).
    hidden: tuple[int, int] = (128, 64)
    #: Learn an embedding of each categorical click field's hashed id (slidr.features): true
    #: for every field, false for none (the numeric features only), or the feature names of
    #: some (docs/learning.md compares them).
    embeddings: bool | tuple[str, ...] = True
    #: The ids that name a user (IP network, exact user agent: slidr.features.IDENTIFYING_COLUMNS)
    #: as inputs of every model: "auto" leaves them out when some human labels come from the
    #: customer's RFM score, because the models then learn which users are high-RFM customers
    #: instead of what humans do, and score other logged-in humans as bots (docs/learning.md).
    identifying_ids: Literal["auto", "always", "never"] = "auto"
    #: A bucket with fewer training rows than this is read as "none" (bucket 0): its embedding
    #: would be learned from too few clicks. 200 beat 1 on every simulated validation seed and
    #: kept the TalkingData-format gain (docs/learning.md).
    min_bucket_rows: int = Field(default=200, ge=1)
    #: DCN-v2 cross layers before the hidden layers; 0: none (docs/learning.md).
    cross_layers: int = Field(default=0, ge=0, le=4)
    l2: float = Field(default=1e-4, ge=0.0)
    learning_rate: float = Field(default=2e-3, gt=0.0)
    batch_size: int = Field(default=2048, ge=1)
    max_epochs: int = Field(default=30, ge=1)
    #: Early stopping: epochs without improvement of the holdout loss.
    patience: int = Field(default=3, ge=1)
    #: How the labelled time is split, in time order (docs/learning.md): "days" (whole days:
    #: fit, then one day each for early stopping, the report and a later check), "span"
    #: (fractions of the labelled span at whole hours) or "auto" (days when there are at
    #: least 4 complete labelled days, else span).
    split: Literal["auto", "days", "span"] = "auto"
    #: The span split's shares of fit, early stopping, report and later check, in time order.
    span_fractions: tuple[float, float, float, float] = (0.7, 0.1, 0.1, 0.1)

    @field_validator("span_fractions")
    @classmethod
    def _fractions_sum_to_one(
        cls, value: tuple[float, float, float, float]
    ) -> tuple[float, float, float, float]:
        if min(value) <= 0 or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"span_fractions must be four positive shares summing to 1: {value}")
        return value


class CalibrationSettings(_Section):
    #: Ceiling on the FPR over all purchasing clicks combined.
    fpr_budget: float = Field(default=0.02, gt=0.0, lt=1.0)
    #: Every slice must invalidate at least this share of heuristic-flagged (robotic) clicks.
    min_coverage: float = Field(default=0.5, ge=0.0, le=1.0)
    #: Click fields that define a traffic slice, joined by "/" (slidr/slices.py).
    slice_fields: tuple[str, ...] = DEFAULT_SLICE_FIELDS
    #: A slice with fewer purchasing clicks than this is pooled with its parent slice. Per-slice
    #: FPRs of a few percent rest on a handful of clicks: with ~150 per slice the thresholds
    #: overfit the calibration day (docs/calibration.md).
    min_purchases: int = Field(default=300, ge=1)
    #: How a slice with few purchasing clicks gets its threshold: "shrink" (its own, from its
    #: FPR curve shrunk toward its parent's by empirical Bayes, calibration/shrink.py) or
    #: "pool" (below ``min_purchases`` it shares its parent's threshold).
    slice_pooling: Literal["shrink", "pool"] = "shrink"
    #: Cap on the shrinkage prior's strength, in stand-in clicks (when slices do not differ
    #: measurably, each leans on its parent with this many pseudo-clicks).
    max_prior_strength: float = Field(default=2000.0, gt=0.0)
    #: Which FPR the budget binds, in the calibration and the model guardrails: "human" (the
    #: estimated share of all human clicks invalidated, calibration/human.py) or "purchaser"
    #: (the article's: purchasing clicks).
    fpr_target: Literal["human", "purchaser"] = "human"
    #: The budget binds the one-sided upper bound of the calibration day's FPR estimate at this
    #: confidence (Wilson's, on the purchasing clicks or the stand-ins' effective size), not the
    #: estimate itself: the thresholds are solved at the largest FPR whose bound is the budget.
    #: 0.5 binds the point (the article's). 0.8: the lowest level at which the next day held
    #: the budget on the mean of the validation seeds (docs/calibration.md).
    budget_confidence: float = Field(default=0.8, ge=0.5, lt=1.0)
    #: Stand-ins for humans in the human-FPR estimate: purchasing clicks, plus high-RFM clicks.
    human_with_rfm: bool = True
    #: Cells of the human-FPR estimate: each slice times this many bands of hours of the day.
    human_hour_bands: int = Field(default=4, ge=1, le=24)
    #: A slice whose quadratic fit is worse than this (RMSE in IVR) uses the concave hull.
    #: Curves that rise steeply at FPR 0 fit a quadratic at ~0.01-0.02; the hull follows them.
    max_fit_rmse: float = Field(default=0.005, gt=0.0)
    #: No slice may invalidate more than this share of its purchasing clicks (unless its
    #: coverage floor needs more); also the FPR range the per-slice fits cover, so keep it
    #: near the budget: a quadratic fitted far beyond it misjudges the steep start.
    max_slice_fpr: float = Field(default=0.05, gt=0.0, le=1.0)
    #: Affine pieces of the concave-hull fallback (one compiled problem serves up to this many).
    max_hull_pieces: int = Field(default=16, ge=1, le=256)

    @field_validator("slice_fields")
    @classmethod
    def _sliceable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_fields(value)


class ReplaySettings(_Section):
    #: A range of more clicks than this needs --force.
    max_clicks: int = Field(default=5_000_000, ge=1)
    #: Recompute mode: counters are rebuilt from this long before the range.
    warmup_h: float = Field(default=24.0, ge=0.0)
    #: Namespace of recomputed counters (never the live key_prefix).
    redis_prefix: str = "slidr-replay:"
    requests_topic: str = "slidr.replay.requests"
    progress_topic: str = "slidr.replay.progress"
    #: Clicks read, scored and published per step; rows per Triton request (<= max_batch_size).
    chunk_size: int = Field(default=5000, ge=1)
    batch_size: int = Field(default=1024, ge=1, le=1024)
    #: Flush the producer and write the resume checkpoint this often.
    checkpoint_every_s: float = Field(default=2.0, gt=0)
    triton_timeout_s: float = Field(default=30.0, gt=0)
    #: Consumer group of `slidr replay-agent` on the requests topic (never the worker's).
    agent_group: str = "slidr-replay-agent"
    #: Prometheus port of `slidr replay-agent`; 0 disables it.
    metrics_port: int = 19102
    #: HMAC-SHA256 key of replay requests: the agent runs only requests signed with it (`slidr
    #: replay --submit` signs), since a replay publishes what billing reads (docs/security.md).
    signing_key: SecretStr | None = None
    #: Without a signing key the agent refuses every request, unless this is set (local dev).
    allow_unsigned: bool = False
    #: A signed request older than this (or this far in the future) is refused, so a copy of a
    #: request read off the topic cannot start the replay again later.
    signature_max_age_s: float = Field(default=300.0, gt=0)


class GuardrailSettings(_Section):
    """Bounds the daily cycle checks before anything is promoted (guardrails/)."""

    # --- data: the training window (the new day plus the days before it) ---
    #: Every hour of the week must keep at least this share of weak-labelled humans.
    min_human_density: float = Field(default=0.008, ge=0.0, le=1.0)
    #: Days before the new day whose same clock hour is the reference volume of each hour.
    trailing_days: int = Field(default=7, ge=1)
    #: Each hour of the new day holds between these multiples of its trailing mean volume; wide,
    #: because night bot bursts come on some days only. Catches lost or duplicated archive hours.
    min_volume_ratio: float = Field(default=0.25, ge=0.0)
    max_volume_ratio: float = Field(default=4.0, gt=0.0)
    #: Purchase labels must be present in every hour of the new day (0 disables the check for
    #: traffic too thin to buy every hour).
    min_purchases_per_hour: int = Field(default=1, ge=0)
    #: ... except in at most this many hours of the day (a quiet night hour may have none).
    max_hours_without_purchases: int = Field(default=2, ge=0, le=23)
    #: Largest share of nulls in a required column (features, labels, keys).
    max_null_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    #: A check of an estimated figure (a rate on a sample of clicks) refuses only when its bound
    #: is exceeded with this one-sided confidence; beyond it on its point estimate only, the
    #: check is reported "unsure" and does not refuse (docs/guardrails.md). 0.5: point estimates.
    confidence: float = Field(default=0.95, ge=0.5, lt=1.0)
    # --- model: the candidate's figures on the held-out day, at its calibrated thresholds ---
    #: Overall IVR bounds: below, the model invalidates (almost) nothing; above, far too much.
    min_ivr: float = Field(default=0.01, ge=0.0, le=1.0)
    max_ivr: float = Field(default=0.6, ge=0.0, le=1.0)
    #: Hard ceiling on the overall FPR, whatever budget the calibration was given.
    max_fpr: float = Field(default=0.05, ge=0.0, le=1.0)
    #: The held-out FPR may exceed the calibration budget by this much (absolute): the
    #: thresholds were fitted on other days.
    fpr_budget_slack: float = Field(default=0.005, ge=0.0, le=1.0)
    #: Overall robotic coverage must reach this.
    min_coverage: float = Field(default=0.4, ge=0.0, le=1.0)
    #: Per slice (and overall), against the serving model on the same day: largest absolute
    #: IVR change, and largest FPR increase.
    max_ivr_change: float = Field(default=0.10, ge=0.0, le=1.0)
    max_fpr_increase: float = Field(default=0.02, ge=0.0, le=1.0)
    #: A slice with fewer purchasing clicks has too noisy an FPR to compare (one click moves it
    #: by more than the limit); its FPR change is reported as skipped.
    min_slice_purchases: int = Field(default=30, ge=1)


class RegistrySettings(_Section):
    """Model versions kept on disk and loaded in Triton (slidr/registry/)."""

    #: Retired and refused versions kept on disk (the newest ones); older ones are deleted.
    keep_retired: int = Field(default=3, ge=0)
    #: Versions kept loaded in Triton besides the serving and stable ones (e.g. for a replay).
    pinned: tuple[int, ...] = ()
    #: A rolled-back version stays loaded this long, so workers finish their batches on it
    #: before they follow the pointer (keep it above ``worker.reload_every_s``).
    unload_after_s: float = Field(default=5.0, ge=0.0)


class MonitorSettings(_Section):
    """The online monitor of the decision stream and its automatic rollback."""

    consumer_group: str = "slidr-monitor"
    #: A new consumer group starts at the end of the decisions topic unless this is set.
    from_beginning: bool = False
    #: Sliding window over the serving version's decisions (by decision time).
    window_s: float = Field(default=60.0, gt=0)
    evaluate_every_s: float = Field(default=1.0, gt=0)
    #: No verdict on fewer decisions than this in the window (noise), nor on a slice with fewer
    #: than ``min_slice_decisions``.
    min_decisions: int = Field(default=500, ge=1)
    min_slice_decisions: int = Field(default=200, ge=1)
    #: A deviation is sharp when it is both this large (absolute IVR) and this many binomial
    #: standard errors away from the expected figure.
    min_ivr_change: float = Field(default=0.1, gt=0.0, le=1.0)
    max_z: float = Field(default=6.0, gt=0.0)
    #: Largest share of decisions the serving version leaves degraded by Triton errors.
    max_degraded_share: float = Field(default=0.5, gt=0.0, le=1.0)
    #: Any other version workers still decide with is held to ``max_degraded_share`` too (a
    #: worker left on a version Triton unloaded fails open on every batch), on at least this
    #: many decisions in the window: such a worker may hold only a few partitions.
    min_version_decisions: int = Field(default=50, ge=1)
    #: Largest population stability index of the score histogram vs the expected one.
    max_score_psi: float = Field(default=0.5, gt=0.0)
    #: False: a deviation only alerts (logs and metrics), the serving version stays.
    auto_rollback: bool = True
    #: Prometheus endpoint; 0 disables it.
    metrics_port: int = 19101


class IntradaySettings(_Section):
    """The monitor's intraday re-solve: the realised FPR of live decisions on the purchases
    joined with them, and a new calibration record when it leaves its band
    (calibration/intraday.py, docs/calibration.md)."""

    #: Off: the monitor reads decisions only. On: it also reads the purchases topic.
    enabled: bool = False
    #: Sliding window of decisions and joined purchases (by decision time).
    window_s: float = Field(default=4 * 3600.0, gt=0)
    #: How long a decision waits for its purchase (and a purchase for its decision).
    join_horizon_s: float = Field(default=3600.0, gt=0)
    evaluate_every_s: float = Field(default=60.0, gt=0)
    #: Fewest seconds between two re-solves of one version (each needs fresh evidence).
    min_interval_s: float = Field(default=1800.0, ge=0)
    #: No verdict on fewer joined purchases in the window (overall; per slice). The interval
    #: already accounts for the count; at 30,000 clicks a day the windows before noon (when
    #: the FPR drifts most) hold 5-64 purchases (20: chosen on bench_budget.py's validation
    #: seeds).
    min_stand_ins: int = Field(default=20, ge=1)
    min_slice_stand_ins: int = Field(default=100, ge=1)
    #: The realised FPR leaves its band when its interval (at ``confidence``) lies wholly
    #: outside expected x (1 -/+ band).
    band: float = Field(default=0.25, gt=0.0, lt=1.0)
    confidence: float = Field(default=0.8, gt=0.0, lt=1.0)
    #: Also re-solve when the FPR is below its band (thresholds loosened). Off: the budget is
    #: a ceiling, and a window of part of the day under-represents the night, when humans are
    #: invalidated most (docs/calibration.md).
    loosen: bool = False
    #: Guardrail: one re-solve moves a slice's threshold by at most this much (score units);
    #: a longer move is clipped to it, and the next window may move further.
    max_threshold_step: float = Field(default=0.05, gt=0.0, le=1.0)


class GivtSettings(_Section):
    """General invalid traffic (GIVT): clicks decided invalid by lists, before the model."""

    #: Declared bots and crawlers by user agent (the patterns of the ``crawler-user-agents``
    #: package: upgrade it to update the list).
    declared_bots: bool = True
    #: Known data-centre ranges: text files of one CIDR per line (``#`` starts a comment),
    #: supplied by the operator; ops/givt/datacenter-example.txt shows the format. Read once at
    #: start-up, never fetched. As JSON in the environment:
    #: ``SLIDR_GIVT__DATACENTER_CIDR_FILES='["/etc/slidr/dc.txt"]'``.
    datacenter_cidr_files: tuple[Path, ...] = ()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLIDR_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    #: Logs, pid files and service data of the local stack; never the working directory.
    state_dir: Path = Field(default_factory=_default_state_dir)
    #: Where downloaded artefacts (the Kafka jars) are cached across stacks.
    cache_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slidr"
        )
    )
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    redis: RedisSettings = RedisSettings()
    triton: TritonSettings = TritonSettings()
    events: EventLimits = EventLimits()
    worker: WorkerSettings = WorkerSettings()
    archive: ArchiveSettings = ArchiveSettings()
    learn: LearnSettings = LearnSettings()
    calibration: CalibrationSettings = CalibrationSettings()
    replay: ReplaySettings = ReplaySettings()
    guardrails: GuardrailSettings = GuardrailSettings()
    registry: RegistrySettings = RegistrySettings()
    monitor: MonitorSettings = MonitorSettings()
    intraday: IntradaySettings = IntradaySettings()
    givt: GivtSettings = GivtSettings()

    def overriding(self, section: str, **values: object) -> Settings:
        """A copy with fields of one section replaced, validated like the environment's values
        (a SettingsError names the setting); ``None`` keeps the current value.

        For CLI options that default to "whatever the settings say".

        >>> Settings().overriding("worker", batch_size=64).worker.batch_size
        64
        >>> Settings().overriding("worker", batch_size=5000)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        slidr.errors.SettingsError: worker.batch_size = 5000: Input should be less than or ...
        """
        changes = {key: value for key, value in values.items() if value is not None}
        if not changes:
            return self
        current = getattr(self, section)
        try:
            updated = type(current).model_validate({**dict(current), **changes})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, (section, *first["loc"])))
            shown = changes.get(str(first["loc"][0]), "") if first["loc"] else ""
            raise SettingsError(f"{where} = {shown}: {first['msg']}") from None
        return self.model_copy(update={section: updated})


#: How an environment variable names a setting: ``SLIDR_`` + section + ``__`` + field (two
#: underscores), or ``SLIDR_`` + a top-level field. A command's own option (not a setting) is
#: ``SLIDR_<COMMAND>_<OPTION>``, one underscore (tests/test_cli.py checks every command).
ENV_PREFIX, ENV_NESTING = "SLIDR_", "__"


def _variable(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + ENV_NESTING.join(str(part).upper() for part in loc)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``SLIDR_<SECTION>__...`` variables whose section does not exist (pydantic-settings
    would ignore them: a typo must not silently leave a default in place)."""
    sections = {
        name for name, f in Settings.model_fields.items() if isinstance(f.default, BaseModel)
    }
    return sorted(
        key
        for key in environ
        if key.startswith(ENV_PREFIX)
        and ENV_NESTING in key
        and key[len(ENV_PREFIX) :].split(ENV_NESTING)[0].lower() not in sections
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment; a SettingsError names the
    variable that is not a setting or holds a refused value."""
    unknown = unknown_variables(os.environ)
    if unknown:
        raise SettingsError(
            f"{unknown[0]} is not a setting: settings are SLIDR_<SECTION>__<FIELD> with a "
            "section of slidr/settings.py (kafka, redis, worker, ...)"
        )
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        if first["type"] == "extra_forbidden" and len(loc) == 2:
            raise SettingsError(
                f"{_variable(loc)} is not a setting: section {loc[0]} has no field {loc[1]!r} "
                "(see slidr/settings.py)"
            ) from None
        raise SettingsError(f"{_variable(loc)}: {first['msg']}") from None
