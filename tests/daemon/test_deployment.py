"""Deployment options: TLS, a Redis store (and what the daemon answers when it goes away)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_harness import StartDaemon, assert_problem, create, wait_for


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        [*command, "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_serves_https(start_daemon: StartDaemon, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    daemon = start_daemon("--tls-cert", str(cert), "--tls-key", str(key), tls=True)
    assert daemon.url.startswith("https://")
    with daemon.client() as client:
        session_id = create(client)
        step = client.post(f"/v1/sessions/{session_id}/step", json={"input": "secure"})
        assert step.json()["response"] == "echo: secure"
    with pytest.raises(httpx.TransportError):
        httpx.get(daemon.url.replace("https://", "http://") + "/healthz", timeout=5)
    assert daemon.stop() == 0


@pytest.mark.redis
def test_redis_store_serves_sessions_and_503s_when_redis_is_gone(
    start_daemon: StartDaemon, redis_server: Any
) -> None:
    redis = redis_server
    daemon = start_daemon("--store", redis.url, "--lease-ttl", "2")
    with daemon.client() as client:
        session_id = create(client)
        ok = client.post(f"/v1/sessions/{session_id}/step", json={"input": "r"})
        assert ok.status_code == 200, ok.text
        redis.stop()
        wait_for(
            lambda: httpx.get(daemon.url + "/readyz", timeout=10).status_code == 503,
            what="/readyz to notice redis is gone",
        )
        assert_problem(httpx.get(daemon.url + "/readyz", timeout=10), 503, "store-unavailable")
        other = client.post("/v1/sessions", json={"graph": "echo"})
        assert_problem(other, 503, "store-unavailable")
        assert httpx.get(daemon.url + "/healthz").status_code == 200
        redis.start()
        wait_for(
            lambda: httpx.get(daemon.url + "/readyz", timeout=10).status_code == 200,
            what="/readyz to recover",
        )
