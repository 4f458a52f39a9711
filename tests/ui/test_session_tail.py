"""The session page's live tail and pending timers: Chromium and plain HTTP against a daemon."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import BrowserContext, expect
from ui_harness import OTHER_TOKEN, USER_TOKEN, UiDaemon, log_in

from runtime.daemon.ui._render import when


def _create(client: httpx.Client, graph: str, **context: object) -> str:
    response = client.post("/v1/sessions", json={"graph": graph, "context": context})
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


@contextmanager
def _ui_client(daemon: UiDaemon, token: str) -> Iterator[httpx.Client]:
    """An HTTP client holding a dashboard login cookie (no browser)."""
    with httpx.Client(base_url=daemon.url, timeout=30.0) as client:
        answer = client.post("/ui/login", data={"token": token})
        assert answer.status_code == 303, answer.text
        yield client


def _streamed_step(daemon: UiDaemon, session_id: str, seen: list[str]) -> threading.Thread:
    """A thread stepping ``session_id`` over HTTP with ``Accept: text/event-stream``;
    ``seen`` gets each SSE event name as it arrives, then ``answer-ended``."""

    def run() -> None:
        with (
            daemon.api(USER_TOKEN) as client,
            client.stream(
                "POST",
                f"/v1/sessions/{session_id}/step",
                json={"input": "tell"},
                headers={"accept": "text/event-stream"},
            ) as answer,
        ):
            for line in answer.iter_lines():
                if line.startswith("event: "):
                    seen.append(line.removeprefix("event: "))
        seen.append("answer-ended")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_session_page_shows_streamed_tokens_before_the_step_answers(
    ui_daemon: UiDaemon, context: BrowserContext, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with ui_daemon.api(USER_TOKEN) as client:
        session_id = _create(client, "teller", gate=str(gate))
    page = log_in(context, ui_daemon, USER_TOKEN, f"/ui/sessions/{session_id}")
    tail = page.locator("#tail")
    expect(tail.locator(".watching")).to_be_visible()  # subscribed: no event is missed
    seen: list[str] = []
    stepper = _streamed_step(ui_daemon, session_id, seen)
    try:
        # the task emitted "first" and now waits on the gate: the page has the token
        # while the step's own answer is still open
        expect(tail.locator(".token")).to_have_text(["first"])
        assert "committed" not in seen
        assert "answer-ended" not in seen
        expect(tail.locator(".ev.committed")).to_have_count(0)
    finally:
        gate.touch()
        stepper.join(timeout=30)
    expect(tail.locator(".token")).to_have_text(["first", " second"])
    expect(tail.locator(".ev.committed")).to_have_text(re.compile(r"revision 1, waiting"))
    assert seen[-2:] == ["committed", "answer-ended"]
    # htmx marks a swapped-in element "htmx-added" until it settles (about 20 ms): not
    # one of the page's own classes, and still there when the check runs soon enough
    kinds = tail.locator(".ev, .token").evaluate_all(
        "els => els.map(e => [...e.classList].filter(c => !c.startsWith('htmx-')).join(' '))"
    )
    assert kinds == [
        "ev watching",
        "ev step",
        "ev task",
        "token",
        "token",
        "ev task",
        "ev committed",
    ]


def test_the_storyteller_streams_word_by_word_into_the_page(
    ui_daemon: UiDaemon, context: BrowserContext
) -> None:
    with ui_daemon.api(USER_TOKEN) as client:
        session_id = _create(client, "storyteller", delay=0.0)
    page = log_in(context, ui_daemon, USER_TOKEN, f"/ui/sessions/{session_id}")
    tail = page.locator("#tail")
    expect(tail.locator(".watching")).to_be_visible()
    seen: list[str] = []
    _streamed_step(ui_daemon, session_id, seen).join(timeout=30)
    expect(tail.locator(".ev.committed")).to_have_count(1)
    words = tail.locator(".token").all_inner_texts()
    assert len(words) > 20
    assert "".join(words).startswith("Once upon a time, tell lived")
    expect(tail.locator(".ev.custom").first).to_contain_text("chapter")
    ui_daemon.shot(page, "session-tail")


def test_a_stranger_gets_404_and_a_read_member_may_watch(ui_daemon: UiDaemon) -> None:
    with ui_daemon.api(USER_TOKEN) as client:
        session_id = _create(client, "echo")
        assert client.post(f"/v1/sessions/{session_id}/step", json={"input": "x"}).is_success
    with _ui_client(ui_daemon, OTHER_TOKEN) as stranger:
        assert stranger.get(f"/ui/sessions/{session_id}").status_code == 404
        refused = stranger.get(f"/ui/sessions/{session_id}/events")
        assert refused.status_code == 404
        assert refused.headers["content-type"].startswith("text/html")
        with ui_daemon.api(USER_TOKEN) as client:
            shared = client.post(
                f"/v1/sessions/{session_id}/members", json={"user": "carol", "access": "read"}
            )
            assert shared.is_success, shared.text
        with stranger.stream("GET", f"/ui/sessions/{session_id}/events") as events:
            assert events.status_code == 200
            assert events.headers["content-type"].startswith("text/event-stream")
            first = next(events.iter_lines())
        assert first == "event: tail"


def test_session_page_lists_pending_timers(ui_daemon: UiDaemon) -> None:
    with ui_daemon.api(USER_TOKEN) as client:
        session_id = _create(client, "reminder")
        before = time.time()
        scheduled = client.post(
            f"/v1/sessions/{session_id}/step",
            json={"input": {"name": "<nudge>", "after": 3600}},
        )
        assert scheduled.status_code == 200, scheduled.text
    with _ui_client(ui_daemon, USER_TOKEN) as browser:
        page = browser.get(f"/ui/sessions/{session_id}").text
    row = re.search(r'<tr class="timer">(.*?)</tr>', page)
    assert row is not None, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells[0] == "&lt;nudge&gt;"  # escaped
    assert cells[1] == "named"
    assert re.fullmatch(r"in (59\.\d|60\.0)m", cells[2])
    assert cells[3] in {when(before + 3600 + d) for d in range(0, 3)}
