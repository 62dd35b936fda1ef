"""The online monitor: reads the decisions topic and rolls a deviating model back.

A consumer beside the scoring path, not part of it: ``window`` keeps sliding per-slice tallies,
``rules`` says when they deviate from the serving model's expected figures, ``consumer`` reads
the topic, exports metrics and asks the registry for a rollback.
"""
