"""What the gateway refuses before routing: non-canonical paths, foreign hosts and
origins, bodies that are not JSON or nested too deep, steps over a user's rate.

Each check is a pure function over the request's scope (or its body) returning a
``Problem`` or None, so the gateway applies them in one place, in order, and the
router only ever sees canonical paths. docs/security.md lists them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from runtime.daemon._http import has_body, header
from runtime.daemon._problems import (
    FORBIDDEN_HOST,
    FORBIDDEN_ORIGIN,
    MALFORMED_JSON,
    NON_CANONICAL_PATH,
    RATE_LIMITED,
    UNSUPPORTED_MEDIA_TYPE,
    Problem,
)

__all__ = [
    "MAX_JSON_DEPTH",
    "GatewayPolicy",
    "StepRateLimiter",
    "canonical_path_problem",
    "content_type_problem",
    "host_problem",
    "json_depth_problem",
    "origin_problem",
]

MAX_JSON_DEPTH = 64
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_STEP_PATH = re.compile(r"/v1/sessions/[^/]+/step|/v1/execute")
_JSON_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.ASCII)
_SEGMENTS = re.compile(r"//|/\.\.?(?:/|\Z)")


@dataclass(frozen=True, slots=True)
class GatewayPolicy:
    """The gateway's limits (the defaults check nothing but paths, bodies and depth).

    Attributes:
        allowed_hosts: the names a ``Host`` header may carry (None: any).
        cors_origins: the browser origins allowed to call the API ("*": any).
        step_rate: steps per second per user (a token bucket as deep), 0: unlimited.
        client_from_front: a worker of ``--workers N``: the front's
            ``X-Actorflow-Client`` header names the client's address (only the front
            reaches a worker's 0600 socket, and it drops a client's own claim).
    """

    allowed_hosts: frozenset[str] | None = None
    cors_origins: frozenset[str] = field(default_factory=frozenset)
    step_rate: float = 0.0
    client_from_front: bool = False


def canonical_path_problem(scope: dict[str, Any]) -> Problem | None:
    """400 for a path the router would read differently from the gateway.

    ``//v1``, ``/./v1``, ``/%2Fv1`` and an encoded slash anywhere are refused: the
    gateway authenticates ``/v1`` routes on the very string the router matches.
    """
    path: str = scope["path"]
    raw: bytes = scope.get("raw_path") or b""
    if path[:1] == "/" and "//" not in path and "/." not in path and b"%2" not in raw:
        return None  # the common case, without a regular expression
    if path[:1] == "/" and _SEGMENTS.search(path) is None and b"%2f" not in raw.lower():
        return None
    return Problem(NON_CANONICAL_PATH, f"the path {path!r} is not canonical; send it normalized")


def _host_name(value: str) -> str:
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_problem(scope: dict[str, Any], policy: GatewayPolicy) -> Problem | None:
    """403 for a ``Host`` header naming neither the bound address nor an allowed name
    (what a DNS-rebinding page sends)."""
    if policy.allowed_hosts is None:
        return None
    value = header(scope["headers"], b"host")
    if value is None:
        return None  # HTTP/1.0 without a Host: not a browser
    name = _host_name(value.decode("latin-1").strip().lower())
    if name in policy.allowed_hosts:
        return None
    return Problem(FORBIDDEN_HOST, f"the host {name!r} is not served here (see --allowed-hosts)")


def origin_allowed(origin: str, scope: dict[str, Any], policy: GatewayPolicy) -> bool:
    """Whether a browser page from ``origin`` may call the API (same origin, or listed)."""
    if "*" in policy.cors_origins or origin in policy.cors_origins:
        return True
    host = header(scope["headers"], b"host")
    return host is not None and origin.split("://", 1)[-1] == host.decode("latin-1")


def origin_problem(scope: dict[str, Any], policy: GatewayPolicy) -> Problem | None:
    """403 for a cross-origin browser request from an origin ``--cors-origin`` does not list."""
    origin = header(scope["headers"], b"origin")
    if origin is None:
        site = header(scope["headers"], b"sec-fetch-site")
        if site == b"cross-site" and scope["method"] in _BODY_METHODS:
            return Problem(FORBIDDEN_ORIGIN, "cross-site browser requests are refused")
        return None
    text = origin.decode("latin-1")
    if origin_allowed(text, scope, policy):
        return None
    return Problem(FORBIDDEN_ORIGIN, f"requests from origin {text!r} are refused (--cors-origin)")


def content_type_problem(scope: dict[str, Any]) -> Problem | None:
    """415 for a body that does not say it is JSON (a browser form or ``text/plain``)."""
    if scope["method"] not in _BODY_METHODS or not has_body(scope):
        return None
    value = header(scope["headers"], b"content-type")
    if value == b"application/json":
        return None
    media = value.split(b";", 1)[0].strip().decode("latin-1").lower() if value else ""
    if _JSON_TYPE.fullmatch(media):
        return None
    shown = media or "none"
    detail = f"the body must be sent as 'Content-Type: application/json' (got {shown})"
    return Problem(UNSUPPORTED_MEDIA_TYPE, detail)


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def json_depth_problem(body: bytes, limit: int = MAX_JSON_DEPTH) -> Problem | None:
    """400 for a JSON body nested deeper than ``limit`` (or not JSON at all when it
    has to be decoded to tell). A body with fewer brackets than ``limit`` is not decoded."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return None
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return malformed_json(exc)
    if _depth(value) <= limit:
        return None
    return Problem(MALFORMED_JSON, f"the JSON body is nested deeper than {limit} levels")


def malformed_json(exc: BaseException) -> Problem:
    """400 malformed-json for a body msgspec could not decode."""
    if isinstance(exc, RecursionError):
        detail = f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
        return Problem(MALFORMED_JSON, detail)
    if isinstance(exc, UnicodeDecodeError) or "UTF-8" in str(exc):  # msgspec >= 0.23: DecodeError
        return Problem(MALFORMED_JSON, "the JSON body is not valid UTF-8")
    return Problem(MALFORMED_JSON, f"the body is not valid JSON: {exc}")


def is_step(scope: dict[str, Any]) -> bool:
    """Whether the request runs a step (what the per-user rate counts)."""
    return scope["method"] == "POST" and _STEP_PATH.fullmatch(scope["path"]) is not None


class StepRateLimiter:
    """A token bucket per user: ``rate`` steps a second, bursts up to ``rate``.

    Used only on the event loop thread (the gateway), so it needs no lock.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, user: str) -> Problem | None:
        """Take one step from ``user``'s bucket: None, or 429 when it is empty."""
        if self.rate <= 0:
            return None
        now = time.monotonic()
        tokens, last = self._buckets.get(user, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[user] = (tokens, now)
            retry = max(1, round((1 - tokens) / self.rate + 0.5))
            return Problem(
                RATE_LIMITED,
                f"user {user!r} is over {self.rate:g} steps per second",
                headers={"retry-after": str(retry)},
            )
        self._buckets[user] = (tokens - 1, now)
        return None
