"""Replay (see the issue tracker); nothing here is imported by the streaming path yet."""
