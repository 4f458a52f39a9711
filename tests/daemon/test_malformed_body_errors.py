"""A body that is not JSON is 400 malformed-json, whichever error the installed msgspec raises.

msgspec up to 0.22 raised ``UnicodeDecodeError`` for a body of invalid UTF-8,
later versions a ``msgspec.DecodeError``; Litestar wraps the latter in its own
``SerializationException`` and that in a ``ClientException``. The end-to-end
check is tests/security/test_paths_and_bodies.py, with the msgspec the suite
installs; these keep both shapes answered, whatever version that is.
"""

from __future__ import annotations

import msgspec
import pytest
from litestar.exceptions import ClientException, SerializationException

from runtime.daemon._app import _is_decode_error
from runtime.daemon._policy import malformed_json
from runtime.daemon._problems import MALFORMED_JSON

BAD_UTF8 = b'{"input": "\xff\xfe"}'


def _utf8_errors() -> list[BaseException]:
    """A ``UnicodeDecodeError`` (old msgspec) and a ``DecodeError`` (new) for bad UTF-8."""
    try:
        BAD_UTF8.decode("utf-8")
    except UnicodeDecodeError as exc:
        old = exc
    return [old, msgspec.DecodeError("Invalid UTF-8 encoded string")]


@pytest.mark.parametrize("exc", _utf8_errors(), ids=["UnicodeDecodeError", "DecodeError"])
def test_bad_utf8_is_malformed_json_saying_so(exc: BaseException) -> None:
    problem = malformed_json(exc)
    assert problem.kind is MALFORMED_JSON
    assert problem.detail == "the JSON body is not valid UTF-8"


def test_other_decode_errors_name_what_msgspec_said() -> None:
    problem = malformed_json(msgspec.DecodeError("Input data was truncated"))
    assert problem.kind is MALFORMED_JSON
    assert problem.detail == "the body is not valid JSON: Input data was truncated"


def test_a_decode_error_behind_litestars_wrappers_is_malformed_json() -> None:
    # ClientException <- SerializationException <- DecodeError, as Litestar raises it
    try:
        try:
            try:
                raise msgspec.DecodeError("Invalid UTF-8 encoded string")  # msgspec >= 0.23
            except msgspec.DecodeError as exc:
                raise SerializationException(str(exc)) from exc
        except SerializationException as exc:
            raise ClientException(str(exc)) from exc
    except ClientException as exc:
        wrapped = exc
    assert "malformed" not in str(wrapped.detail).lower()  # the detail alone would not tell
    assert _is_decode_error(wrapped)


def test_a_400_about_something_else_is_not_a_decode_error() -> None:
    assert not _is_decode_error(ClientException("missing header X"))
