"""Context: msgpack-safe values only, graph-flow's accessors, and the chat history."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from flow import (
    ChatHistory,
    Context,
    FunctionTask,
    GraphBuilder,
    InvalidInput,
    TaskResult,
    new_session,
)
from flow._codec import decode, encode

GRAPH = GraphBuilder("g").add_task(FunctionTask("t", lambda ctx: TaskResult())).build()


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "object"),
        ({1, 2}, "set"),
        (1.5j, "complex"),
        (2**64, "int"),
        ([1, [2, object()]], "object"),
        ({"ok": {"deep": {3}}}, "set"),
        ({1: "int key"}, "int"),
    ],
    ids=["object", "set", "complex", "huge-int", "nested-list", "nested-dict", "int-key"],
)
def test_set_rejects_values_msgpack_cannot_hold_naming_key_and_type(
    value: object, type_name: str
) -> None:
    ctx = Context()
    with pytest.raises(InvalidInput, match=rf"'the_key'.*type {type_name}\b"):
        ctx.set("the_key", value)
    assert not ctx.contains("the_key")


def test_set_accepts_every_msgpack_safe_value() -> None:
    ctx = Context()
    value = {
        "none": None,
        "bool": True,
        "int": -(2**63),
        "big": 2**64 - 1,
        "float": 1.5,
        "str": "x",
        "bytes": b"\x00",
        "list": [1, "two", [3.0]],
        "dict": {"nested": {"deeper": [None]}},
    }
    ctx.set("all", value)
    assert ctx.get("all") == value


def test_non_str_keys_are_rejected() -> None:
    with pytest.raises(InvalidInput, match="keys must be str"):
        Context().set(1, "x")  # type: ignore[arg-type]


def test_constructor_values_are_checked_like_set() -> None:
    with pytest.raises(InvalidInput, match="'bad'"):
        Context({"bad": object()})


def test_get_remove_contains_keys_and_clear_behave_like_graph_flow() -> None:
    ctx = Context({"a": 1, "b": 2})
    ctx.chat_history.add_user("hi")
    assert ctx.get("missing") is None
    assert ctx.get("missing", "dflt") == "dflt"
    assert ctx.remove("a") == 1
    assert ctx.remove("a") is None
    assert ctx.contains("b")
    assert "b" in ctx
    assert ctx.keys() == ["b"]
    ctx.clear()
    assert ctx.keys() == []
    assert len(ctx.chat_history) == 1


def test_values_are_copied_in_and_out_so_nothing_bypasses_set() -> None:
    ctx = Context()
    items: list[object] = [1, 2]
    ctx.set("items", items)
    items.append(object())
    fetched = ctx.get("items")
    fetched.append(object())
    ctx["items"].append(object())
    assert ctx.get("items") == [1, 2]


def test_copy_is_independent_of_the_original() -> None:
    ctx = Context({"list": [1]})
    ctx.input = "in"
    clone = ctx.copy()
    clone.set("list", [1, 2])
    clone.chat_history.add_user("only in clone")
    assert ctx.get("list") == [1]
    assert len(ctx.chat_history) == 0
    assert clone.input == "in"


def test_chat_history_keeps_the_newest_1000_messages_by_default() -> None:
    history = Context().chat_history
    assert history.max_messages == 1000
    for i in range(1005):
        history.add_user(f"m{i}")
    assert len(history) == 1000
    assert history.messages[0].content == "m5"
    assert history.messages[-1].content == "m1004"


def test_chat_history_max_length_is_configurable_or_unbounded() -> None:
    small = ChatHistory(max_messages=2)
    for text in ("a", "b", "c"):
        small.add_user(text)
    assert [m.content for m in small] == ["b", "c"]
    unbounded = ChatHistory(max_messages=None)
    for i in range(1200):
        unbounded.add_system(str(i))
    assert len(unbounded) == 1200
    with pytest.raises(InvalidInput, match="max_messages"):
        ChatHistory(max_messages=0)


def test_last_messages_returns_the_newest_n_oldest_first() -> None:
    history = ChatHistory()
    history.add_user("1")
    history.add_assistant("2")
    history.add_system("3")
    assert [m.content for m in history.last_messages(2)] == ["2", "3"]
    assert [m.content for m in history.last_messages(10)] == ["1", "2", "3"]
    assert history.last_messages(0) == []


def test_messages_carry_role_content_and_a_utc_rfc3339_timestamp() -> None:
    history = ChatHistory()
    message = history.add_assistant("hello")
    assert (message.role, message.content) == ("assistant", "hello")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", message.timestamp)
    assert datetime.fromisoformat(message.timestamp).utcoffset() is not None
    assert message.to_dict() == {
        "role": "assistant",
        "content": "hello",
        "timestamp": message.timestamp,
    }


def test_chat_history_rejects_unknown_roles_and_non_str_content() -> None:
    history = ChatHistory()
    with pytest.raises(InvalidInput, match="role"):
        history.add("robot", "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="content must be str"):
        history.add_user(3)  # type: ignore[arg-type]


def test_tuples_are_stored_as_lists_as_a_snapshot_reads_them_back() -> None:
    ctx = Context({"pair": (1, (2, "x"))})
    ctx.set("nested", {"t": ((1,), [2])})
    assert ctx.get("pair") == [1, [2, "x"]]
    assert ctx.get("nested") == {"t": [[1], [2]]}
    assert ctx == decode(encode(new_session(GRAPH, owner="a", context=ctx))).context


def test_chat_history_limit_must_be_a_positive_int_or_none() -> None:
    for bad in (0, True, 2.5, "10"):
        with pytest.raises(InvalidInput, match="max_messages must be an int >= 1 or None"):
            ChatHistory(max_messages=bad)  # type: ignore[arg-type]


def test_a_context_value_nested_past_the_depth_limit_is_refused_and_nothing_changes() -> None:
    from flow._context import MAX_VALUE_DEPTH

    ctx = Context()
    deepest_allowed: list[object] = []
    for _ in range(MAX_VALUE_DEPTH - 1):
        deepest_allowed = [deepest_allowed]
    ctx.set("ok", deepest_allowed)
    with pytest.raises(InvalidInput, match="nested deeper than 64"):
        ctx.set("deep", [deepest_allowed])
    assert not ctx.contains("deep")
