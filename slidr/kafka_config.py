"""The Kafka security settings, mapped once for each client library.

librdkafka (confluent-kafka: producers, the archiver, the monitor, replays, the CLI) takes
:func:`client_config`; Faust's aiokafka takes :func:`faust_credentials`. Every client in the
project is built from one of them, so a broker that requires SASL or TLS is reached by all of
them or by none (tests/test_kafka_security.py checks every construction site).

The returned librdkafka dict holds the SASL password in clear, as librdkafka needs it: never
log it.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError

from slidr.settings import KafkaSettings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


def client_config(
    kafka: KafkaSettings, extra: Mapping[str, Any] | None = None, *, bootstrap: str | None = None
) -> dict[str, Any]:
    """librdkafka configuration: ``bootstrap.servers``, the security keys, then ``extra``.

    >>> client_config(KafkaSettings(port=9092), {"group.id": "g"})
    {'bootstrap.servers': '127.0.0.1:9092', 'security.protocol': 'PLAINTEXT', 'group.id': 'g'}
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap or kafka.bootstrap,
        "security.protocol": kafka.security_protocol,
    }
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_password is not None  # KafkaSettings refuses SASL without one
        config["sasl.mechanisms"] = kafka.sasl_mechanism
        config["sasl.username"] = kafka.sasl_username
        config["sasl.password"] = kafka.sasl_password.get_secret_value()
    if kafka.uses_ssl:
        if kafka.ssl_cafile is not None:
            config["ssl.ca.location"] = str(kafka.ssl_cafile)
        if kafka.ssl_certfile is not None:
            config["ssl.certificate.location"] = str(kafka.ssl_certfile)
            config["ssl.key.location"] = str(kafka.ssl_keyfile)
    config.update(extra or {})
    return config


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """The TLS context aiokafka uses: verifies the broker (hostname too) against the CA file,
    and presents the client certificate when one is set."""
    cafile = str(kafka.ssl_cafile) if kafka.ssl_cafile is not None else None
    context = ssl.create_default_context(cafile=cafile)
    if kafka.ssl_certfile is not None:
        context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile))
    return context


def faust_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for these settings (None: plaintext)."""
    from faust.auth import SASLCredentials, SSLCredentials

    if kafka.security_protocol == "PLAINTEXT":
        return None
    if kafka.security_protocol == "SSL":
        return SSLCredentials(ssl_context(kafka))
    assert kafka.sasl_password is not None
    # An SSL context turns Faust's SASL_PLAINTEXT into SASL_SSL.
    return SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value(),
        mechanism=kafka.sasl_mechanism,
        ssl_context=ssl_context(kafka) if kafka.uses_ssl else None,
    )


#: librdkafka error codes that mean "the broker refused us", not "the broker is down".
_REFUSED = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._SSL,
}


class ErrorRecorder:
    """An ``error_cb`` keeping the first authentication or TLS failure librdkafka reports:
    such failures only surface there, while the call that hit them just times out."""

    def __init__(self) -> None:
        self.refused: KafkaError | None = None

    def __call__(self, error: KafkaError) -> None:
        if self.refused is None and error.code() in _REFUSED:
            self.refused = error

    def explain(self, kafka: KafkaSettings) -> str | None:
        """What to check, naming the settings, when the broker refused the connection."""
        if self.refused is None:
            return None
        if self.refused.code() == KafkaError._SSL:
            what = "TLS handshake failed"
            check = (
                "SLIDR_KAFKA__SSL_CAFILE (the CA that signed the broker's certificate), "
                "SLIDR_KAFKA__SSL_CERTFILE / SLIDR_KAFKA__SSL_KEYFILE and "
                "SLIDR_KAFKA__SECURITY_PROTOCOL"
            )
        else:
            what = f"authentication as {kafka.sasl_username!r} ({kafka.sasl_mechanism}) failed"
            check = (
                "SLIDR_KAFKA__SASL_USERNAME, SLIDR_KAFKA__SASL_PASSWORD and "
                "SLIDR_KAFKA__SASL_MECHANISM"
            )
        return (
            f"Kafka at {kafka.bootstrap} refused the connection: {what} "
            f"({self.refused.str()}): check {check}"
        )


def with_error_recorder(
    kafka: KafkaSettings, extra: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], ErrorRecorder]:
    """:func:`client_config` plus an ``error_cb`` that records refusals."""
    recorder = ErrorRecorder()
    callback: Callable[[KafkaError], None] = recorder
    # librdkafka's own lines go through logging rather than raw onto stderr.
    logger = logging.getLogger(f"{__name__}.librdkafka")
    config = client_config(kafka, {**(extra or {}), "error_cb": callback, "logger": logger})
    return config, recorder
