"""/metrics reads mailbox depths off the event loop; shutdown closes the forwarder's clients."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_harness import StartDaemon, create, wait_for

from flow.demo import GRAPHS
from runtime import AsyncRuntime
from runtime.daemon._app import build_app
from runtime.daemon._auth import Authenticator
from runtime.daemon._forward import Forwarder
from runtime.daemon._gateway import Gateway
from runtime.daemon._metrics import DaemonMetrics
from runtime.daemon._peer_transport import PeerTransport
from runtime.daemon._routes import Api


def _metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[1])


def test_metrics_count_steps_waiting_in_a_session_mailbox(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    daemon = start_daemon()
    gate = tmp_path / "gate"
    started = tmp_path / "started"
    started.mkdir()
    with daemon.client() as client:
        session_id = create(client, "gated", gate=str(gate), started_dir=str(started))
        path = f"/v1/sessions/{session_id}/step"
        answers: list[int] = []

        def step(text: str) -> None:
            answers.append(
                httpx.post(daemon.url + path, json={"input": text}, timeout=60).status_code
            )

        threads = [threading.Thread(target=step, args=(f"s{i}",)) for i in range(2)]
        for thread in threads:
            thread.start()
        wait_for(lambda: (started / session_id).exists(), what="the gated step to start")

        def both_counted() -> bool:
            text = client.get("/metrics").text
            return _metric(text, "actorflow_mailbox_depth") == 2

        wait_for(both_counted, what="both steps in the mailbox depth")
        text = client.get("/metrics").text
        assert _metric(text, "actorflow_mailbox_depth_max") == 2
        gate.touch()
        for thread in threads:
            thread.join(30)
        assert answers == [200, 200]
        text = client.get("/metrics").text
        assert _metric(text, "actorflow_mailbox_depth") == 0


def test_metrics_scrape_does_not_list_the_live_sessions_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = asyncio.run(_scrape_without_live_sessions(tmp_path, monkeypatch))
    assert response.status_code == 200, response.text
    assert _metric(response.text, "actorflow_live_actors") == 1
    assert _metric(response.text, "actorflow_mailbox_depth") == 0


async def _scrape_without_live_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> httpx.Response:
    async with await AsyncRuntime.open(data_dir=tmp_path, graphs=GRAPHS) as runtime:
        session_id = await runtime.create_session("echo", owner="me")
        await runtime.step(session_id, "x", owner="me")

        async def forbidden() -> Any:
            raise AssertionError("/metrics walked the live sessions on the event loop")

        monkeypatch.setattr(runtime, "live_sessions", forbidden)
        api = Api(runtime, list(GRAPHS), "echo", max_inflight=8, metrics=DaemonMetrics())
        app = build_app(api, Authenticator(None), max_body=1024)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # the gateway is plain ASGI
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/metrics")
        await app.aclose()
    return response


def test_closing_the_gateway_closes_the_forwarders_connections() -> None:
    transport, cluster = asyncio.run(_close_gateway_with_forwarder())
    with pytest.raises(httpx.ConnectError, match="closed"):
        asyncio.run(transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:9/")))
    assert cluster.closed


class _IdleCluster:
    """A stand-in for the runtime's ``Cluster``: only ``aclose`` is used before a request."""

    closed = False

    async def aclose(self) -> None:
        self.closed = True


async def _close_gateway_with_forwarder() -> tuple[PeerTransport, _IdleCluster]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("no request is served here")

    transport = PeerTransport(connect_timeout=1.0)
    cluster = _IdleCluster()
    forwarder = Forwarder(app, cluster, max_body=1024, transport=transport)  # type: ignore[arg-type]
    gateway = Gateway(forwarder, Authenticator(None), DaemonMetrics(), on_close=forwarder.aclose)
    await gateway.aclose()
    return transport, cluster
