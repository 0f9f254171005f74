"""Pushline: a thin, standard-library-only client for the Pushline push-notification daemon.

>>> import pushline
>>> with pushline.Client() as pl:                        # doctest: +SKIP
...     pl.register(platform="fcm", registration_id="dXy...", user="42")
...     pl.send(users=["42"], title="Hello", message="Your order shipped")

See protocol.md in the Pushline repository for every command and error code.
"""

from .client import (DEFAULT_SOCKET, DEFAULT_TIMEOUT, PROTOCOL_MAJOR, UNSET, BulkChunkError, BulkResult, Client,
                     EventStream)
from .results import (Device, DeviceResult, DevicesPage, Event, EventsPage, Job, JobAccepted, JobsPage,
                      RegisterResult, SendResult, SubscribeResult)
from .errors import (ArgumentTypeError, BadJSON, Busy, ConnectionError, ConnectionTimeout, DuplicateRegistration,
                     Forbidden, InternalError, InvalidArgument, LineTooLong, NotFound, PayloadTooLarge,
                     ProtocolVersionError, ProviderError, ProviderNotConfigured, PushlineError,
                     ShuttingDown, Unavailable, UnknownCommand, error_from_response)

__version__ = "0.2.0"

__all__ = [
    "Client", "BulkResult", "BulkChunkError", "UNSET", "PROTOCOL_MAJOR", "DEFAULT_SOCKET", "DEFAULT_TIMEOUT",
    "Device", "DeviceResult", "DevicesPage", "RegisterResult", "SendResult", "SubscribeResult", "ArgumentTypeError",
    "PushlineError", "BadJSON", "LineTooLong", "UnknownCommand", "InvalidArgument", "NotFound",
    "DuplicateRegistration", "ProviderNotConfigured", "PayloadTooLarge", "Busy", "ShuttingDown",
    "ProviderError", "InternalError", "ConnectionError", "ConnectionTimeout", "ProtocolVersionError",
    "error_from_response", "EventStream", "Event", "EventsPage", "Job", "JobAccepted", "JobsPage", "Forbidden",
    "Unavailable",
]
