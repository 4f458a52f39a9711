"""flow's public API: one sorted __all__, every name importable, the error tree re-exported."""

from __future__ import annotations

import importlib

import flow
from flow import _errors

REQUIRED = {
    "ChatHistory",
    "ChatMessage",
    "Context",
    "FanOutTask",
    "FunctionTask",
    "Graph",
    "GraphBuilder",
    "NextAction",
    "Session",
    "SessionMetadata",
    "SessionStatus",
    "StepResult",
    "Task",
    "TaskResult",
    "astep",
    "decode",
    "encode",
    "new_session",
    "step",
}


def test_all_is_sorted_and_has_no_duplicates() -> None:
    assert flow.__all__ == sorted(flow.__all__)
    assert len(set(flow.__all__)) == len(flow.__all__)


def test_every_name_in_all_imports() -> None:
    module = importlib.import_module("flow")
    for name in flow.__all__:
        assert getattr(module, name) is not None, name


def test_the_engine_names_are_public() -> None:
    assert set(flow.__all__) >= REQUIRED


def test_every_error_class_is_re_exported() -> None:
    assert set(flow.__all__) >= set(_errors.__all__)
    for name in _errors.__all__:
        assert getattr(flow, name) is getattr(_errors, name)


def test_the_module_says_what_it_is() -> None:
    assert flow.__doc__
    assert "engine" in flow.__doc__
