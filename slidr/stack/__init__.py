"""The local stack: real Kafka, Redis and Triton processes on loopback, without Docker."""

from slidr.stack.manager import LocalStack, ServiceStatus

__all__ = ["LocalStack", "ServiceStatus"]
