"""The dashboard end to end: headless Chromium against a real daemon subprocess."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import BrowserContext, Page, expect
from ui_harness import ADMIN_TOKEN, OTHER_TOKEN, USER_TOKEN, UiDaemon, log_in, wait_for


def _create(client: httpx.Client, graph: str, **context: object) -> str:
    body: dict[str, object] = {"graph": graph}
    if context:
        body["context"] = context
    response = client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


def _step(client: httpx.Client, session_id: str, text: str) -> None:
    response = client.post(f"/v1/sessions/{session_id}/step", json={"input": text})
    assert response.status_code == 200, response.text


def test_login_sets_a_strict_http_only_cookie_and_a_bad_token_is_refused(
    ui_daemon: UiDaemon, context: BrowserContext
) -> None:
    page = context.new_page()
    page.goto(ui_daemon.url + "/ui/actors")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui%2Factors$"))
    ui_daemon.shot(page, "login")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("not in the daemon's tokens file")
    assert not context.cookies()

    page.fill("#token", USER_TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/ui/actors$"))
    expect(page.locator(".who")).to_have_text("bob")
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert USER_TOKEN not in cookie["value"]

    page.click("header button[type=submit]")  # log out
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.goto(ui_daemon.url + "/ui")
    expect(page).to_have_url(re.compile(r"/ui/login"))


def test_overview_figures_move_while_a_load_runs(
    ui_daemon: UiDaemon, context: BrowserContext
) -> None:
    page = log_in(context, ui_daemon, ADMIN_TOKEN)
    steps_total = page.locator("#steps-total")
    before = int(steps_total.inner_text())
    stop = threading.Event()
    done: list[int] = []

    def load() -> None:
        with ui_daemon.api(USER_TOKEN) as client:
            session_id = _create(client, "echo")
            while not stop.is_set():
                _step(client, session_id, "tick")
                done.append(1)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        # the figures arrive over server-sent events: no reload
        expect(steps_total).not_to_have_text(str(before), timeout=15_000)
        expect(page.locator("#steps-per-s")).not_to_have_text("0.0", timeout=15_000)
        expect(page.locator("#p50")).to_have_text(re.compile(r"ms$"))
    finally:
        stop.set()
        worker.join(timeout=30)
    assert int(steps_total.inner_text()) > before
    assert done
    ui_daemon.shot(page, "overview")


@contextmanager
def _held_steps(ui_daemon: UiDaemon, gate: Path, plan: dict[str, int]) -> Iterator[None]:
    """Steps that block on ``gate``: ``plan`` maps a session to how many to send it."""
    threads = []
    for session_id, count in plan.items():
        for _ in range(count):

            def send(sid: str = session_id) -> None:
                with ui_daemon.api(USER_TOKEN) as client:
                    client.post(f"/v1/sessions/{sid}/step", json={"input": "held"})

            threads.append(threading.Thread(target=send))
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        gate.touch()
        for thread in threads:
            thread.join(timeout=30)


def _mailbox_column(page: Page) -> list[int]:
    return [int(text) for text in page.locator("#actors td.mailbox").all_inner_texts()]


def test_actor_table_sorts_by_mailbox_depth(
    ui_daemon: UiDaemon, context: BrowserContext, tmp_path: Path
) -> None:
    gate, open_gate = tmp_path / "gate", tmp_path / "open"
    open_gate.touch()
    with ui_daemon.api(USER_TOKEN) as client:
        deep, shallow = (_create(client, "gated", gate=str(gate)) for _ in range(2))
        empty = _create(client, "gated", gate=str(open_gate))
        _step(client, empty, "live, with nothing queued")
    page = log_in(context, ui_daemon, USER_TOKEN, "/ui/actors?graph=gated&sort=request_count")
    with _held_steps(ui_daemon, gate, {deep: 3, shallow: 1}):

        def queued() -> bool:
            page.reload()
            return sorted(_mailbox_column(page)) == [0, 1, 3]

        wait_for(queued, 20, "three queued steps on one session and one on another")
        page.click("#sort-mailbox_depth")
        expect(page.locator("#sort-mailbox_depth")).to_have_attribute("aria-sort", "descending")
        assert _mailbox_column(page) == [3, 1, 0]
        rows = page.locator("#actors tbody tr a.sid")
        assert rows.nth(0).get_attribute("title") == deep
        assert "1 request(s) pending" in page.locator("#actors tbody tr").nth(1).inner_text()
        ui_daemon.shot(page, "actors")
        page.click("#sort-mailbox_depth")
        expect(page.locator("#sort-mailbox_depth")).to_have_attribute("aria-sort", "ascending")
        assert _mailbox_column(page) == [0, 1, 3]
        assert rows.nth(0).get_attribute("title") == empty


def test_session_page_travels_in_time_and_only_an_admin_rolls_back(
    ui_daemon: UiDaemon, browser_contexts: tuple[BrowserContext, BrowserContext]
) -> None:
    user_context, admin_context = browser_contexts
    with ui_daemon.api(USER_TOKEN) as client:
        session_id = _create(client, "support")
        for n in (1, 2, 3):
            _step(client, session_id, f"question {n}")
    path = f"/ui/sessions/{session_id}"

    page = log_in(user_context, ui_daemon, USER_TOKEN, path)
    expect(page.locator("#revision")).to_have_text("3")
    expect(page.locator("#context")).to_contain_text("question 3")
    expect(page.locator("#chat")).to_contain_text("question 2")
    page.click("a.rev[data-revision='1']")
    expect(page.locator("#past")).to_contain_text("Revision 1")
    expect(page.locator("#context")).to_contain_text("question 1")
    expect(page.locator("#context")).not_to_contain_text("question 3")
    assert page.locator("#rollback").count() == 0
    assert page.locator("#admin-actions").count() == 0
    csrf = page.locator("input[name=csrf]").first.input_value()
    refused = page.request.post(
        f"{ui_daemon.url}{path}/rollback", form={"csrf": csrf, "revision": "1"}
    )
    assert refused.status == 403
    assert "only admins" in refused.text()

    admin = log_in(admin_context, ui_daemon, ADMIN_TOKEN, f"{path}?revision=1")
    ui_daemon.shot(admin, "session")
    admin.click("#rollback")
    expect(admin.locator("h1")).to_have_text("Roll this session back to revision 1?")
    ui_daemon.shot(admin, "confirm")
    admin.click("#confirm")
    expect(admin.locator(".notice")).to_have_text("Rolled back to revision 1: now at revision 4.")
    expect(admin.locator("#revision")).to_have_text("4")
    expect(admin.locator("#context")).to_contain_text("question 1")
    with ui_daemon.api(USER_TOKEN) as client:
        detail = client.get(f"/v1/sessions/{session_id}").json()
    assert detail["revision"] == 4
    assert detail["context"]["user_input"] == "question 1"


def test_a_user_sees_only_their_own_sessions(ui_daemon: UiDaemon, context: BrowserContext) -> None:
    with ui_daemon.api(OTHER_TOKEN) as other:
        theirs = _create(other, "echo")
        _step(other, theirs, "live")
    with ui_daemon.api(USER_TOKEN) as client:
        mine = _create(client, "echo")
        _step(client, mine, "live")
    page = log_in(context, ui_daemon, USER_TOKEN, "/ui/actors?graph=echo")
    owners = set(page.locator("#actors tbody tr td:nth-child(3)").all_inner_texts())
    assert owners == {"bob"}
    assert page.locator(f"a.sid[title='{mine}']").count() == 1
    assert page.locator(f"a.sid[title='{theirs}']").count() == 0
    response = page.goto(f"{ui_daemon.url}/ui/sessions/{theirs}")
    assert response is not None
    assert response.status == 404
    ui_daemon.shot(page, "not-found")


def test_many_live_sessions_are_paged(ui_daemon: UiDaemon, context: BrowserContext) -> None:
    with ui_daemon.api(OTHER_TOKEN) as client:
        made = {_create(client, "echo") for _ in range(60)}
        for session_id in made:
            _step(client, session_id, "live")
    page = log_in(context, ui_daemon, OTHER_TOKEN, "/ui/actors?graph=echo&sort=session_id&limit=25")
    total = int(page.locator("#total").inner_text())
    assert 60 <= total < 90
    seen: list[str] = []
    while True:
        ids = [str(a.get_attribute("title")) for a in page.locator("a.sid").all()]
        assert 0 < len(ids) <= 25
        seen.extend(ids)
        if page.locator("#next").count() == 0:
            break
        page.click("#next")
    assert len(seen) == total == len(set(seen))
    assert seen == sorted(seen, reverse=True)
    assert made <= set(seen)
