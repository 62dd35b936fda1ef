"""The archiver: Kafka clicks, purchases and decisions -> Parquet, exactly once per event.

A consumer beside the scoring path, not part of it: ``consumer`` reads the topics, ``tables``
turns events into hourly tables, ``store`` writes segments and commit markers. The files, their
schemas and how to read them back are :mod:`slidr.archive`'s, shared by every reader and writer.
"""
