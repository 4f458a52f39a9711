"""The demo graphs the daemon and the shell serve by default: ``echo``, ``support``
and ``storyteller``.

``echo`` is one task that counts and echoes every input and waits for the next.

``support`` is a small help desk::

    greet -> classify --"refund" in input--> refund --"done"/"bye"--> done
                      \\--otherwise--------> faq    --"done"/"bye"--> done

``greet`` says hello. When the first step already carries a request ("I want a
refund"), greet answers ``ContinueAndExecute``: ``classify`` runs in the same
step on the same input, so the request is not lost. Without input it answers
``Continue``: the session pauses at ``classify``, which runs on the next step.
``classify`` sends a request to ``refund`` or ``faq`` in the same step; both wait
for more input, go back to ``classify`` on "back" (which then waits for a new
request), and finish in ``done`` on "done" or "bye".

``storyteller`` tells a short story about its input, word by word: each word is
streamed with ``ctx.emit_token`` a short delay apart (``delay`` in the context,
seconds, default 0.03), with a ``chapter`` event per sentence, and the whole
story is the step's response. Watch it with ``Runtime.stream`` or SSE.
"""

from __future__ import annotations

import asyncio

from flow._context import Context
from flow._graph import Graph, GraphBuilder
from flow._task import FunctionTask, NextAction, Task, TaskResult

__all__ = ["GRAPHS", "echo", "storyteller", "support"]


class Echo(Task):
    """Counts inputs in context key ``count`` and replies ``echo: <input>``."""

    blocking = False

    def __init__(self) -> None:
        super().__init__("echo")

    def run(self, ctx: Context) -> TaskResult:
        """Count, echo, remember the reply in the chat history, and wait for input."""
        ctx.set("count", int(ctx.get("count", 0)) + 1)
        text = "" if ctx.input is None else str(ctx.input)
        response = f"echo: {text}"
        ctx.chat_history.add_assistant(response)
        return TaskResult(response, NextAction.WaitForInput)


def _said(ctx: Context) -> str:
    return "" if ctx.input is None else str(ctx.input).strip().lower()


def _reply(ctx: Context, response: str, action: NextAction) -> TaskResult:
    ctx.chat_history.add_assistant(response)
    return TaskResult(response, action)


def _greet(ctx: Context) -> TaskResult:
    # With a request already in hand, classify must see it now: run it in this step.
    action = NextAction.ContinueAndExecute if _said(ctx) else NextAction.Continue
    return _reply(ctx, "Hello! I can help with refunds and questions.", action)


def _classify(ctx: Context) -> TaskResult:
    said = _said(ctx)
    if said == "back":
        return TaskResult(None, NextAction.WaitForInput)
    if not said:
        return _reply(ctx, "What can I help you with?", NextAction.WaitForInput)
    ctx.set("request", str(ctx.input))
    return TaskResult(None, NextAction.ContinueAndExecute)


def _wants_refund(ctx: Context) -> bool:
    return "refund" in _said(ctx)


def _follow_up(ctx: Context, answer: str) -> TaskResult:
    said = _said(ctx)
    if said == "back":
        return _reply(ctx, "Sure: what else can I help you with?", NextAction.GoBack)
    if said in ("done", "bye"):
        return TaskResult(None, NextAction.ContinueAndExecute)
    return _reply(
        ctx, f"{answer} Say 'back' for something else, or 'done'.", NextAction.WaitForInput
    )


def _refund(ctx: Context) -> TaskResult:
    return _follow_up(ctx, f"I have opened a refund for: {ctx.get('request')}.")


def _faq(ctx: Context) -> TaskResult:
    return _follow_up(ctx, f"Here is what I know about: {ctx.get('request')}.")


def _done(ctx: Context) -> TaskResult:
    response = "Goodbye!"
    ctx.chat_history.add_assistant(response)
    return TaskResult(response, NextAction.End, "conversation finished")


def _support() -> Graph:
    return (
        GraphBuilder("support")
        .add_task(FunctionTask("greet", _greet, blocking=False))
        .add_task(FunctionTask("classify", _classify, blocking=False))
        .add_task(FunctionTask("refund", _refund, blocking=False))
        .add_task(FunctionTask("faq", _faq, blocking=False))
        .add_task(FunctionTask("done", _done, blocking=False))
        .add_edge("greet", "classify")
        .add_conditional_edge("classify", _wants_refund, "refund", "faq")
        .add_edge("refund", "done")
        .add_edge("faq", "done")
        .build()
    )


_STORY = (
    "Once upon a time, {hero} lived at the edge of a quiet forest.",
    "Every morning {hero} walked to the river and listened to the water.",
    "One day the river answered, and {hero} never walked alone again.",
)


async def _tell(ctx: Context) -> TaskResult:
    hero = str(ctx.input).strip() if ctx.input else "a curious fox"
    delay = min(max(float(ctx.get("delay", 0.03)), 0.0), 1.0)
    words: list[str] = []
    for number, sentence in enumerate(_STORY, 1):
        ctx.emit("chapter", {"number": number})
        for word in sentence.format(hero=hero).split():
            ctx.emit_token(word if not words else f" {word}")
            words.append(word)
            await asyncio.sleep(delay)
    story = " ".join(words)
    ctx.chat_history.add_assistant(story)
    return TaskResult(story, NextAction.WaitForInput)


#: One task ("echo"): counts inputs and echoes them, waiting for input each time.
echo: Graph = GraphBuilder("echo").add_task(Echo()).build()
#: greet -> classify -> refund | faq -> done, with GoBack and End.
support: Graph = _support()
#: One async task ("tell") streaming a story about its input, word by word.
storyteller: Graph = GraphBuilder("storyteller").add_task(FunctionTask("tell", _tell)).build()
#: Every demo graph.
GRAPHS: list[Graph] = [echo, support, storyteller]
