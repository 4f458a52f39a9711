"""runtime.client says what is public in one sorted ``__all__``, and its own code imports
no third-party package but httpx, msgspec and stamina (a remote host app needs no
actor, store or web-server library to call a daemon)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import runtime.client

ALLOWED_THIRD_PARTY = {"httpx", "msgspec", "stamina"}
PROJECT = {"flow", "actors", "runtime"}
CLIENT_DIR = Path(runtime.client.__file__).parent


def test_all_is_sorted_and_every_name_imports() -> None:
    names = list(runtime.client.__all__)
    assert names == sorted(names)
    for name in names:
        assert getattr(runtime.client, name) is not None


def test_the_client_imports_only_httpx_msgspec_and_stamina() -> None:
    found: set[str] = set()
    for path in sorted(CLIENT_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    third_party = found - PROJECT - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == ALLOWED_THIRD_PARTY
    actors = [m for m in found if m == "actors"]
    assert actors == [], "the client must not import the actor layer"
