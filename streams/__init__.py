"""The streaming side of slidr: Faust agents that turn click batches into decisions.

It sees the feature store, the scorer and the threshold table through small Protocols and never
imports torch.
"""
