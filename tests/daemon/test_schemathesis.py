"""Property-based requests from the served OpenAPI document: no 5xx but task-failed.

Every operation of the document gets ``MAX_EXAMPLES`` generated cases (about 150
requests over the API's operations), within a time bound. schemathesis's pytest
plugin is not used (it does not run under this pytest); hypothesis drives each
operation's strategy directly.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import schemathesis
from daemon_harness import Daemon
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err

MAX_EXAMPLES = 15
TIME_BOUND = 120.0
TASK_FAILED = "urn:actorflow:problem:task-failed"


def _content_type(response: Any) -> str:
    value = response.headers.get("content-type") or response.headers.get("Content-Type") or ""
    return str(value[0] if isinstance(value, list) else value)


def _check(case: Any) -> None:
    response = case.call(timeout=10)
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 500:
        assert response.json()["type"] == TASK_FAILED, where
    assert response.status_code != 401, where  # the daemon has no tokens file
    if response.status_code >= 400:
        assert _content_type(response).startswith("application/problem+json"), where


@pytest.mark.slow
def test_generated_requests_get_no_5xx_except_task_failed(shared_daemon: Daemon) -> None:
    schema = schemathesis.openapi.from_url(shared_daemon.url + "/schema/openapi.json")
    deadline = time.monotonic() + TIME_BOUND
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            pytest.fail(f"the OpenAPI document has an invalid operation: {result.err()}")
        operations.append(result.ok())
    assert len(operations) >= 10
    for operation in operations:
        if time.monotonic() > deadline:
            pytest.fail(f"schemathesis run exceeded {TIME_BOUND} s")

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            _check(case)

        run()
