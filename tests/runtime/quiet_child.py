"""A host application that never configures structlog: the quiet-by-default test's child.

Usage: python quiet_child.py DATA_DIR. First, with no logging configured at all,
it steps a session, fails a task, passivates a session and steps it back to
life. Then it enables ``logging`` (a handler that keeps records) and does the
same again. Its only output is one JSON line on stdout: the ``actorflow``
records the handler kept, with their fields.
"""

from __future__ import annotations

import json
import logging
import sys

from runtime_helpers import counting_graph

from runtime import Runtime, TaskFailed
from runtime.testing import wait_passivated


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _exercise(data_dir: str) -> None:
    with Runtime.open(data_dir=data_dir, graphs=[counting_graph("count")]) as rt:
        sid = rt.create_session("count", owner="host")
        rt.step(sid, "one")
        try:
            rt.step(sid, "boom")
        except TaskFailed:
            pass
        else:
            raise AssertionError("the boom step did not fail")
        rt.passivate(sid)
        wait_passivated(rt, sid)
        rt.step(sid, "two")


def main() -> None:
    data_dir = sys.argv[1]
    _exercise(data_dir + "/quiet")
    keep = _Keep()
    logging.basicConfig(level=logging.DEBUG, handlers=[keep])
    _exercise(data_dir + "/logged")
    shown = [
        {
            "logger": r.name,
            "level": r.levelname,
            "message": r.getMessage(),
            "event": getattr(r, "event", None),
            "session_id": getattr(r, "session_id", None),
            "error": getattr(r, "error", None),
            "traceback": logging.Formatter().formatException(r.exc_info) if r.exc_info else None,
        }
        for r in keep.records
        if r.name.startswith("actorflow")
    ]
    print(json.dumps(shown))


if __name__ == "__main__":
    main()
