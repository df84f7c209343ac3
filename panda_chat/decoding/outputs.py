"""What one prompt's generation returns."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["eos", "stop", "length"]


@dataclass
class GenerationOutput:
    """The generated part of one row (the prompt excluded).

    ``token_ids`` are every token the decoder chose, including a final EOS or the tokens that completed a stop
    string; ``text`` is their decoded text without special tokens, cut before the stop string when one matched.
    ``rewards[i]`` is the combined reward of token i, sum_j w_j * normalise_j(r_j), and ``lambdas[i]`` the lambda
    that weighted it, so ``log p + lambdas[i] * rewards[i]`` is the score the token won with. ``raw_rewards`` holds
    each source's uncalibrated reward of the chosen tokens (only sources with a non-zero weight were scored).
    """

    text: str
    token_ids: list[int]
    rewards: list[float]
    lambdas: list[float]
    finish_reason: FinishReason
    prompt_tokens: int
    raw_rewards: dict[str, list[float]] = field(default_factory=dict)
    elapsed_s: float = 0.0  # wall time of the whole generate call this row belonged to

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "rewards": self.rewards,
            "lambdas": self.lambdas,
            "raw_rewards": self.raw_rewards,
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
            },
            "elapsed_s": self.elapsed_s,
        }


class TextStream(Iterator[str]):
    """One prompt's answer as it is decoded: iterate it for the text pieces, then read ``output``.

    ``PandaDecoder.stream`` returns one. Iterating yields each piece of text as it becomes final (never text that may
    still turn out to be part of a stop string); once the pieces are exhausted, ``output`` is the whole
    ``GenerationOutput`` (finish reason, rewards, lambdas, usage), so a streaming caller loses nothing that
    ``generate`` would have returned. Reading ``output`` before the end decodes the rest first.
    """

    def __init__(self, pieces: Generator[str, None, GenerationOutput]):
        self._pieces = pieces
        self._output: GenerationOutput | None = None

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        if self._output is not None:
            raise StopIteration
        try:
            return next(self._pieces)
        except StopIteration as finished:
            self._output = finished.value
            raise

    @property
    def done(self) -> bool:
        """Whether every piece has been yielded (and ``output`` is ready without decoding more)."""
        return self._output is not None

    @property
    def output(self) -> GenerationOutput:
        """The full output; decodes (and drops) any pieces not iterated yet."""
        for _ in self:
            pass
        assert self._output is not None
        return self._output

    def close(self) -> None:
        """Stop decoding early (frees the call's caches); ``output`` is then unavailable."""
        self._pieces.close()
