"""A child process for the SIGKILL-while-firing test: sessions whose timers come due soon.

Usage: python timer_kill_child.py DATA_DIR SESSIONS. Creates the sessions (graph
``timer_graph:GRAPH``), each with a timer ``t`` due 1 to 4 seconds later, prints
``ready``, and lets its runtime fire them until it is killed.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import structlog

from runtime import Runtime, RuntimeConfig

# tests/ holds timer_graph; added after flow and runtime are imported, so that
# its flow/ and runtime/ test directories cannot shadow the packages
sys.path.append(str(Path(__file__).resolve().parents[1]))
from timer_graph import GRAPH


def main() -> None:
    data_dir, sessions = sys.argv[1], int(sys.argv[2])
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    config = RuntimeConfig(durability="commit", timer_poll_interval=0.05)
    with Runtime.open(data_dir=data_dir, graphs=[GRAPH], config=config) as rt:
        for i in range(sessions):
            sid = rt.create_session("timers", owner="child")
            rt.step(sid, {"schedule": {"t": 1.0 + 3.0 * i / sessions}})
        print("ready", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
