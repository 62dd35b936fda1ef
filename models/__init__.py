"""Models: the velocity heuristic (day zero and baseline), training and export.

Importing this package imports no torch; only the training modules do.
"""
