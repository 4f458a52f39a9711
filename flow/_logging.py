"""Library logging: structlog's pipeline when the host configured structlog, else ``logging``.

Every logger in ``flow``, ``actors`` and ``runtime`` comes from ``get_logger``.
Its calls look like structlog's (``log.info("session_evicted", session_id=...)``)
and go, at the moment of each call:

- through structlog's configured processors when ``structlog.is_configured()``
  (``actorflowd`` and the ``actorflow`` CLI configure it in their entry points;
  so may a host application);
- otherwise to the standard-library logger of the same name, under
  ``actorflow``: the message is ``event key=value ...`` and each field is also
  an attribute of the record (``record.session_id``; a field named like a
  ``LogRecord`` attribute gets a ``field_`` prefix). The ``actorflow`` logger
  has a ``NullHandler``, as the ``logging`` HOWTO asks of a library, so a host
  that configured nothing sees nothing (not even ``logging``'s last-resort
  warnings on stderr), and one that calls ``logging.basicConfig()`` or adds a
  handler sees the records at the levels it enabled.

structlog's own default, when nobody configured it, prints every line (debug
included) on stdout: a library must not do that to its host.

Threads: any. A logger holds no state beyond a lazily built standard-library
wrapper and the logger structlog's proxy keeps (two threads building either at
once both get a working one).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import Processor

__all__ = ["ROOT_LOGGER", "LibraryLogger", "get_logger"]

ROOT_LOGGER = "actorflow"
logging.getLogger(ROOT_LOGGER).addHandler(logging.NullHandler())

_LOG_KWARGS = ("exc_info", "stack_info", "stacklevel")
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _to_log_kwargs(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The keyword arguments of ``logging.Logger.info`` & co. for one event."""
    kwargs = {name: event_dict.pop(name) for name in _LOG_KWARGS if name in event_dict}
    event = str(event_dict.pop("event", ""))
    text = " ".join([event, *(f"{key}={value}" for key, value in event_dict.items())])
    extra = {(f"field_{k}" if k in _RESERVED else k): v for k, v in event_dict.items()}
    extra["event"] = event
    return {"msg": text, "extra": extra, **kwargs}


_STDLIB_PROCESSORS: list[Processor] = [
    structlog.stdlib.filter_by_level,  # first: a disabled level costs one comparison
    structlog.contextvars.merge_contextvars,
    _to_log_kwargs,
]


class LibraryLogger:
    """A structlog-shaped logger that picks structlog or ``logging`` at each call."""

    __slots__ = ("_bound", "_logger", "_name", "_stdlib", "_structlog", "_values")

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        self._name = name
        self._values = values
        self._structlog: Any = structlog.get_logger(name, **values)
        # The logger structlog's lazy proxy assembled and keeps, once it keeps one.
        self._bound: Any = None
        self._stdlib: Any = None
        self._logger = logging.getLogger(name)

    def debug(self, event: str, **values: Any) -> None:
        """Log at debug level; without structlog, a disabled debug level costs one check
        (not a run of the processors: activations and passivations log at debug)."""
        if structlog.is_configured():
            bound = self._bound  # `_structlog_logger`'s first check, inline on this path
            (self._structlog_logger() if bound is None else bound).debug(event, **values)
        elif self._logger.isEnabledFor(logging.DEBUG):
            self._target().debug(event, **values)

    def bind(self, **values: Any) -> LibraryLogger:
        """A logger that adds ``values`` to every event."""
        return LibraryLogger(self._name, {**self._values, **values})

    def _target(self) -> Any:
        if structlog.is_configured():
            return self._structlog_logger()
        stdlib = self._stdlib
        if stdlib is None:
            stdlib = self._stdlib = structlog.wrap_logger(
                logging.getLogger(self._name),
                processors=_STDLIB_PROCESSORS,
                wrapper_class=structlog.stdlib.BoundLogger,
                **self._values,
            )
        return stdlib

    def _structlog_logger(self) -> Any:
        """structlog's logger for this one: its lazy proxy, or what the proxy keeps.

        With ``cache_logger_on_first_use`` (actorflowd's configuration) the proxy
        assembles a bound logger at its first call and returns that one ever
        after; each call through the proxy still costs an attribute miss and a
        ``bind()`` (about 1 us, most of a disabled debug line). Once the proxy
        keeps its logger, so does this one: the same logger, found directly. A
        proxy that does not cache (a host's choice) is asked at every call, so a
        later ``structlog.configure`` reaches it, as it would reach structlog's.
        """
        bound = self._bound
        if bound is not None:
            return bound
        proxy = self._structlog
        # structlog replaces the proxy's ``bind`` once it caches; a proxy without a
        # ``__dict__`` (some later structlog) reads as not caching: correct, slower
        if "bind" not in getattr(proxy, "__dict__", ()):
            return proxy
        bound = self._bound = proxy.bind()
        return bound

    def __getattr__(self, method: str) -> Any:
        # debug, info, warning, error, exception, critical: the chosen logger's
        if method.startswith("__"):  # copy, pickle and friends look for these
            raise AttributeError(method)
        return getattr(self._target(), method)


def get_logger(name: str) -> LibraryLogger:
    """The logger named ``name`` (``actorflow.<part>``, so that the ``actorflow``
    logger's handlers and level govern it)."""
    return LibraryLogger(name, {})
