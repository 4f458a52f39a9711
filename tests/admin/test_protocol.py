"""The admin wire format and argument checking, without a runtime."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.admin import AdminError
from runtime.admin._ops import check_args
from runtime.admin._protocol import OPS, decode_line, encode_line, error_reply, json_safe, ok_reply


@dataclass(frozen=True)
class _Row:
    name: str
    data: bytes


def test_bytes_in_results_are_base64_objects() -> None:
    value = {"blob": b"\x00\xffabc", "rows": [_Row("a", b"z")], "pair": (1, 2)}
    safe = json_safe(value)
    assert safe["blob"] == {"$bytes": base64.b64encode(b"\x00\xffabc").decode()}
    assert safe["rows"] == [{"name": "a", "data": {"$bytes": "eg=="}}]
    assert safe["pair"] == [1, 2]
    json.dumps(safe, allow_nan=False)


def test_structs_in_results_are_objects_as_dataclasses_are() -> None:
    from msgspec.structs import force_setattr

    from flow import ChatMessage
    from flow._timers import PendingTimer

    safe = json_safe({"timers": (PendingTimer("t", 12.5, {"n": 1}),)})
    assert safe == {"timers": [{"name": "t", "due": 12.5, "input": {"n": 1}, "wake": False}]}
    message = ChatMessage("user", "hi", "t")
    force_setattr(message, "_packed", b"\x93")  # as the snapshot codec caches its bytes
    assert json_safe(message) == {"role": "user", "content": "hi", "timestamp": "t"}


def test_non_finite_floats_become_strings_so_replies_stay_strict_json() -> None:
    safe = json_safe([float("nan"), float("inf"), float("-inf"), 1.5])
    assert safe == ["NaN", "Infinity", "-Infinity", 1.5]
    line = encode_line(ok_reply({"x": float("nan")}))
    assert json.loads(line) == {"ok": True, "result": {"x": "NaN"}}


def test_unknown_objects_are_sent_as_their_repr() -> None:
    assert json_safe({"o": object})["o"] == repr(object)


def test_error_reply_shape() -> None:
    assert error_reply("UnknownOp", "no") == {
        "ok": False,
        "error": {"type": "UnknownOp", "message": "no"},
    }


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe", "not UTF-8"),
        (b'"op"', "JSON object"),
    ],
)
def test_malformed_lines_are_refused_with_a_reason(line: bytes, says: str) -> None:
    with pytest.raises(AdminError, match=says) as caught:
        decode_line(line)
    assert caught.value.type == "MalformedRequest"


def test_arguments_get_defaults_and_bounds() -> None:
    spec = OPS["stored"]
    assert check_args(spec, {"op": "stored"}) == {"owner": None, "cursor": None, "limit": 20}
    assert check_args(spec, {"op": "stored", "limit": 5, "owner": "al"})["limit"] == 5
    for bad in (0, 1001, True, "5", 2.5):
        with pytest.raises(AdminError, match="limit") as caught:
            check_args(spec, {"op": "stored", "limit": bad})
        assert caught.value.type == "BadArgument"


def test_missing_and_unknown_arguments_are_named() -> None:
    with pytest.raises(AdminError, match="needs argument 'id'"):
        check_args(OPS["inspect"], {"op": "inspect"})
    with pytest.raises(AdminError, match=r"unknown argument.*colour"):
        check_args(OPS["ls"], {"op": "ls", "colour": "red"})
    with pytest.raises(AdminError, match="non-empty string"):
        check_args(OPS["kill"], {"op": "kill", "id": ""})


def test_every_op_but_help_is_documented_in_admin_md() -> None:
    text = (Path(__file__).parents[2] / "docs" / "admin.md").read_text()
    for name in OPS:
        assert f"| `{name}` |" in text, f"op {name} is missing from docs/admin.md"
