"""The root of every error slidr raises on purpose; each says what to do about it."""


class SlidrError(Exception):
    """Base class: catching it at the CLI turns it into a one-line message and exit code 2."""


class InvalidEvent(SlidrError):
    """An upstream event that cannot be accepted; ``reason`` is a stable dead-letter code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StackError(SlidrError):
    """A local service could not be started, reached or stopped."""


class PrerequisiteMissing(StackError):
    """A program the local stack needs is not installed; the message names how to get it."""


class SettingsError(SlidrError, ValueError):
    """A setting's value is refused; the message names the setting."""
