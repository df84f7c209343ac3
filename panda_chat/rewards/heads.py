"""Shared-backbone reward heads: a tiny model on the base model's own final hidden states.

A head scores a response by looking at the base model's final (normed) hidden state at the response's last token
and, for heads whose ``features`` are ``"last+mean"`` (what every trainer here makes; older files read the last
state only), also at the mean of those hidden states over the response's tokens so far. The mean carries the style
of the whole answer, which the last token of a small model often does not: on the demo model, held-out accuracy on
answers cut mid-way rose from 0.84-0.90 to 0.96-1.00. Both are exact and cheap at decoding time (the decoder keeps a
running sum per row).
During decoding, the k candidate tokens go through the base model anyway (to get the next step's logits), so every
head's reward comes for free from hidden states the decoder already has: one forward of k tokens per generated token
instead of base + reward model. Several preferences are several heads on the same hidden state.

A head is one ``.safetensors`` file: the weights, plus a JSON config in the file's metadata that records the base
model it was trained on (``BaseModelSignature``), its calibration and a description. Loading a head onto a different
base model is refused with a clear error, because its rewards would be meaningless there.
"""

from __future__ import annotations

import threading
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


# What a head reads: "last" is the final hidden state at the answer's last token (older heads); "last+mean" is that
# state concatenated with the mean final hidden state over the answer's tokens up to and including it.
HeadFeatures = Literal["last", "last+mean"]


def input_size(features: HeadFeatures, hidden_size: int) -> int:
    """How wide a head's input is on a base model with this hidden size."""
    return hidden_size * (2 if features == "last+mean" else 1)


