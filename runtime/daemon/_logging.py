"""structlog configuration for the actorflowd entry point (nothing else configures logging).

Lines go to stdout: one JSON object per line (``json``) or coloured key=value
lines (``console``). Standard-library loggers (uvicorn's, the runtime's
dependencies') are routed through the same processors, so every line has the
same shape.

Info lines (one access line per request) are not flushed one by one: stdout's
buffer is flushed every ``FLUSH_INTERVAL`` by a thread, on every warning or
error, and at exit. A flush per line costs a system call on the event loop
thread, which then has to win the GIL back from the runtime's worker threads.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from typing import Any, TextIO

import msgspec
import structlog
from structlog.typing import Processor

from runtime.daemon._config import LogFormat

__all__ = ["FLUSH_INTERVAL", "configure_logging", "flush_logs"]

FLUSH_INTERVAL = 0.2
_json_encoder = msgspec.json.Encoder(enc_hook=str)


def _dumps(obj: Any, **_: Any) -> str:
    return _json_encoder.encode(obj).decode()


class _LineWriter:
    """Writes lines to a stream, flushing it on warnings, periodically and at exit."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._interval = interval
        self._thread = threading.Thread(target=self._flush_loop, name="log-flush", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def write(self, line: str, *, flush: bool) -> None:
        with self._lock:
            self._stream.write(line + "\n")
            if flush:
                self._stream.flush()

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()

    def _flush_loop(self) -> None:
        while True:
            time.sleep(self._interval)  # a periodic flush: nothing to wait on but the clock
            self.flush()


class _LineLogger:
    """The structlog logger: info and debug lines are buffered, the others flushed at once."""

    def __init__(self, writer: _LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write(message, flush=False)

    def alert(self, message: str) -> None:
        self._writer.write(message, flush=True)

    debug = info = msg
    warning = warn = error = err = critical = fatal = exception = alert


_writer: _LineWriter | None = None


def flush_logs() -> None:
    """Write out every buffered log line now."""
    if _writer is not None:
        _writer.flush()


def configure_logging(log_format: LogFormat, level: int = logging.INFO) -> None:
    """Send structlog and standard-library logging to stdout in ``log_format``."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    global _writer
    if _writer is None:
        _writer = _LineWriter(sys.stdout, FLUSH_INTERVAL)
    writer = _writer
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: _LineLogger(writer),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("uvicorn.access").disabled = True
