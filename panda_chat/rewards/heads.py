"""Shared-backbone reward heads: a tiny model on the base model's own final hidden state.

A head scores a response by looking at the base model's final (normed) hidden state at the response's last token.
During decoding, the k candidate tokens go through the base model anyway (to get the next step's logits), so every
head's reward comes for free from hidden states the decoder already has: one forward of k tokens per generated token
instead of base + reward model. Several preferences are several heads on the same hidden state.

A head is one ``.safetensors`` file: the weights, plus a JSON config in the file's metadata that records the base
model it was trained on (``BaseModelSignature``), its calibration and a description. Loading a head onto a different
base model is refused with a clear error, because its rewards would be meaningless there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import torch
from pydantic import BaseModel, Field
from torch import nn

from panda_chat.rewards.base import Calibration, CandidateBatch, PromptBatch, RewardSession, RewardSource
from panda_chat.weights_file import module_to_bytes, read_module, save_module

if TYPE_CHECKING:
    from transformers import PreTrainedModel

HEAD_FORMAT_VERSION = 1
_METADATA_KEY = "panda_chat_reward_head"
# The signature keeps a few embedding values of the base model: enough to tell two checkpoints apart, compared with
# a tolerance so that the same model loaded in float32, bfloat16 or float16 still matches.
_PROBE_ROWS, _PROBE_DIMS = 8, 16
_PROBE_TOLERANCE = 2e-2


class HeadMismatchError(ValueError):
    """A reward head was loaded onto a base model it was not trained for."""


class BaseModelSignature(BaseModel):
    """What identifies the base model a head belongs to, independent of folder names and dtypes."""

    model_type: str
    hidden_size: int
    vocab_size: int
    num_hidden_layers: int
    embedding_probe: list[float]

    @classmethod
    def of(cls, model: PreTrainedModel) -> BaseModelSignature:
        """The signature of a loaded model. Sizes come from its text config: a multimodal checkpoint (e.g.
        ``Gemma3ForConditionalGeneration``) keeps them in ``config.text_config``, and its heads read the language
        model's hidden states."""
        config = model.config.get_text_config()
        emb = cast(torch.Tensor, model.get_input_embeddings().weight)  # an embedding's weight is a tensor
        probe = emb[:_PROBE_ROWS, :_PROBE_DIMS].detach().float().cpu().flatten().tolist()
        return cls(
            model_type=config.model_type,
            hidden_size=config.hidden_size,
            vocab_size=config.vocab_size,
            num_hidden_layers=config.num_hidden_layers,
            embedding_probe=probe,
        )

    def mismatch(self, other: BaseModelSignature) -> str | None:
        """A one-line reason why ``other`` is not this base model, or None when it is."""
        for field_name in ("model_type", "hidden_size", "vocab_size", "num_hidden_layers"):
            mine, theirs = getattr(self, field_name), getattr(other, field_name)
            if mine != theirs:
                return f"{field_name} is {theirs}, the head was trained for {mine}"
        a, b = torch.tensor(self.embedding_probe), torch.tensor(other.embedding_probe)
        if a.shape != b.shape or not torch.allclose(a, b, atol=_PROBE_TOLERANCE, rtol=_PROBE_TOLERANCE):
            return "its weights differ from the checkpoint the head was trained on"
        return None


class RewardHeadConfig(BaseModel):
    """Everything needed to rebuild a head and check it against a base model (stored in the file's metadata)."""

    format_version: int = HEAD_FORMAT_VERSION
    name: str
    description: str = ""
    kind: Literal["linear", "mlp"] = "linear"
    hidden_size: int = Field(gt=0)
    mlp_size: int = Field(default=64, gt=0)
    base_model: str = ""  # where the base model was loaded from when the head was trained (informational)
    base_signature: BaseModelSignature
    calibration: Calibration = Field(default_factory=Calibration)
    training: dict = Field(default_factory=dict)  # free-form facts: data, epochs, accuracy, ...


class RewardHead(nn.Module):
    """reward = head(h): a linear layer, or a one-hidden-layer MLP, on a final hidden state of size ``hidden_size``."""

    net: nn.Linear | nn.Sequential

    def __init__(self, config: RewardHeadConfig):
        super().__init__()
        self.config = config
        if config.kind == "linear":
            self.net = nn.Linear(config.hidden_size, 1)
        else:
            self.net = nn.Sequential(
                nn.Linear(config.hidden_size, config.mlp_size), nn.GELU(), nn.Linear(config.mlp_size, 1)
            )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) hidden states -> (...) raw rewards."""
        return self.net(hidden).squeeze(-1)

    def check_base(self, model: PreTrainedModel) -> None:
        """Raise ``HeadMismatchError`` unless ``model`` is the base model this head was trained on."""
        reason = self.config.base_signature.mismatch(BaseModelSignature.of(model))
        if reason is not None:
            raise HeadMismatchError(
                f"reward head '{self.config.name}' belongs to another base model ({reason}); "
                f"train a head for this model with `panda-chat reward train --kind head`"
            )

    def save(self, path: str | Path) -> Path:
        return save_module(self, self.config, _METADATA_KEY, path)

    def to_bytes(self) -> bytes:
        """The head file's bytes (e.g. to keep a user's head in the profile store); ``from_bytes`` reads them."""
        return module_to_bytes(self, self.config, _METADATA_KEY)

    @classmethod
    def from_bytes(cls, data: bytes) -> RewardHead:
        return cls._build(data)

    @classmethod
    def load(cls, path: str | Path) -> RewardHead:
        return cls._build(path)

    @classmethod
    def _build(cls, source: str | Path | bytes) -> RewardHead:
        config, state = read_module(source, _METADATA_KEY, RewardHeadConfig, "reward head", HEAD_FORMAT_VERSION)
        head = cls(config)
        head.load_state_dict(state)
        return head.eval()


class HeadReward(RewardSource):
    """A ``RewardSource`` over a ``RewardHead``: scores candidates from the base model's hidden states."""

    needs_base_hidden = True

    def __init__(self, head: RewardHead, name: str | None = None):
        self.head = head
        self.name = name or head.config.name
        self.calibration = head.config.calibration

    def start(self, prompts: PromptBatch) -> RewardSession:
        return _HeadSession(self.head)


class _HeadSession(RewardSession):
    can_select_rows = True

    def __init__(self, head: RewardHead):
        self.head = head

    def score(self, candidates: CandidateBatch) -> torch.Tensor:
        if candidates.base_hidden is None:
            raise RuntimeError("a reward head needs the base model's candidate hidden states (needs_base_hidden)")
        hidden = candidates.base_hidden
        weight = next(self.head.parameters())
        if weight.device != hidden.device or weight.dtype != hidden.dtype:
            self.head.to(device=hidden.device, dtype=hidden.dtype)
        with torch.no_grad():
            return self.head(hidden).float()

    def select_rows(self, rows: torch.Tensor) -> None:
        """Stateless (the hidden states come with every step's candidates): nothing to drop."""
