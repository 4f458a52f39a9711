"""The admin socket: a JSON-lines unix socket to inspect and steer a daemon's live sessions.

The protocol is described in docs/admin.md. The daemon calls ``start_admin_server``
at startup; the ``actorflow`` CLI and shell talk to it through ``AdminClient``.
"""

from runtime.admin._client import AdminClient, DaemonUnavailable, Subscription
from runtime.admin._ops import AdminTarget
from runtime.admin._protocol import AdminError, ArgSpec, OpSpec, json_safe
from runtime.admin._server import AdminServer, start_admin_server

__all__ = [
    "AdminClient",
    "AdminError",
    "AdminServer",
    "AdminTarget",
    "ArgSpec",
    "DaemonUnavailable",
    "OpSpec",
    "Subscription",
    "json_safe",
    "start_admin_server",
]
