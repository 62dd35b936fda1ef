"""SLIDR: slice-level detection of robotic ad clicks.

The ``slidr`` package holds what every part shares: settings, event contracts, the feature
definition, the local stack and the CLI. The pipeline parts live beside it (``streams``,
``models``, ``calibration``, ``guardrails``, ``replay``) and import from here, never the reverse.
"""

__version__ = "0.1.0"
