"""Guardrails of the daily cycle: nothing is trained on a broken day or promoted when worse.

- ``guardrails.data.check_training_data``: GX suites over the labelled click frame of a new day
  and its trailing week (``guardrails.data_suites``; imports great_expectations lazily);
- ``guardrails.model.check_candidate``: the candidate's held-out IVR, FPR and coverage against
  bounds, the FPR budget and the serving model, per slice;
- ``guardrails.report``: the ``GuardrailReport`` both return, and ``GuardrailFailed``.

The streaming path never imports this package.
"""
