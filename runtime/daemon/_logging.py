"""structlog configuration for the actorflowd entry point (nothing else configures logging).

Lines go to stdout: one JSON object per line (``json``) or coloured key=value
lines (``console``). Standard-library loggers (uvicorn's, the runtime's
dependencies') are routed through the same processors, so every line has the
same shape.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog
from structlog.typing import Processor

from runtime.daemon._config import LogFormat

__all__ = ["configure_logging"]

_json_encoder = msgspec.json.Encoder(enc_hook=str)


def _dumps(obj: Any, **_: Any) -> str:
    return _json_encoder.encode(obj).decode()


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
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
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
