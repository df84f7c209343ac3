"""When each row stops (EOS, stop strings, length), and the text pieces it emits as tokens are chosen.

Stop strings are matched on decoded text, not on token ids, because a stop string like "\\nUser:" may be split over
several tokens in many ways. Text is built incrementally: each new token is decoded together with a few tokens before
it (the standard prefix/read-offset method), so pieces are exact even when a token is only part of a UTF-8 character
or a word. A streamed piece never contains text that might still turn out to be the start of a stop string: that
tail is held back until it is either confirmed (emitted) or becomes a stop (dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from transformers import PreTrainedTokenizerBase

from panda_chat.decoding.outputs import FinishReason

_REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Decodes a growing token sequence piece by piece, with the same result as decoding it all at once."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0  # tokens before this one are settled text
        self.read_offset = 0  # text of ids[prefix_offset:read_offset] has been returned already

    def _decode(self, ids: Sequence[int]) -> str:
        # one sequence of ids decodes to one string (decode's annotation also covers batches of sequences)
        return cast(str, self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def push(self, token_id: int) -> str:
        """Add a token; return the new text it completes (may be empty, e.g. half of a multi-byte character)."""
        self.ids.append(token_id)
        settled = self._decode(self.ids[self.prefix_offset : self.read_offset])
        current = self._decode(self.ids[self.prefix_offset :])
        if len(current) > len(settled) and not current.endswith(_REPLACEMENT_CHAR):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return current[len(settled) :]
        return ""

    def flush(self) -> str:
        """Whatever text is still pending at the end (e.g. an incomplete character, decoded as is)."""
        settled = self._decode(self.ids[self.prefix_offset : self.read_offset])
        current = self._decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return current[len(settled) :]


def held_back_length(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string (it may become one)."""
    longest = 0
    for stop in stop_strings:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


@dataclass
class RowState:
    token_ids: list[int] = field(default_factory=list)
    text: str = ""  # decoded so far (cut at a stop string); only kept when text is tracked
    emitted: int = 0  # characters of ``text`` already handed out as pieces
    finish_reason: FinishReason | None = None

    @property
    def final_reason(self) -> FinishReason:
        """Why the row stopped, once it has (every row has by the end of a decode)."""
        if self.finish_reason is None:
            raise RuntimeError("the row is still decoding: it has no finish reason yet")
        return self.finish_reason


class StopTracker:
    """Per-row stopping and text for one batch.

    Text is only decoded during generation when it is needed (stop strings, or a caller streaming pieces); otherwise
    the hot loop does no per-token detokenisation and ``final_text`` decodes each row once at the end.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int,
        eos_token_ids: Iterable[int],
        stop_strings: Sequence[str] = (),
        track_text: bool = False,
    ):
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset(eos_token_ids)
        self.stop_strings = [s for s in stop_strings if s]
        self.track_text = track_text or bool(self.stop_strings)
        self.rows = [RowState() for _ in range(batch_size)]
        self._detokenizers = [IncrementalDetokenizer(tokenizer) for _ in range(batch_size)]
        self._longest_stop = max((len(s) for s in self.stop_strings), default=0)

    @property
    def generated_ids(self) -> list[list[int]]:
        return [row.token_ids for row in self.rows]

    @property
    def unfinished(self) -> list[int]:
        return [i for i, row in enumerate(self.rows) if row.finish_reason is None]

    def active_mask(self, rows: Sequence[int], device) -> torch.Tensor:
        """(len(rows),) bool: which of these batch rows are still decoding."""
        return torch.tensor([self.rows[row].finish_reason is None for row in rows], device=device)

    def update(self, tokens: Sequence[int], rows: Sequence[int]) -> list[tuple[int, str]]:
        """Record ``tokens[j]`` for batch row ``rows[j]``; return the (row, text piece) pairs now safe to emit."""
        pieces = []
        for row_index, token in zip(rows, tokens):
            row = self.rows[row_index]
            if row.finish_reason is not None:
                continue
            row.token_ids.append(token)
            if token in self.eos_token_ids:
                row.finish_reason = "eos"
                if self.track_text:
                    row.text += self._detokenizers[row_index].flush()
            elif self.track_text:
                before = len(row.text)
                row.text += self._detokenizers[row_index].push(token)
                self._match_stop(row, before)
            if self.track_text:
                piece = self._emittable(row)
                if piece:
                    pieces.append((row_index, piece))
        return pieces

    def finish_by_length(self) -> list[tuple[int, str]]:
        """Mark every unfinished row as stopped by length; return the held-back text pieces this releases."""
        pieces = []
        for row_index in self.unfinished:
            row = self.rows[row_index]
            if self.track_text:
                before = len(row.text)
                row.text += self._detokenizers[row_index].flush()
                self._match_stop(row, before)
            if row.finish_reason is None:
                row.finish_reason = "length"
            if self.track_text:
                piece = self._emittable(row)
                if piece:
                    pieces.append((row_index, piece))
        return pieces

    def final_text(self, row_index: int) -> str:
        row = self.rows[row_index]
        if self.track_text:
            return row.text
        ids = row.token_ids
        return cast(str, self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def _match_stop(self, row: RowState, text_length_before: int) -> None:
        """Cut ``row.text`` at the earliest stop string that ends in the newly added text, and finish the row."""
        if not self.stop_strings:
            return
        start = max(0, text_length_before - self._longest_stop + 1)
        found = [i for i in (row.text.find(s, start) for s in self.stop_strings) if i >= 0]
        if found:
            row.text = row.text[: min(found)]
            row.finish_reason = "stop"

    def _emittable(self, row: RowState) -> str:
        """The text not handed out yet that can no longer become part of a stop string."""
        end = len(row.text)
        if row.finish_reason is None:
            end -= held_back_length(row.text, self.stop_strings)
        if end <= row.emitted:
            return ""
        piece = row.text[row.emitted : end]
        row.emitted = end
        return piece
