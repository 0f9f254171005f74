"""Exceptions raised by the Pushline client.

Every exception derives from :class:`PushlineError`, which carries the
protocol error ``code``, the human ``message`` and the documented
``details`` (for example ``field`` for :class:`InvalidArgument`).  There is
one subclass per protocol error code (protocol.md section 3), plus
:class:`ConnectionError` for socket problems and
:class:`ProtocolVersionError` for a daemon speaking another major version.

Per-device failures inside ``send``/``bulk`` are *not* exceptions: they are
entries with ``"status": "failed"`` in the result's ``results`` list.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "PushlineError",
    "BadJSON",
    "LineTooLong",
    "UnknownCommand",
    "InvalidArgument",
    "ArgumentTypeError",
    "NotFound",
    "DuplicateRegistration",
    "ProviderNotConfigured",
    "PayloadTooLarge",
    "Busy",
    "ShuttingDown",
    "Forbidden",
    "Unavailable",
    "ProviderError",
    "InternalError",
    "ConnectionError",
    "ConnectionTimeout",
    "ProtocolVersionError",
    "error_from_response",
]


class PushlineError(Exception):
    """Base of every Pushline exception.

    ``code`` is the protocol error code (``"invalid_argument"``...), or
    ``"connection_error"`` / ``"protocol_version"`` for the client-side
    errors. ``details`` holds the other members of the error object.
    """

    code: str = "internal_error"
    #: Whether the same call may succeed if made again later, unchanged: the daemon did nothing
    #: (``busy``, ``shutting_down``, a connection that failed before the request was written...).
    retryable: bool = False

    def __init__(self, code: Optional[str] = None, message: str = "",
                 details: Optional[Mapping[str, Any]] = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.details: Dict[str, Any] = dict(details or {})
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, details={self.details!r})"

    @property
    def field(self) -> Optional[str]:
        """The argument's key path (``devices[2].registration_id``), when the daemon named one."""
        value = self.details.get("field")
        return value if isinstance(value, str) else None


class BadJSON(PushlineError):
    """The request line was not a JSON object (``bad_json``)."""
    code = "bad_json"


class LineTooLong(PushlineError):
    """The request line exceeded the daemon's ``max_line_bytes`` (``line_too_long``)."""
    code = "line_too_long"

    @property
    def limit(self) -> Optional[int]:
        return self.details.get("limit")


class UnknownCommand(PushlineError):
    """``cmd`` names no command (``unknown_command``)."""
    code = "unknown_command"


class InvalidArgument(PushlineError):
    """A missing or invalid argument (``invalid_argument``); ``field`` names it."""
    code = "invalid_argument"


class ArgumentTypeError(InvalidArgument, TypeError):
    """An argument of the wrong type, caught by the client before anything was sent
    (e.g. ``users="42"`` where a list is expected): an :class:`InvalidArgument` and a
    ``TypeError``; ``field`` names the argument."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("invalid_argument", f"field '{field}': {message}", {"field": field})


class NotFound(PushlineError):
    """The device (or other object) named does not exist (``not_found``)."""
    code = "not_found"


class DuplicateRegistration(PushlineError):
    """The (app, platform, registration_id) is already registered (``duplicate_registration``)."""
    code = "duplicate_registration"


class ProviderNotConfigured(PushlineError):
    """The app has no credentials for the platform (``provider_not_configured``)."""
    code = "provider_not_configured"

    @property
    def app(self) -> Optional[str]:
        return self.details.get("app")

    @property
    def platform(self) -> Optional[str]:
        return self.details.get("platform")


class PayloadTooLarge(PushlineError):
    """The notification is over the provider's size limit; nothing was sent (``payload_too_large``)."""
    code = "payload_too_large"

    @property
    def size(self) -> Optional[int]:
        return self.details.get("size")

    @property
    def limit(self) -> Optional[int]:
        return self.details.get("limit")

    @property
    def platform(self) -> Optional[str]:
        return self.details.get("platform")


class Busy(PushlineError):
    """The daemon has too much work queued; nothing was done (``busy``). Retry after ``retry_after_ms``."""
    code = "busy"
    retryable = True

    @property
    def retry_after_ms(self) -> Optional[int]:
        return self.details.get("retry_after_ms")


class ShuttingDown(PushlineError):
    """The daemon is stopping (``shutting_down``); nothing was done."""
    code = "shutting_down"
    retryable = True


class Forbidden(PushlineError):
    """The daemon refused this connection's peer (``forbidden``): the uid and groups are not in
    ``allowed_uids``/``allowed_gids``. Not retryable until the config or the user changes."""
    code = "forbidden"


class Unavailable(PushlineError):
    """The daemon cannot store the request right now (``unavailable``, protocol 1.2): a full disk,
    a database error, a database that is unreachable. Nothing was written; retry after
    ``retry_after_ms``."""
    code = "unavailable"
    retryable = True

    @property
    def retry_after_ms(self) -> Optional[int]:
        return self.details.get("retry_after_ms")


class ProviderError(PushlineError):
    """A provider-wide failure outside any single device (``provider_error``)."""
    code = "provider_error"
    retryable = True


class InternalError(PushlineError):
    """A daemon bug or I/O failure (``internal_error``), or an error code this client does not know."""
    code = "internal_error"
    #: A rejected request changed nothing (protocol.md section 2); an I/O failure may pass.
    retryable = True


class ConnectionError(PushlineError):  # noqa: A001 - deliberately named like the builtin, inside this package
    """The socket is missing, refused the connection, closed, or timed out.

    When raised after a request was written (``request_sent`` is true), the
    daemon may have carried the request out: protocol.md says a request whose
    connection closed is still executed.
    """
    code = "connection_error"

    def __init__(self, message: str = "", details: Optional[Mapping[str, Any]] = None,
                 *, request_sent: bool = False) -> None:
        super().__init__("connection_error", message, details)
        self.request_sent = request_sent

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        """True when the request was not written: sending it again cannot do it twice."""
        return not self.request_sent


class ConnectionTimeout(ConnectionError):
    """No response arrived within the client's ``timeout``."""


class ProtocolVersionError(PushlineError):
    """The daemon speaks a protocol major version other than this client's (1)."""
    code = "protocol_version"

    def __init__(self, message: str = "", details: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__("protocol_version", message, details)


ERROR_CLASSES: Dict[str, Type[PushlineError]] = {
    cls.code: cls
    for cls in (BadJSON, LineTooLong, UnknownCommand, InvalidArgument, NotFound,
                DuplicateRegistration, ProviderNotConfigured, PayloadTooLarge, Busy,
                ShuttingDown, Forbidden, Unavailable, ProviderError, InternalError)
}


def error_from_response(error: Any) -> PushlineError:
    """Builds the exception for a response's ``error`` object.

    An unknown code maps to :class:`InternalError` (protocol.md section 7),
    keeping the code the daemon sent.

    >>> e = error_from_response({"code": "not_found", "message": "no device 9"})
    >>> type(e).__name__, e.code
    ('NotFound', 'not_found')
    """
    if not isinstance(error, dict):
        return InternalError("internal_error", f"malformed error object from daemon: {error!r}")
    code = error.get("code")
    message = error.get("message")
    code_s = code if isinstance(code, str) else "internal_error"
    message_s = message if isinstance(message, str) else ""
    details = {k: v for k, v in error.items() if k not in ("code", "message")}
    cls = ERROR_CLASSES.get(code_s, InternalError)
    return cls(code_s, message_s, details)
