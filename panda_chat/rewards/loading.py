"""Turn what a user passes as a reward (``rewards={"helpful": spec}``) into a ``RewardSource`` for one base model.

A spec is one of:

- a ``RewardSource`` object: used as is;
- a ``RewardHead`` object, or a head file (``*.safetensors`` with a head config): a shared-backbone head, checked
  against the base model (a head trained for another base model is refused);
- a reward model folder (``...ForSequenceClassification`` + tokenizer): with the base model's tokenizer it becomes a
  ``CachedRewardModel``. Its calibration is the ``calibration`` entry of ``panda_reward.json`` in the folder
  (written by panda-chat's reward training, ``panda_chat.rewards.calibration.RewardModelInfo``) when present, else
  mean 0 / std 1 (a third-party reward model).

A reward model with a different tokenizer cannot share token ids with the decoder; ``reward_for_other_tokenizer``
wraps it in the cross-tokenizer text path (``TextRewardModel``: scored on decoded text, correct but slow).
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from panda_chat.registry import ModelNotFoundError, ModelRegistry, shared_registry
from panda_chat.rewards.base import Calibration, RewardSource
from panda_chat.rewards.heads import HeadReward, RewardHead
from panda_chat.rewards.reward_model import CachedRewardModel
from panda_chat.rewards.text_reward_model import TextRewardModel

# The file reward training writes beside a reward-model folder (``RewardModelInfo``); only its calibration is read here.
REWARD_INFO_FILE = "panda_reward.json"

# What ``load_reward`` accepts: a loaded reward, or where to load one from (``profiles.catalog.RewardSpec`` is the
# catalog's description of a pole's reward, a different thing).
RewardOrPath = RewardSource | RewardHead | str | Path


def tokenizer_difference(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> str | None:
    """Why two tokenizers do not map text to the same ids, or None when they do (same vocabulary, same specials)."""
    if len(a) != len(b):
        return f"vocabulary sizes differ ({len(a)} vs {len(b)})"
    if a.get_vocab() != b.get_vocab():
        return "the vocabularies differ"
    for special in ("bos_token_id", "eos_token_id"):
        if getattr(a, special) != getattr(b, special):
            return f"{special} differs ({getattr(a, special)} vs {getattr(b, special)})"
    return None


def read_calibration(folder: Path) -> Calibration:
    """The calibration stored beside a reward-model folder, or the identity calibration when none was stored."""
    file = folder / REWARD_INFO_FILE
    if not file.is_file():
        return Calibration()
    info = json.loads(file.read_text(encoding="utf-8"))
    return Calibration.model_validate(info.get("calibration", {}))


def reward_for_other_tokenizer(
    name: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    reason: str,
    calibration: Calibration | None = None,
) -> RewardSource:
    """The reward source for a reward model whose tokenizer is not the base model's (``reason`` says how they
    differ): scored on decoded text, the slow path (see ``panda_chat.rewards.text_reward_model``)."""
    return TextRewardModel(model, tokenizer, name=name, calibration=calibration)


def load_reward(
    name: str,
    spec: RewardOrPath,
    base_model: PreTrainedModel,
    base_tokenizer: PreTrainedTokenizerBase,
    registry: ModelRegistry | None = None,
) -> RewardSource:
    """Resolve one reward spec for ``base_model`` (see the module docstring). External RMs load on its device/dtype."""
    if isinstance(spec, RewardSource):
        return spec
    if isinstance(spec, RewardHead):
        spec.check_base(base_model)
        return HeadReward(spec, name=name)
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"reward '{name}': expected a path, a RewardHead or a RewardSource, got {type(spec).__name__}")

    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"reward '{name}': {path} is a file but not a reward head (*.safetensors)")
        try:
            head = RewardHead.load(path)
        except ValueError as error:
            raise ValueError(f"reward '{name}': {error}") from error
        head.check_base(base_model)
        return HeadReward(head, name=name)
    if not path.is_dir():
        raise ModelNotFoundError(f"reward '{name}': no reward head file or reward model folder at {path}")

    loaded = (registry or shared_registry()).sequence_classifier(path, base_model.device, base_model.dtype)
    reason = tokenizer_difference(base_tokenizer, loaded.tokenizer)
    if reason is not None:
        return reward_for_other_tokenizer(name, loaded.model, loaded.tokenizer, reason, read_calibration(path))
    return CachedRewardModel(loaded.model, name=name, calibration=read_calibration(path))


def load_rewards(
    specs: dict[str, RewardOrPath] | None,
    base_model: PreTrainedModel,
    base_tokenizer: PreTrainedTokenizerBase,
    registry: ModelRegistry | None = None,
) -> dict[str, RewardSource]:
    """``load_reward`` for every (name, spec); names are what per-request weights refer to."""
    return {name: load_reward(name, spec, base_model, base_tokenizer, registry) for name, spec in (specs or {}).items()}
