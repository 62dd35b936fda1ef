"""The Triton gRPC transport settings, mapped once for every gRPC client.

``tritonclient.grpc`` (the registry, benchmarks) and ``tritonclient.grpc.aio`` (the worker's and
the replays' scorer) take the same keyword arguments: :func:`grpc_options`. So a Triton that
serves gRPC over TLS is reached by all of them or by none (tests/test_triton_tls.py checks every
construction site). :func:`explain` adds to a failed call's message the setting to check.
"""

from __future__ import annotations

from typing import Any

from slidr.settings import TritonSettings


def grpc_options(settings: TritonSettings) -> dict[str, Any]:
    """Keyword arguments of ``InferenceServerClient`` besides the URL: TLS, when set (the CA
    file and the client certificate's files, which tritonclient reads).

    >>> grpc_options(TritonSettings())
    {}
    """
    if not settings.grpc_tls:
        return {}

    def path(value: object) -> str | None:
        return None if value is None else str(value)

    return {
        "ssl": True,
        "root_certificates": path(settings.grpc_tls_cafile),
        "private_key": path(settings.grpc_tls_keyfile),
        "certificate_chain": path(settings.grpc_tls_certfile),
    }


def explain(message: str, settings: TritonSettings) -> str:
    """``message`` of a failed gRPC call, with the TLS settings to check when TLS is why.

    >>> tls = TritonSettings(grpc_tls=True)
    >>> "SLIDR_TRITON__GRPC_TLS_CAFILE" in explain("Ssl handshake failed", tls)
    True
    """
    lowered = message.lower()
    # A server that wants a client certificate closes the connection without one.
    refused = any(word in lowered for word in ("socket closed", "connection reset"))
    if any(word in lowered for word in ("ssl", "handshake", "certificate", "tls")) or (
        settings.grpc_tls and refused
    ):
        return (
            f"{message} (TLS to Triton failed: check SLIDR_TRITON__GRPC_TLS_CAFILE, "
            "SLIDR_TRITON__GRPC_TLS_CERTFILE and SLIDR_TRITON__GRPC_TLS_KEYFILE)"
        )
    if refused:
        return f"{message} (if Triton serves gRPC over TLS, set SLIDR_TRITON__GRPC_TLS=true)"
    return message
