"""Fitting a conversation into the model's context: the oldest history turns are dropped, the system turns kept.

LangChain callers send the whole history on every call, so a long chat (or one huge message) eventually exceeds
the positions the model reads. Rather than fail, ChatPanda drops the oldest turns until the prompt plus the answer's
``max_tokens`` fit, keeps every system turn, keeps the newest turn, and says how many it dropped in
``response_metadata["context"]``. When even the newest turn does not fit, the prompt is returned whole and the
decoder refuses it with a clear error (``panda_chat.decoding.limits``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from panda_chat.chat_model.messages import Turn


def fit_turns(
    turns: Sequence[Turn],
    render: Callable[[list[Turn]], str],
    count_tokens: Callable[[str], int],
    budget: int | None,
) -> tuple[str, int]:
    """``(prompt, dropped)``: the prompt of the longest suffix of the non-system turns that fits ``budget`` tokens
    (starting at a user turn, so roles still alternate), with every system turn before it; ``dropped`` counts the
    non-system turns left out. ``budget`` None means no known limit."""
    prompt = render(list(turns))
    if budget is None or count_tokens(prompt) <= budget:
        return prompt, 0
    system = [turn for turn in turns if turn.role == "system"]
    others = [turn for turn in turns if turn.role != "system"]
    starts = [index for index, turn in enumerate(others) if index > 0 and turn.role == "user"]
    if not starts or starts[-1] != len(others) - 1:
        starts.append(len(others) - 1)  # the newest turn alone is the last resort

    def candidate(start: int) -> str:
        return render(system + others[start:])

    low, high, best = 0, len(starts) - 1, None  # fewer turns are never longer: binary search for the first fit
    while low <= high:
        middle = (low + high) // 2
        text = candidate(starts[middle])
        if count_tokens(text) <= budget:
            best, high = (starts[middle], text), middle - 1
        else:
            low = middle + 1
    if best is None:
        return prompt, 0  # even the newest turn is too long: the decoder's length check says so
    return best[1], best[0]
