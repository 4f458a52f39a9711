"""The Python client of an actorflowd daemon: ``Client`` (sync) and ``AsyncClient``.

They have the methods and return types of ``Runtime`` / ``AsyncRuntime`` where
the HTTP API has them, so a host app moves from in-process to remote by
changing one line::

    from runtime.client import Client

    with Client("http://127.0.0.1:8700", token="...", user="alice") as rt:
        sid = rt.create_session("echo", owner="alice")
        print(rt.step(sid, "hi").response)

Errors are the runtime's own (``SessionNotFound``, ``SessionBusy``, ...) with the
daemon's ``detail`` and ``request_id``; what only a remote call can meet is a
``ClientError``. Retries, idempotency keys and timeouts: docs/client.md.
The client's own third-party imports are httpx, msgspec and stamina only.
"""

from runtime.client._async import AsyncClient
from runtime.client._calls import GraphSummary
from runtime.client._errors import (
    ClientError,
    DaemonUnavailable,
    Misdirected,
    OutcomeUnknown,
    RemoteTaskError,
    Unauthorized,
    UnexpectedResponse,
)
from runtime.client._protocol import AsyncSessionAPI, GraphDescription, SessionAPI
from runtime.client._retry import RetryPolicy
from runtime.client._sync import Client

__all__ = [
    "AsyncClient",
    "AsyncSessionAPI",
    "Client",
    "ClientError",
    "DaemonUnavailable",
    "GraphDescription",
    "GraphSummary",
    "Misdirected",
    "OutcomeUnknown",
    "RemoteTaskError",
    "RetryPolicy",
    "SessionAPI",
    "Unauthorized",
    "UnexpectedResponse",
]
