"""Traffic simulator: humans and several kinds of bots, with ground truth kept out of the events.

Generation (:mod:`.generator`) is pure and yields pyarrow tables per hour; sinks (:mod:`.sinks`)
write them to Parquet or Kafka.
"""
