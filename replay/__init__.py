"""Replay: reprocess an offset or time range of the clicks topic through a pinned model version
and publish delayed decisions (docs/replay.md).

request -> plan (checks, run id, spans) -> runner (reader, feature mode, Triton, decisions,
publisher, checkpoint) -> summary; the Faust agent serves requests from a topic. The streaming
path never imports this package.
"""
