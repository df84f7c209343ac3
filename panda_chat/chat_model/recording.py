"""Which turns of a chat call are new to the user's stored conversation, so recording never stores a turn twice.

LangChain callers pass the whole history on every call (``[h1, a1, h2]``, then ``[h1, a1, h2, a2, h3]``), or only
the newest message, or retry the same call. Recording stores what the store does not have yet:

- the newest stored turn is looked for in the incoming history (from the end); everything after it is new;
- when it is not there, the call may be a retry of the last stored question whose answer the caller never passed
  back (incoming ends with the stored question): nothing is new, only the fresh answer is stored;
- otherwise the histories cannot be aligned (the caller keeps its own history, or this is the first call): the
  whole incoming history is new when nothing is stored yet, else just the newest human turn.

Only user and assistant turns are recorded (system prompts and tool traffic say nothing about the user).
"""

from __future__ import annotations

from collections.abc import Sequence

RecordedTurn = tuple[str, str]  # (role, text) as stored, role "user" or "assistant" (not ``messages.Turn``)

RECORDED_ROLES = ("user", "assistant")


def new_turns(stored: Sequence[RecordedTurn], incoming: Sequence[RecordedTurn]) -> list[RecordedTurn]:
    """The incoming turns to store (see the module docstring); both sequences hold user/assistant turns only."""
    stored, incoming = list(stored), list(incoming)
    if not incoming:
        return []
    if not stored:
        return incoming
    last = stored[-1]
    for index in range(len(incoming) - 1, -1, -1):
        if incoming[index] == last and _agrees_before(stored, incoming, index):
            return incoming[index + 1 :]
    if len(stored) >= 2 and stored[-1][0] == "assistant" and incoming[-1] == stored[-2]:
        return []
    return incoming[-1:] if incoming[-1][0] == "user" else []


def continues(stored: Sequence[RecordedTurn], incoming: Sequence[RecordedTurn]) -> bool:
    """Whether ``incoming`` replays ``stored`` and goes on from it (its newest turn found, the turns before agreeing):
    a caller passing the whole history again is continuing that conversation."""
    stored, incoming = list(stored), list(incoming)
    if not stored or len(incoming) < 2:
        return False
    return any(
        incoming[index] == stored[-1] and _agrees_before(stored, incoming, index)
        for index in range(len(incoming) - 2, -1, -1)
    )


def _agrees_before(stored: list[RecordedTurn], incoming: list[RecordedTurn], index: int) -> bool:
    """The turns before ``incoming[index]`` match the stored turns before the newest one, as far as both go."""
    depth = min(index, len(stored) - 1, 3)
    return all(incoming[index - d] == stored[-1 - d] for d in range(1, depth + 1))