def head_input(features: HeadFeatures, last: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
    """A head's input from the last-token hidden states (..., H) and the answer means (..., H): the one place the
    decoder, the trainers and the scorers build it, so a head always reads what it was trained on."""
    if features == "last":
        return last
    if mean is None:
        raise RuntimeError("this reward head reads the answer's mean hidden state, which the caller did not give")
    return torch.cat([last, mean.to(last.dtype)], dim=-1)


def answer_features(features: HeadFeatures, states: torch.Tensor) -> torch.Tensor:
    """(T, F) head inputs at every token of one answer from its final hidden states (T, H): row t reads the answer
    cut after token t (its last state, and the mean of states 0..t)."""
    return states if features == "last" else torch.cat([states, running_means(states)], dim=-1)


def running_means(states: torch.Tensor) -> torch.Tensor:
    """(T, H) -> (T, H): row t is the mean of rows 0..t."""
    counts = torch.arange(1, states.shape[0] + 1, dtype=states.dtype, device=states.device)[:, None]
    return states.cumsum(0) / counts


class RewardHeadConfig(BaseModel):
    """Everything needed to rebuild a head and check it against a base model (stored in the file's metadata)."""

    format_version: int = HEAD_FORMAT_VERSION
    name: str
    description: str = ""
    kind: Literal["linear", "mlp"] = "linear"
    hidden_size: int = Field(gt=0)  # the base model's; the head's input is ``input_size`` wide
    features: HeadFeatures = "last"  # "last" for heads saved before the field existed
    mlp_size: int = Field(default=64, gt=0)
    base_model: str = ""  # where the base model was loaded from when the head was trained (informational)
    base_signature: BaseModelSignature
    calibration: Calibration = Field(default_factory=Calibration)
    training: dict = Field(default_factory=dict)  # free-form facts: data, epochs, accuracy, ...

    @property
    def input_size(self) -> int:
        return input_size(self.features, self.hidden_size)


class RewardHead(nn.Module):
    """reward = head(x): a linear layer, or a one-hidden-layer MLP, on ``head_input`` features (``input_size`` wide)."""

    net: nn.Linear | nn.Sequential

    def __init__(self, config: RewardHeadConfig):
        super().__init__()
        self.config = config
        if config.kind == "linear":
            self.net = nn.Linear(config.input_size, 1)
        else:
            self.net = nn.Sequential(
                nn.Linear(config.input_size, config.mlp_size), nn.GELU(), nn.Linear(config.mlp_size, 1)
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., input_size) head inputs (``head_input``) -> (...) raw rewards."""
        return self.net(features).squeeze(-1)

    def score_hidden(self, last: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
        """Raw rewards from last-token hidden states and answer means (..., H), as the head's features say."""
        return self(head_input(self.config.features, last, mean))

    def check_base(self, model: PreTrainedModel) -> None:
        """Raise ``HeadMismatchError`` unless ``model`` is the base model this head was trained on."""
        reason = self.config.base_signature.mismatch(BaseModelSignature.of(model))
        if reason is not None:
            raise HeadMismatchError(
                f"reward head '{self.config.name}' belongs to another base model ({reason}); "
                "build heads for this model with `panda-chat reward bootstrap --base MODEL` (add --force to replace "
                "a manifest copied from another model), or train one with `panda-chat reward train --kind head`"
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
    """A ``RewardSource`` over a ``RewardHead``: scores candidates from the base model's hidden states.

    ``stack``/``index``: the head is column ``index`` of a ``HeadStack`` (``HeadStack.add`` makes these), so every
    head of the stack is scored in one batched computation per step instead of one small forward per head.
    """

    needs_base_hidden = True

    def __init__(self, head: RewardHead, name: str | None = None, stack: HeadStack | None = None, index: int = 0):
        self.head = head
        self.name = name or head.config.name
        self.calibration = head.config.calibration
        self.stack = stack
        self.index = index

    def start(self, prompts: PromptBatch) -> RewardSession:
        return _HeadSession(self)


class _HeadSession(RewardSession):
    can_select_rows = True

    def __init__(self, source: HeadReward):
        self.source = source

    def score(self, candidates: CandidateBatch) -> torch.Tensor:
        if candidates.base_hidden is None:
            raise RuntimeError("a reward head needs the base model's candidate hidden states (needs_base_hidden)")
        hidden, mean = candidates.base_hidden, candidates.base_hidden_mean
        if self.source.stack is not None:
            return self.source.stack.scores(hidden, mean)[..., self.source.index]
        head = self.source.head
        weight = next(head.parameters())
        if weight.device != hidden.device or weight.dtype != hidden.dtype:
            head.to(device=hidden.device, dtype=hidden.dtype)
        with torch.no_grad():
            return head.score_hidden(hidden, mean).float()

    def select_rows(self, rows: torch.Tensor) -> None:
        """Stateless (the hidden states come with every step's candidates): nothing to drop."""


class HeadStack:
    """Heads on one base model scored together: every head's reward at every candidate in one batched computation.

    Personalised decoding weighs several heads at every step (one per steered pole). Scored one by one, each is a
    tiny forward whose cost is mostly call overhead; stacked, the linear heads are one matrix product and the MLP
    heads of one size two (their first layers side by side, their second layers as one weighted sum). When any head
    reads ``"last+mean"`` features, every head is packed for them (a ``"last"`` head's weights on the mean are zero).
    The heads' ``HeadReward``s (``add``) share the stack: the first one scored at a step computes all columns for
    that step's hidden states, the others read theirs (kept per thread, keyed by the very hidden-state tensor, so
    concurrent calls never see each other's). Results equal the heads' own forwards up to float rounding. The weights
    are packed at the first step after a head joins: a head trained further after joining is not seen by the stack.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._heads: list[RewardHead] = []
        self._packed: _PackedHeads | None = None
        self._last = threading.local()

    def __len__(self) -> int:
        return len(self._heads)

    def __getstate__(self) -> dict:
        """Pickled as its heads (the serving engine process gets the stack this way); the lock, the per-thread
        last result and the packed weights are made anew on the other side."""
        with self._lock:
            return {"heads": list(self._heads)}

    def __setstate__(self, state: dict) -> None:
        """Also updates a stack in place (the engine process's copy, when heads joined the original): under the
        lock, so a step scoring at the same time packs either the old heads or the new ones, never a mix."""
        if not hasattr(self, "_lock"):
            self.__init__()  # type: ignore[misc]
        with self._lock:
            self._heads = list(state["heads"])
            self._packed = None

    def add(self, head: RewardHead, name: str | None = None) -> HeadReward:
        """Put ``head`` in the stack; returns its reward source (scored through the stack)."""
        with self._lock:
            self._heads.append(head)
            self._packed = None
            return HeadReward(head, name=name, stack=self, index=len(self._heads) - 1)

    def scores(self, hidden: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        """(..., H) last-token hidden states and answer means -> (..., N) float raw rewards of the stack's N heads
        (in the order added)."""
        last = self._last
        if getattr(last, "hidden", None) is hidden and last.count == len(self._heads):
            return last.out
        with self._lock:
            packed = self._packed
            if packed is None or packed.device != hidden.device or packed.dtype != hidden.dtype:
                packed = self._packed = _PackedHeads(self._heads, hidden.device, hidden.dtype)
        out = packed(head_input(packed.features, hidden, mean))
        last.hidden, last.count, last.out = hidden, len(packed), out
        return out


class _PackedHeads:
    """The weights of several heads laid side by side on one device and dtype (see ``HeadStack``)."""

    def __init__(self, heads: list[RewardHead], device: torch.device, dtype: torch.dtype):
        self.device, self.dtype, self.count = device, dtype, len(heads)
        wide = any(head.config.features == "last+mean" for head in heads)
        self.features: HeadFeatures = "last+mean" if wide else "last"
        linear = [i for i, head in enumerate(heads) if isinstance(head.net, nn.Linear)]
        by_size: dict[int, list[int]] = {}
        for i, head in enumerate(heads):
            if not isinstance(head.net, nn.Linear):
                by_size.setdefault(head.config.mlp_size, []).append(i)

        def tensor(values: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat([v.detach().reshape(-1) if v.dim() < 2 else v.detach() for v in values]).to(device, dtype)

        def first_weight(head: RewardHead, layer: nn.Linear) -> torch.Tensor:
            """The layer's weight over the stack's features: zeros on the mean for a "last" head in a wide stack."""
            weight = layer.weight
            if wide and head.config.features == "last":
                weight = torch.cat([weight, torch.zeros_like(weight)], dim=1)
            return weight

        self.linear: tuple[torch.Tensor, torch.Tensor] | None = None
        if linear:
            nets = [cast(nn.Linear, heads[i].net) for i in linear]
            self.linear = (
                tensor([first_weight(heads[i], n) for i, n in zip(linear, nets)]),
                tensor([n.bias for n in nets]),
            )
        self.mlps: list[tuple[torch.Tensor, ...]] = []
        for size, members in by_size.items():
            mlps = [cast(nn.Sequential, heads[i].net) for i in members]
            first = [cast(nn.Linear, net[0]) for net in mlps]
            second = [cast(nn.Linear, net[2]) for net in mlps]
            self.mlps.append(
                (
                    tensor([first_weight(heads[i], n) for i, n in zip(members, first)]),  # (N * M, F)
                    tensor([n.bias for n in first]),  # (N * M,)
                    tensor([n.weight for n in second]).reshape(len(members), size),  # (N, M)
                    tensor([n.bias for n in second]),  # (N,)
                )
            )
        order = linear + [i for members in by_size.values() for i in members]
        self.order = torch.tensor([order.index(i) for i in range(len(heads))], device=device)

    def __len__(self) -> int:
        return self.count

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        columns = []
        with torch.no_grad():
            if self.linear is not None:
                columns.append(torch.nn.functional.linear(hidden, *self.linear))
            for w1, b1, w2, b2 in self.mlps:
                inner = torch.nn.functional.gelu(torch.nn.functional.linear(hidden, w1, b1))
                inner = inner.unflatten(-1, w2.shape)  # (..., N, M)
                columns.append((inner * w2).sum(-1) + b2)
            out = columns[0] if len(columns) == 1 else torch.cat(columns, dim=-1)[..., self.order]
        return out.float()
