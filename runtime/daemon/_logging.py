"""structlog configuration for the actorflowd entry point (nothing else configures logging).

Lines go to stdout: one JSON object per line (``json``) or coloured key=value
lines (``console``). Standard-library loggers (uvicorn's, the runtime's
dependencies') are routed through the same processors, so every line has the
same shape.

Logging never blocks the event loop or the signal path: a line is put on a
bounded queue (``QUEUE_LINES``) and written by one thread straight to the
stdout file descriptor, in batches. When stdout stalls (a reader that stops
reading) the queue fills and further lines are dropped and counted (a
``log_lines_dropped`` line says how many once writing resumes); when stdout is
gone (EPIPE) every line is dropped. ``flush_logs`` waits at most
``FLUSH_TIMEOUT`` for the queue to empty, so a signal or exit never hangs on
stdout.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import sys
import threading
from collections import deque
from typing import Any, TextIO

import msgspec
import structlog
from structlog.typing import Processor

from runtime.daemon._config import LogFormat

__all__ = [
    "FLUSH_TIMEOUT",
    "QUEUE_LINES",
    "configure_logging",
    "dropped_lines",
    "flush_logs",
    "log_access",
]

QUEUE_LINES = 10_000
FLUSH_TIMEOUT = 1.0
_BATCH_LINES = 512
_json_encoder = msgspec.json.Encoder(enc_hook=str)


def _dumps(obj: Any, **_: Any) -> str:
    return _json_encoder.encode(obj).decode()


class _LineWriter:
    """Writes lines from a bounded queue to a file descriptor on its own thread.

    ``write`` never blocks: a full queue drops the line and counts it. The queue
    is a ``deque`` (an append under the GIL, no lock); the writer is woken only
    when it went to sleep on an empty queue, so a busy daemon pays no lock and
    no notify per line (``queue.Queue`` took both).
    """

    def __init__(self, stream: TextIO, capacity: int = QUEUE_LINES) -> None:
        self._stream = stream
        self._capacity = capacity
        self._lines: deque[str] = deque()
        self._wake = threading.Event()
        self._sleeping = False
        self._taken = 0  # lines the writer took off the queue (written by it alone)
        self._written = 0  # of those, lines written
        self._done = threading.Condition()
        self.dropped = 0
        self._reported = 0
        self._broken = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def write(self, line: str, *, flush: bool = False) -> None:
        """Queue ``line`` (``flush`` is kept for the logger's call shape: every line is
        written as soon as the thread gets to it)."""
        if len(self._lines) >= self._capacity:
            self.dropped += 1  # one int add under the GIL: exact enough for a counter
            return
        self._lines.append(line)
        if self._sleeping:  # read after the append: a writer going to sleep re-checks
            self._wake.set()

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Wait until every queued line is written, or ``timeout`` has passed."""
        with self._done:
            self._done.wait_for(lambda: not self._lines and self._written == self._taken, timeout)

    def _take(self) -> list[str]:
        """The next lines to write (at most a batch), sleeping while there are none.

        Lines are written as soon as the writer gets to them (tests and operators
        read the access line of a request right after its answer): it sleeps only
        on an empty queue, and is woken by the first line after that.
        """
        lines = self._lines
        while not lines:
            self._sleeping = True
            self._wake.clear()
            if not lines:  # a line appended before the flag was seen must not wait
                self._wake.wait()
            self._sleeping = False
        count = min(len(lines), _BATCH_LINES)
        self._taken += count  # counted before they leave the queue: flush sees them in one
        return [lines.popleft() for _ in range(count)]

    def _run(self) -> None:
        while True:
            lines = self._take()
            taken = len(lines)
            if self.dropped > self._reported:
                count, self._reported = self.dropped - self._reported, self.dropped
                lines.append(_dumps({"event": "log_lines_dropped", "dropped": count}))
            self._emit(("\n".join(lines) + "\n").encode("utf-8", "replace"))
            with self._done:
                self._written += taken
                self._done.notify_all()

    def _emit(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        try:
            if fd < 0:
                self._stream.write(data.decode("utf-8", "replace"))
                self._stream.flush()
                return
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            self._broken = True  # stdout is gone (EPIPE): drop lines from now on


class _LineLogger:
    """The structlog logger: every line goes to the writer's queue."""

    def __init__(self, writer: _LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write(message)

    debug = info = warning = warn = error = err = critical = fatal = exception = msg


_writer: _LineWriter | None = None
# The writer access lines go to directly: set while lines are JSON at INFO or below.
_access_writer: _LineWriter | None = None


def log_access(fields: dict[str, Any]) -> bool:
    """Write one access line (``event`` "request") straight to the log writer.

    The line is what structlog's JSON chain renders for ``log.info("request",
    **fields)`` (the request id is in ``fields``: the only context variable the
    daemon binds), built without it: an access line per request is the daemon's
    commonest log call. False when lines are not JSON at INFO (console format, a
    higher level, or logging not configured by ``configure_logging``, as in
    tests): the caller then logs through structlog.
    """
    writer = _access_writer
    if writer is None:
        return False
    fields["event"] = "request"
    fields["level"] = "info"
    fields["timestamp"] = datetime.datetime.now(datetime.UTC)
    writer.write(_dumps(fields))
    return True


def flush_logs() -> None:
    """Wait (at most ``FLUSH_TIMEOUT``) until every queued log line is written."""
    if _writer is not None:
        _writer.flush()


def dropped_lines() -> int:
    """How many log lines were dropped because stdout did not keep up."""
    return _writer.dropped if _writer is not None else 0


class _QueueHandler(logging.Handler):
    """Standard-library records, formatted, onto the same queue as structlog's lines."""

    def __init__(self, writer: _LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.write(self.format(record))
        except Exception:  # a formatting failure must not break the caller
            self.handleError(record)


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
    global _writer, _access_writer
    if _writer is None:
        _writer = _LineWriter(sys.stdout)
    writer = _writer
    _access_writer = writer if log_format == "json" and level <= logging.INFO else None
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: _LineLogger(writer),
        cache_logger_on_first_use=True,
    )
    handler = _QueueHandler(writer)
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
