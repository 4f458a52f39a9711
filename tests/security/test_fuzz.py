"""A bounded hypothesis fuzz of the request line, headers and body over a raw socket:
no input gets a 5xx, and none hangs the daemon."""

from __future__ import annotations

from attack import assert_healthy, raw_request, status_of
from daemon_harness import Daemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

METHODS = st.sampled_from([b"GET", b"POST", b"PATCH", b"DELETE", b"OPTIONS", b"PUT", b"G\x00T"])
PATHS = st.sampled_from(
    [
        b"/v1/sessions",
        b"/v1/sessions/x/step",
        b"/v1/execute",
        b"/v1/graphs",
        b"/healthz",
        b"//v1/graphs",
        b"/v1/sessions/%00/step",
        b"/v1/sessions/x/step%0A",
        b"/metrics",
    ]
) | st.binary(max_size=40).map(lambda b: b"/" + b.replace(b" ", b"").replace(b"\r", b""))
HEADER_NAMES = st.sampled_from(
    [b"content-type", b"host", b"origin", b"content-length", b"x-request-id", b"authorization",
     b"transfer-encoding", b"x-forwarded-for", b"expect"]
)  # fmt: skip
HEADER_VALUES = st.sampled_from(
    [b"application/json", b"text/plain", b"127.0.0.1", b"evil.example", b"chunked", b"0",
     b"-1", b"99999999999", b"100-continue", b"Bearer x"]
) | st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))  # fmt: skip
BODIES = st.binary(max_size=200) | st.sampled_from(
    [b'{"graph": "echo"}', b'{"input": "\xff"}', b"[" * 300, b'{"input": 1', b"{}"]
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    body = draw(BODIES)
    headers = draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5))
    head = [draw(METHODS) + b" " + draw(PATHS) + b" HTTP/1.1", b"Host: 127.0.0.1"]
    head += [name + b": " + value for name, value in headers]
    if draw(st.booleans()):
        head.append(b"Content-Length: " + str(len(body)).encode())
    head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_no_raw_request_gets_a_5xx_or_hangs(daemon: Daemon, request: bytes) -> None:
    response = raw_request(daemon, request, timeout=5.0)
    if response:  # the daemon may close a connection it cannot parse
        assert status_of(response) < 500, response[:300]


def test_the_daemon_is_healthy_after_the_fuzz(daemon: Daemon) -> None:
    assert_healthy(daemon)
