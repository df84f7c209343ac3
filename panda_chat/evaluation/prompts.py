"""Prompt files for lambda fitting and evaluation.

A file is either plain text (one prompt per non-empty line) or JSONL (``.jsonl``), one object per line::

    {"prompt": "Explain photosynthesis", "weights": {"simple": 1.0}, "preference_features": [0.2, 0.8, ...]}

``weights`` (per-prompt reward weights, e.g. a user's) and ``preference_features`` (a ``PreferenceContext.vector``)
are optional, but all-or-none: either every line has them or none does, so a batch never mixes conditions silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class PromptLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    weights: dict[str, float] | None = None
    preference_features: list[float] | None = None


@dataclass
class PromptSet:
    prompts: list[str]
    weights: list[dict[str, float]] | None = None
    preference_features: torch.Tensor | None = None  # (N, P)


def load_prompts(path: str | Path) -> PromptSet:
    """Read a prompt file (see the module docstring); errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix != ".jsonl":
        prompts = [line.strip() for line in lines if line.strip()]
        if not prompts:
            raise ValueError(f"{path} holds no prompts")
        return PromptSet(prompts)
    parsed: list[PromptLine] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            parsed.append(PromptLine.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else exc.errors()[0]["msg"]
            raise ValueError(f"{path}, line {number}: {reason}") from exc
    if not parsed:
        raise ValueError(f"{path} holds no prompts")
    for field in ("weights", "preference_features"):
        present = {getattr(p, field) is not None for p in parsed}
        if len(present) > 1:
            raise ValueError(f"{path}: '{field}' must be given on every line or on none")
    features = None
    feature_rows = [p.preference_features for p in parsed if p.preference_features is not None]
    if feature_rows:  # then on every line (checked above)
        sizes = {len(row) for row in feature_rows}
        if len(sizes) > 1:
            raise ValueError(f"{path}: 'preference_features' have different lengths {sorted(sizes)}")
        features = torch.tensor(feature_rows, dtype=torch.float32)
    weights = [p.weights for p in parsed if p.weights is not None] or None
    return PromptSet([p.prompt for p in parsed], weights, features)
