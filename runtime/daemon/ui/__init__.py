"""The web dashboard at ``/ui``: server-rendered pages of the live system.

Pages (Jinja2 templates, autoescaped) show what the admin socket and the shell
show, read through the same runtime methods; the overview updates itself over
server-sent events with vendored htmx (``static/``, pinned, with its license
and SHA256SUMS; nothing is loaded from another site). Login trades a bearer
token for an HttpOnly, SameSite=Strict cookie; admin actions need an admin and
a CSRF token. docs/admin.md and docs/security.md describe it.
"""

from runtime.daemon.ui._dashboard import UI_PATH, Dashboard
from runtime.daemon.ui._pages import ui_error_page, ui_router

__all__ = ["UI_PATH", "Dashboard", "ui_error_page", "ui_router"]
