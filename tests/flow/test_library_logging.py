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


def test_a_caching_structlog_configuration_is_followed_and_its_logger_kept() -> None:
    events: list[dict[str, object]] = []

    def keep(_logger: object, _method: str, event_dict: dict[str, object]) -> dict[str, object]:
        events.append(dict(event_dict))
        raise structlog.DropEvent

    structlog.configure(processors=[keep], cache_logger_on_first_use=True)
    log = get_logger("actorflow.test.cached")
    log.debug("first", n=1)  # through the proxy, which now keeps its logger
    log.debug("second", n=2)
    log.info("third", n=3)
    assert [e["event"] for e in events] == ["first", "second", "third"]
    kept = log._bound
    assert kept is not None
    assert kept is log._structlog.bind()
    # as structlog does for its own cached proxies, a later configure does not reach it
    structlog.configure(processors=[structlog.processors.KeyValueRenderer()])
    log.debug("fourth")
    assert events[-1]["event"] == "fourth"


def test_a_non_caching_structlog_configuration_is_read_at_every_call() -> None:
    log = get_logger("actorflow.test.uncached")
    log.debug("warm")
    with structlog.testing.capture_logs() as first:
        log.debug("one")
    with structlog.testing.capture_logs() as second:
        log.debug("two")
    assert [e["event"] for e in first] == ["one"]
    assert [e["event"] for e in second] == ["two"]
    assert log._bound is None
