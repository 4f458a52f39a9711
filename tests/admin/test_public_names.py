"""runtime.admin and runtime.shell say what is public in one sorted ``__all__``."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module_name", ["runtime.admin", "runtime.shell"])
def test_all_is_sorted_and_every_name_imports(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert names == sorted(names)
    for name in names:
        assert getattr(module, name) is not None


def test_the_console_script_entry_point_is_runtime_cli_main() -> None:
    from runtime.cli import build_parser, main

    assert callable(main)
    parser = build_parser()
    args = parser.parse_args(["admin", "inspect", "abc", "--json", "--socket", "/x.sock"])
    assert (args.command, args.op, args.id, args.json) == ("admin", "inspect", "abc", True)
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(["admin", "ls", "--data-dir", "a", "--socket", "b"])
    assert caught.value.code == 2
