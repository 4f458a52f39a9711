"""Loading ``--graphs`` with several versions and ``--migrations`` references."""

from __future__ import annotations

import pytest

from runtime.daemon._config import ConfigError
from runtime.daemon._graphs import load_graphs, load_migrations, pick_default_graph

REFS = "tests.versions.ticket_graphs"


def test_several_versions_of_one_graph_are_served_and_the_default_is_picked_once() -> None:
    graphs = load_graphs([f"{REFS}:V1", f"{REFS}:V2"])
    assert [(g.id, g.version) for g in graphs] == [("tickets", "1"), ("tickets", "2")]
    assert pick_default_graph(graphs, None) == "tickets"
    with pytest.raises(ConfigError, match="at the same version '1'"):
        load_graphs([f"{REFS}:V1", f"{REFS}:V1"])


def test_migration_refs_load_a_list_and_refuse_anything_else() -> None:
    assert [m.to_version for m in load_migrations([f"{REFS}:MIGRATIONS"])] == ["2", "3"]
    with pytest.raises(ConfigError, match=r"--migrations flow\.demo:echo: expected a Migration"):
        load_migrations(["flow.demo:echo"])
    with pytest.raises(ConfigError, match="cannot import 'nowhere_at_all'"):
        load_migrations(["nowhere_at_all:M"])
