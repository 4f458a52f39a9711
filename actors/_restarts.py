"""RestartIntensity: how many times a session may crash in a window (pure, no threads).

OTP's supervisor rule: a child that crashes more than ``max_restarts`` times
within ``window`` seconds is not restarted again. Owned by the supervisor and
used only in its turn; the clock is passed in, so tests need no sleeps.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RestartIntensity"]


class RestartIntensity:
    """Crash times per session within a sliding window.

    Args:
        max_restarts: restarts allowed within ``window`` (0: never restart).
        window: the window, in seconds.
    """

    def __init__(self, max_restarts: int, window: float) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self._history: dict[str, deque[float]] = {}

    def allow(self, session_id: str, now: float) -> tuple[bool, int]:
        """Count a crash of ``session_id`` at ``now``: whether to restart, and restarts in window.

        A refused restart forgets the session's history (it is marked ``error``).
        """
        history = self._history.setdefault(session_id, deque())
        while history and history[0] < now - self.window:
            history.popleft()
        if len(history) >= self.max_restarts:
            del self._history[session_id]
            return False, len(history)
        history.append(now)
        return True, len(history)

    def __len__(self) -> int:
        """How many sessions have crash history."""
        return len(self._history)
