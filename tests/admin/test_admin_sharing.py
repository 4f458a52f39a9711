"""The admin socket's ``share`` op, and ``inspect`` showing members live and passivated."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from runtime.admin import AdminError

if TYPE_CHECKING:  # only for annotations: the fixture provides the object
    from conftest import LiveAdmin


def test_share_grants_and_removes_access_and_inspect_shows_the_members(
    live_admin: LiveAdmin,
) -> None:
    sid = live_admin.create("echo")
    live_admin.step(sid, "hi")
    client = live_admin.client()
    shared = client.call("share", id=sid[:8], user="bob", access="write")
    assert shared == {"session_id": sid, "members": {"bob": "write"}}
    assert client.call("inspect", id=sid)["metadata"]["members"] == {"bob": "write"}
    assert client.call("passivate", id=sid)["passivated"] is True
    stored = client.call("inspect", id=sid)
    assert stored["live"] is False
    assert stored["metadata"]["members"] == {"bob": "write"}
    assert stored["last_failure"] is None
    assert client.call("share", id=sid, user="bob", access="none")["members"] == {}
    with pytest.raises(AdminError, match="read, write or none") as refused:
        client.call("share", id=sid, user="bob", access="owner")
    assert refused.value.type == "BadArgument"
    with pytest.raises(AdminError, match="owns") as owner:
        client.call("share", id=sid, user="alice", access="read")
    assert owner.value.type == "InvalidInput"
