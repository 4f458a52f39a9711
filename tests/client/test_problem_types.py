"""One table of problem types (``runtime.errors.PROBLEM_TYPES``) for the daemon and the client.

The daemon answers only with its rows, the client reads every one of them back,
and docs/http-api.md lists exactly them: none of the three can drift. The two
cluster answers have exceptions of their own and are never retried.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from runtime.client import Client, DaemonUnavailable, Misdirected, OutcomeUnknown, RetryPolicy
from runtime.client._errors import _BY_SLUG, error_for_response
from runtime.daemon import _forward, _problems
from runtime.errors import PROBLEM_TYPES, ProblemType

DOC = (Path(__file__).resolve().parents[2] / "docs" / "http-api.md").read_text()
SID = "s-1"
FAST = RetryPolicy(deadline=5.0, attempts=5, wait_initial=0.01, wait_max=0.05, wait_jitter=0.0)


def problem(status: int, slug: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"type": f"urn:actorflow:problem:{slug}", "title": slug, "status": status,
              "detail": f"{slug} detail", "session_id": SID},
        headers={"content-type": "application/problem+json", "retry-after": "0"},
        request=httpx.Request("POST", f"http://daemon/v1/sessions/{SID}/step"),
    )  # fmt: skip


def test_every_problem_kind_the_daemon_names_is_a_row_of_the_one_table() -> None:
    kinds = {
        name: value
        for module in (_problems, _forward)
        for name, value in vars(module).items()
        if isinstance(value, ProblemType)
    }
    assert len(kinds) > 30
    for name, kind in kinds.items():
        assert PROBLEM_TYPES[kind.slug] is kind, name
    assert {kind.slug for kind in kinds.values()} == set(PROBLEM_TYPES)


def test_the_client_reads_back_every_slug_of_the_table_and_no_other() -> None:
    assert set(_BY_SLUG) == set(PROBLEM_TYPES)


def test_the_http_docs_list_exactly_the_tables_slugs_with_their_statuses() -> None:
    rows = re.findall(r"^\| (\d{3}) \| (`[a-z-]+`(?: / `[a-z-]+`)*) \|", DOC, re.M)
    documented = {
        slug: int(status) for status, slugs in rows for slug in re.findall(r"`([a-z-]+)`", slugs)
    }
    assert documented == {slug: row.status for slug, row in PROBLEM_TYPES.items()}


def test_outcome_unknown_and_misdirected_have_their_own_exceptions() -> None:
    unknown = error_for_response(problem(503, "outcome-unknown"))
    assert isinstance(unknown, OutcomeUnknown)
    assert isinstance(unknown, DaemonUnavailable)
    assert unknown.maybe_applied is True
    assert str(unknown) == "outcome-unknown detail"
    assert isinstance(error_for_response(problem(421, "misdirected")), Misdirected)


@pytest.mark.parametrize("slug", ["outcome-unknown", "misdirected"])
def test_cluster_answers_are_never_retried_even_for_a_keyed_step(slug: str) -> None:
    sent: list[httpx.Request] = []

    def daemon(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        status = PROBLEM_TYPES[slug].status
        return problem(status, slug)

    transport = httpx.MockTransport(daemon)
    with (
        Client("http://daemon", transport=transport, retry=FAST, idempotent_server=True) as c,
        pytest.raises(OutcomeUnknown if slug == "outcome-unknown" else Misdirected),
    ):
        c.step(SID, "x", idempotency_key="k-1")
    assert len(sent) == 1
