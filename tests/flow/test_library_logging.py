"""flow._logging: structlog when the host configured it, else the standard library."""

from __future__ import annotations

import logging

import pytest
import structlog

from flow._logging import get_logger


def test_unconfigured_structlog_logs_to_stdlib_with_fields_and_clashing_names_prefixed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = get_logger("actorflow.test").bind(node="n1")
    with caplog.at_level(logging.INFO, logger="actorflow"):
        log.debug("too_low", session_id="s0")
        log.warning("lease_lost", session_id="s1", name="clash", args=3)
    [record] = caplog.records
    assert record.name == "actorflow.test"
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "lease_lost node=n1 session_id=s1 name=clash args=3"
    fields = vars(record)
    assert (fields["event"], fields["session_id"], fields["node"]) == ("lease_lost", "s1", "n1")
    assert (fields["field_name"], fields["field_args"]) == ("clash", 3)


def test_configured_structlog_gets_the_events_and_stdlib_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = get_logger("actorflow.test")
    with caplog.at_level(logging.DEBUG), structlog.testing.capture_logs() as logs:
        log.info("session_evicted", session_id="s2")
    assert logs == [{"event": "session_evicted", "session_id": "s2", "log_level": "info"}]
    assert caplog.records == []
