"""One Pushline client for the whole process.

`pushline.Client` keeps one connection per thread, so a single module-level
client is safe under any WSGI/ASGI server with threads; forked workers open
their own connections.
"""

from functools import lru_cache

import pushline
from django.conf import settings


@lru_cache(maxsize=None)
def client() -> pushline.Client:
    return pushline.Client(settings.PUSHLINE_SOCKET, timeout=settings.PUSHLINE_TIMEOUT)
