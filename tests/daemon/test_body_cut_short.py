"""A request whose client leaves before its body ends is not run.

Found by the cluster fault run: a daemon killed after sending a forwarded step's head
and before its body made the holder run the step with no input (uvicorn answers the
app's read with a disconnect, and the body reader took that for an empty body). The
same held for any client that leaves mid-request. The step now does not run, and the
access line says 499 (nothing was sent back).
"""

from __future__ import annotations

import socket

from daemon_harness import Daemon, StartDaemon, wait_for


def _head(path: str, port: int, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()


def _cut_lines(daemon: Daemon, path: str) -> int:
    return sum('"status":499' in line and path in line for line in daemon.log_lines())


def test_a_step_whose_client_leaves_before_its_body_ends_is_not_run(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon()
    with daemon.client() as http:
        sid = http.post("/v1/sessions", json={"graph": "echo"}).json()["session_id"]
        path = f"/v1/sessions/{sid}/step"
        for cut, sent in enumerate((b"", b'{"input": '), 1):  # no byte of the body, then a part
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
                sock.sendall(_head(path, daemon.port, 20))
                # uvicorn asks for the body when the daemon first reads it: the request
                # is being served, and its client leaves now
                assert sock.recv(64).startswith(b"HTTP/1.1 100")
                sock.sendall(sent)
            wait_for(lambda n=cut: _cut_lines(daemon, path) == n, 10.0, f"499 access line {cut}")
            assert http.get(f"/v1/sessions/{sid}").json()["revision"] == 0
        done = http.post(path, json={"input": "hi"}).json()
        assert (done["revision"], done["response"]) == (1, "echo: hi")
