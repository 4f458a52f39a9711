"""The admin socket's graph-version ops: edit, versions, migrate and reload."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from runtime.admin import AdminError

if TYPE_CHECKING:  # only for annotations: the fixture provides the object
    from conftest import LiveAdmin


def test_edit_sets_unsets_and_moves_a_session_by_prefix(live_admin: LiveAdmin) -> None:
    sid = live_admin.create("support")
    live_admin.step(sid)
    client = live_admin.client()
    result = client.call("edit", id=sid[:8], set='{"tier": "gold"}', unset="nothing", goto="faq")
    assert result["message"] == "edited by admin: set tier; unset nothing; goto faq"
    inspected = client.call("inspect", id=sid)
    assert inspected["current_task"] == "faq"
    assert inspected["context"]["tier"] == "gold"
    assert inspected["revision"] == result["revision"]
    with pytest.raises(AdminError, match="not JSON") as caught:
        client.call("edit", id=sid, set="{tier")
    assert caught.value.type == "BadArgument"
    with pytest.raises(AdminError, match="no such task") as refused:
        client.call("edit", id=sid, goto="nowhere")
    assert refused.value.type == "InvalidInput"
    assert client.call("inspect", id=sid)["revision"] == result["revision"]


def test_versions_counts_live_and_stored_sessions_per_version(live_admin: LiveAdmin) -> None:
    live_admin.step(live_admin.create("echo"), "hi")
    live_admin.create("echo")
    graphs = {g["id"]: g for g in live_admin.client().call("versions")["graphs"]}
    [echo] = graphs["echo"]["versions"]
    assert echo["served"]
    assert echo["default"]
    assert echo["live"] == 1
    assert echo["stored"] == 2


def test_migrate_to_an_unserved_version_and_reload_without_a_daemon_are_refused(
    live_admin: LiveAdmin,
) -> None:
    client = live_admin.client()
    with pytest.raises(AdminError, match="no version '9' served") as caught:
        client.call("migrate", graph="echo", to="9")
    assert caught.value.type == "GraphNotFound"
    with pytest.raises(AdminError) as unsupported:
        client.call("reload")
    assert unsupported.value.type == "Unsupported"
