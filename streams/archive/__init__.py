"""The archiver: Kafka clicks, purchases and decisions -> Parquet, exactly once per event.

A consumer beside the scoring path, not part of it: ``consumer`` reads the topics, ``tables``
turns events into hourly tables, ``store`` writes segments and commit markers, ``read`` reads
the datasets back.
"""
