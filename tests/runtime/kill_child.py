"""A child process for the SIGKILL test: steps echo sessions and prints each acknowledgement.

Usage: python kill_child.py DATA_DIR SESSIONS THREADS. Prints ``ready <ids...>``,
then ``ack <session id> <revision>`` after every step the runtime acknowledged,
until it is killed.
"""

from __future__ import annotations

import logging
import sys
import threading

import structlog

from flow.demo import echo
from runtime import Runtime


def main() -> None:
    data_dir, sessions, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # stdout carries the acknowledgements only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    lock = threading.Lock()
    with Runtime.open(data_dir=data_dir, graphs=[echo]) as rt:
        sids = [rt.create_session("echo", owner="child") for _ in range(sessions)]
        print("ready", *sids, flush=True)

        def client(chunk: list[str]) -> None:
            while True:
                for sid in chunk:
                    revision = rt.step(sid, "x").revision
                    with lock:
                        print("ack", sid, revision, flush=True)

        workers = [
            threading.Thread(target=client, args=(sids[i::threads],), daemon=True)
            for i in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()


if __name__ == "__main__":
    main()
