"""Preference pairs: the training data of a Bradley-Terry reward model, read from JSONL.

Two line forms are accepted, because both are common in the wild:

* ``{"prompt": ..., "chosen": ..., "rejected": ...}``: the prompt and the two responses, separately.
* ``{"chosen": ..., "rejected": ...}``: HH-RLHF style full dialogues (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``). The
  two dialogues share everything up to the last ``Assistant:`` turn; that shared part is the prompt and what follows
  it in each dialogue is the response. A one-turn prompt (``Human: question``) becomes just the question, so the base
  model's chat template wraps it exactly as it wraps a user's message at decoding time; a longer dialogue is kept as
  its transcript.

A malformed line raises ``PairDataError`` naming the file and the line number, so a bad line in a 100k-line file is
found at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from profiles.errors import ImportFormatError
from profiles.exchange import numbered_lines

_ASSISTANT = "Assistant:"
_HUMAN_TURN = re.compile(r"^\s*Human:\s*", re.DOTALL)


class PairDataError(ValueError):
    """A preference-pair file (or line) cannot be read; the message names the line."""


class PairLike(Protocol):
    """What ``PreferencePair.of`` reads: a prompt, the chosen and the rejected response."""

    @property
    def prompt(self) -> str: ...
    @property
    def chosen(self) -> str: ...
    @property
    def rejected(self) -> str: ...


class PreferencePair(BaseModel):
    """One comparison: for ``prompt``, the response ``chosen`` is preferred to ``rejected``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    prompt: str
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)

    @model_validator(mode="after")
    def _responses_differ(self) -> PreferencePair:
        if self.chosen == self.rejected:
            raise ValueError("'chosen' and 'rejected' are the same text, so the pair says nothing")
        return self

    @classmethod
    def of(cls, pair: PairLike) -> PreferencePair:
        """Any object with ``prompt``, ``chosen`` and ``rejected`` attributes (e.g. a profile-store feedback pair)."""
        if isinstance(pair, PreferencePair):
            return pair
        return cls(prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected)


def split_dialogue(chosen: str, rejected: str) -> PreferencePair:
    """Split two HH-RLHF dialogues into their shared prompt and the two final assistant responses."""
    cut_c, cut_r = chosen.rfind(_ASSISTANT), rejected.rfind(_ASSISTANT)
    if cut_c < 0 or cut_r < 0:
        raise ValueError(
            f"a dialogue without a prompt must contain an '{_ASSISTANT}' turn in both 'chosen' and 'rejected'"
        )
    head_c, head_r = chosen[:cut_c], rejected[:cut_r]
    if head_c.strip() != head_r.strip():
        raise ValueError("'chosen' and 'rejected' dialogues differ before their last 'Assistant:' turn")
    return PreferencePair(
        prompt=_prompt_of(head_c),
        chosen=chosen[cut_c + len(_ASSISTANT) :].strip(),
        rejected=rejected[cut_r + len(_ASSISTANT) :].strip(),
    )


def _prompt_of(dialogue_head: str) -> str:
    """The prompt of a dialogue: the lone question of a one-turn dialogue, else the transcript as written."""
    head = dialogue_head.strip()
    body = _HUMAN_TURN.sub("", head, count=1)
    if body != head and "Human:" not in body and _ASSISTANT not in body:
        return body.strip()
    return head


def parse_pair(record: dict) -> PreferencePair:
    """One decoded JSON object -> a pair (either form); raises ValueError with a reason."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "prompt" in record:
        return PreferencePair.model_validate(record)
    missing = [k for k in ("chosen", "rejected") if k not in record]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(repr(m) for m in missing)}")
    chosen, rejected = record["chosen"], record["rejected"]
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise ValueError("'chosen' and 'rejected' must be strings")
    return split_dialogue(chosen, rejected)


def parse_pair_lines(lines: Iterable[str | bytes], source: str = "<input>") -> list[PreferencePair]:
    """Parse JSONL text (or UTF-8 bytes); blank lines are skipped; errors name ``source`` and the 1-based line."""
    pairs = []
    try:
        numbered = list(numbered_lines(lines, source=source))
    except ImportFormatError as error:  # invalid UTF-8: the message names the file, the line and the byte
        raise PairDataError(str(error)) from None
    for number, line in numbered:
        if not line.strip():
            continue
        try:
            pairs.append(parse_pair(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise PairDataError(f"{source}, line {number}: not valid JSON ({exc.msg})") from exc
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'pair'}: {e['msg']}" for e in exc.errors())
            raise PairDataError(f"{source}, line {number}: {reasons}") from exc
        except ValueError as exc:
            raise PairDataError(f"{source}, line {number}: {exc}") from exc
    return pairs


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Read a JSONL file of preference pairs; an empty file is an error (nothing to train on)."""
    path = Path(path)
    if not path.is_file():
        raise PairDataError(f"preference data file not found: {path}")
    with path.open("rb") as f:
        pairs = parse_pair_lines(f, source=str(path))
    if not pairs:
        raise PairDataError(f"{path} holds no preference pairs")
    return pairs


def write_pairs(pairs: Iterable[PreferencePair], path: str | Path) -> Path:
    """Write pairs as ``{"prompt", "chosen", "rejected"}`` JSONL (the form ``load_pairs`` reads back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(json.dumps(pair.model_dump(), ensure_ascii=False) + "\n")
    return path
