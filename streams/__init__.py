"""The scoring path: the Faust worker that turns click batches into decisions.

A click's path, one module per step:

- ``app``: the Faust app and agent (wiring only); ``batches``: adaptive micro-batches;
- ``pipeline``: one batch in, decisions and dead letters out (no Kafka), through
  ``givt`` (declared bots, data-centre ranges), ``feature_store`` (Redis counters),
  ``scorer`` and ``serving_model`` (Triton, the version followed) and ``decide`` (per-slice
  thresholds, columnar decisions shared with replay);
- ``produce``: a batch's decisions to Kafka, acknowledged before its offsets are.

``archive`` and ``monitor`` are the other consumers of the topics, beside the path. Nothing
here imports torch.
"""
