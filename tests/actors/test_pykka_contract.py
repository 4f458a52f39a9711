"""The private pykka names the dispatcher relies on (pykka is pinned ``>=4.1,<5``).

`DispatcherActor` reuses pykka's own message handling instead of copying it,
which needs a few names pykka does not document. If a pykka release renames or
changes one of them, this test fails with the name, before anything subtler
breaks.
"""

from __future__ import annotations

import inspect
import threading
from importlib.metadata import version

import pykka
import pytest
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

# Name on pykka.Actor -> the parameters (after self) the dispatcher calls it with.
PRIVATE_ACTOR_METHODS = {
    "_handle_receive": ["message"],
    "_handle_failure": ["exception_type", "exception_value", "traceback"],
    "_stop": [],
    "_actor_loop_setup": [],
    "_create_actor_inbox": [],
    "_create_future": [],
    "_start_actor_loop": [],
}


@pytest.mark.parametrize("name", sorted(PRIVATE_ACTOR_METHODS))
def test_pykka_actor_has_the_private_methods_the_dispatcher_calls(name: str) -> None:
    method = getattr(pykka.Actor, name, None)
    assert method is not None, f"pykka.Actor.{name} is gone: update actors/_dispatch_actor.py"
    params = [p for p in inspect.signature(method).parameters if p not in ("self", "cls")]
    assert params == PRIVATE_ACTOR_METHODS[name], (name, params)


def test_pykka_envelope_carries_a_message_and_a_reply_future() -> None:
    future = pykka.ThreadingFuture[str]()
    envelope = Envelope("hello", reply_to=future)
    assert envelope.message == "hello"
    assert envelope.reply_to is future


def test_pykka_ref_keeps_the_actor_in_the_private_field_it_is_built_from() -> None:
    class Probe(pykka.ThreadingActor):
        pass

    actor = Probe.__new__(Probe)
    actor.actor_urn = "urn:probe"
    actor.actor_inbox = Probe._create_actor_inbox()
    actor.actor_stopped = threading.Event()
    ref = pykka.ActorRef(actor)
    actor._actor_ref = ref
    assert actor.actor_ref is ref  # pykka 4 reads the ref through ``_actor_ref``


def test_pykka_stop_message_is_what_actor_stop_sends() -> None:
    sent: list[object] = []

    class Recorder:
        def tell(self, message: object) -> None:
            sent.append(message)

    class Probe(pykka.ThreadingActor):
        pass

    actor = Probe.__new__(Probe)
    actor._actor_ref = Recorder()  # type: ignore[assignment]
    actor.stop()
    assert len(sent) == 1
    assert isinstance(sent[0], _ActorStop)
    assert version("pykka").startswith("4."), version("pykka")
