"""A full disk: steps get 503 store-unavailable, committed sessions stay intact, and the
daemon recovers once space returns.

The daemon's data directory is a small tmpfs; a filler file takes every free
byte, then steps whose snapshots grow by a large input must fail to commit.
Deleting the filler gives the space back without restarting anything.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

import httpx
import pytest
from fault_harness import TMPFS_SIZE, StartDaemon, assert_problem, create, step, stored_counts

COMMITTED = 4
STEPS = 3
CHUNK = 64 * 1024
BIG_INPUT = "y" * 200_000  # each echo step keeps its input in the chat history
MAX_FULL_ATTEMPTS = 12
RECOVERY_TIMEOUT = 30.0


def fill(path: Path, limit_bytes: int) -> int:
    """Write ``path`` until the disk is full (at most ``limit_bytes``); the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as filler:
        for size in (CHUNK, 4096, 512, 1):
            block = b"\0" * size
            while written < limit_bytes:
                try:
                    written += filler.write(block) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    assert written < limit_bytes, f"{path} took {written} bytes and the disk is still not full"
    return written


def session(client: httpx.Client, session_id: str) -> dict[str, object]:
    """The session as the daemon serves it (asserting 200)."""
    response = client.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


@pytest.mark.slow
def test_full_disk_gives_503_keeps_committed_sessions_and_recovers(
    tmpfs_dir: Path, start_daemon: StartDaemon
) -> None:
    data_dir = tmpfs_dir / "data"
    daemon = start_daemon(data_dir=data_dir)
    filler = tmpfs_dir / "filler"
    with daemon.client() as client:
        committed = [create(client) for _ in range(COMMITTED)]
        for session_id in committed:
            for i in range(STEPS):
                assert step(client, session_id, i).status_code == 200
        before = {session_id: session(client, session_id) for session_id in committed}
        big = create(client)

        filled = fill(filler, limit_bytes=64 * 1024 * 1024)
        acked_big = 0
        refused = None
        for _ in range(MAX_FULL_ATTEMPTS):
            response = step(client, big, BIG_INPUT)
            if response.status_code != 200:
                refused = response
                break
            acked_big += 1
        assert refused is not None, (
            f"{MAX_FULL_ATTEMPTS} steps of {len(BIG_INPUT)} bytes all committed on a full "
            f"{TMPFS_SIZE} tmpfs (filler {filled} bytes)"
        )
        body = assert_problem(refused, 503, "store-unavailable")
        assert body["session_id"] == big
        assert "full" in body["detail"], body
        assert refused.headers["retry-after"]
        assert daemon.process is not None
        assert daemon.process.poll() is None, "the daemon died on a full disk"

        for session_id in committed:
            assert session(client, session_id) == before[session_id]
        assert session(client, big)["revision"] == acked_big

        filler.unlink()
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        attempts = 0
        while True:
            attempts += 1
            response = step(client, big, "space is back")
            if response.status_code == 200:
                break
            assert_problem(response, 503, "store-unavailable")
            assert time.monotonic() < deadline, f"no step succeeded {RECOVERY_TIMEOUT} s after"
            time.sleep(0.1)  # the daemon retries on its own; the test can only ask again
        print(
            f"\nfull disk: filler {filled} bytes; {acked_big} big steps before the 503; "
            f"{attempts} attempts to recover"
        )
        assert response.json()["revision"] == acked_big + 1

        for session_id in committed:
            response = step(client, session_id, "after")
            assert response.status_code == 200, response.text
            assert response.json()["revision"] == STEPS + 1
            context = session(client, session_id)["context"]
            assert isinstance(context, dict)
            assert context["count"] == STEPS + 1
    assert daemon.terminate() == 0, daemon.log_tail()
    expected = dict.fromkeys(committed, STEPS + 1) | {big: acked_big + 1}
    assert stored_counts(daemon.db_path, [*committed, big]) == expected
