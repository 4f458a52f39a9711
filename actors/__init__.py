"""actorflow actors: the shared-dispatcher actor type, session and supervisor actors.

``Dispatcher``/``DispatcherActor`` run actors on a fixed pool of threads;
``SessionActor`` owns one live session; ``SupervisorActor`` activates,
passivates, caps, restarts and expires them, maintaining the ``LiveIndex`` that
callers read directly on the hot path. Messages are in ``actors.messages``.
"""

from actors._live_index import LiveEntry, LiveIndex
from actors._services import ActorServices, Counters, Settings
from actors._session_actor import SessionActor
from actors._supervisor import SupervisorActor
from actors._timers import Timer, Timers
from actors.dispatcher import Dispatcher, DispatcherActor, mailbox_depth

__all__ = [
    "ActorServices",
    "Counters",
    "Dispatcher",
    "DispatcherActor",
    "LiveEntry",
    "LiveIndex",
    "SessionActor",
    "Settings",
    "SupervisorActor",
    "Timer",
    "Timers",
    "mailbox_depth",
]
