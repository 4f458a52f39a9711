"""Reading a session store directly, without a daemon: ``actorflow sessions ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flow._session import Session
from flow.stores import DEFAULT_SQLITE_NAME, SessionStore, open_store
from runtime.admin._protocol import AdminError, json_safe

__all__ = [
    "EXPORT_FORMATS",
    "export_document",
    "open_offline_store",
    "resolve_stored_id",
    "session_document",
]

EXPORT_FORMATS = ("actorflow", "graph-flow")
MAX_CANDIDATES_SHOWN = 10
FULL_ID_LENGTH = 36


def open_offline_store(data_dir: Path, store_url: str | None) -> SessionStore:
    """The store at ``store_url``, or the SQLite file ``<data_dir>/sessions.db``.

    Raises:
        AdminError: ``StoreNotFound`` when the default SQLite file does not exist
            (opening it would create an empty one and hide a wrong ``--data-dir``).
    """
    if store_url is None:
        path = data_dir / DEFAULT_SQLITE_NAME
        if not path.is_file():
            raise AdminError(
                "StoreNotFound",
                f"no session store at {path} (pass the daemon's --data-dir, or --store URL)",
            )
    return open_store(store_url, data_dir, "commit")


def resolve_stored_id(store: SessionStore, prefix: str) -> str:
    """The one stored session id that starts with ``prefix`` (a full id is taken as it is).

    Raises:
        AdminError: ``SessionNotFound`` when none does, ``AmbiguousId`` (naming the
            candidates) when several do.
    """
    if not prefix:
        raise AdminError("BadArgument", "a session id (or a prefix of one) is required")
    if len(prefix) >= FULL_ID_LENGTH:
        return prefix
    matches = [
        item.session_id
        for item in store.list(None, prefix, MAX_CANDIDATES_SHOWN + 1).items
        if item.session_id.startswith(prefix)
    ]
    if not matches:
        raise AdminError("SessionNotFound", f"no stored session id starts with {prefix!r}")
    if len(matches) > 1:
        more = ", ..." if len(matches) > MAX_CANDIDATES_SHOWN else ""
        raise AdminError(
            "AmbiguousId",
            f"id prefix {prefix!r} matches several sessions: "
            f"{', '.join(matches[:MAX_CANDIDATES_SHOWN])}{more}",
        )
    return matches[0]


def session_document(session: Session) -> dict[str, Any]:
    """The whole session as JSON-safe data (bytes in the context as ``{"$bytes": base64}``)."""
    meta = session.metadata
    return {
        "session_id": session.session_id,
        "graph": session.graph_id,
        "graph_version": session.graph_version,
        "current_task": session.current_task,
        "status": session.status.value,
        "status_message": session.status_message,
        "revision": session.revision,
        "back_stack": list(session.back_stack),
        "metadata": {
            "owner": meta.owner,
            "created_at": meta.created_at,
            "last_accessed": meta.last_accessed,
            "request_count": meta.request_count,
            "client_addr": meta.client_addr,
            "expires_at": meta.expires_at,
            "members": dict(meta.members),
        },
        "last_failure": None if session.last_failure is None else session.last_failure.to_dict(),
        "context": json_safe(session.context.to_dict()),
        "chat_history": {
            "messages": [m.to_dict() for m in session.context.chat_history.messages],
            "max_messages": session.context.chat_history.max_messages,
        },
    }


def _graph_flow_document(session: Session) -> dict[str, Any]:
    """graph-flow's serde shape of a ``Session`` (see GRAPHFLOW.md, "Context")."""
    return {
        "id": session.session_id,
        "graph_id": session.graph_id,
        "current_task_id": session.current_task,
        "status_message": session.status_message,
        "context": {
            "data": json_safe(session.context.to_dict()),
            "chat_history": {
                "messages": [
                    {**m.to_dict(), "role": m.role.capitalize()}  # serde's MessageRole::User
                    for m in session.context.chat_history.messages
                ],
                "max_messages": session.context.chat_history.max_messages,
            },
        },
        "task_history": list(session.back_stack),
    }


def export_document(session: Session, fmt: str) -> dict[str, Any]:
    """The session in ``fmt``: ``actorflow`` (everything, with a format tag) or ``graph-flow``.

    Raises:
        AdminError: ``BadArgument`` for an unknown format.
    """
    if fmt == "actorflow":
        return {"format": "actorflow", "version": 1, "session": session_document(session)}
    if fmt == "graph-flow":
        return _graph_flow_document(session)
    raise AdminError(
        "BadArgument", f"unknown export format {fmt!r} (use {' or '.join(EXPORT_FORMATS)})"
    )
