"""Shared-backbone reward heads: a tiny model on the base model's own final hidden states.

A head scores an answer cut after some token z. What it reads is its ``features`` (``HeadFeatures``):

- ``"prefix+token"`` (what the trainers make): the base model's final hidden state at the token *before* z, the mean
  of those states over the answer before z, and z's input embedding. Everything it reads exists before z goes
  through the model, so scoring the k candidates of a step costs no forward of them: personalised decoding runs the
  base model on the chosen token only, as plain decoding does (GenARM's idea of a reward read from the prefix, with
  the candidate as an input).
- ``"last+mean"``: the final hidden state *at* z and the mean of those states over the answer up to z. It needs the
  k candidates' own forward each step (one tree-masked forward of k tokens, ``panda_chat.tree_attention``). The
  shipped demo heads are of this kind.
- ``"last"``: the state at z only (older head files).

On the demo model, held-out accuracy on answers cut mid-way is about the same for the first two (0.95-1.00 per pole
with 150 training pairs, benchmarks/README.md); ``"last"`` alone reached 0.78-0.87. The decoder keeps the state of the
last chosen token and a running sum per row, so every kind is exact and cheap to read.

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


# What a head reads (module docstring): "last" is the final hidden state at the answer's last token z; "last+mean"
# adds the mean final hidden state over the answer up to and including z; "prefix+token" is the final hidden state
# before z, the mean over the answer before z (zeros for the first token) and z's input embedding.
HeadFeatures = Literal["last", "last+mean", "prefix+token"]
DEFAULT_FEATURES: HeadFeatures = "prefix+token"  # what new heads read: no forward of the candidates when decoding


def reads_candidate_states(features: HeadFeatures) -> bool:
    """Whether a head needs the base model's hidden state at each candidate (a forward of the k candidates)."""
    return features != "prefix+token"


def input_size(features: HeadFeatures, hidden_size: int) -> int:
    """How wide a head's input is on a base model with this hidden size."""
    return hidden_size * {"last": 1, "last+mean": 2, "prefix+token": 3}[features]


def head_input(features: HeadFeatures, candidates: CandidateBatch) -> torch.Tensor:
    """(B, k, F) a head's input for every candidate of a decoding step: the one place the decoder and the scorers
    build it from a ``CandidateBatch``, as ``answer_features`` builds it for training, so a head always reads what it
    was trained on."""
    if features == "prefix+token":
        prefix, mean, tokens = prefix_inputs(candidates)
        k = tokens.shape[1]
        return torch.cat([prefix[:, None].expand(-1, k, -1), mean[:, None].expand(-1, k, -1), tokens], dim=-1)
    last = candidates.base_hidden
    if last is None:
        raise RuntimeError("this reward head needs the base model's candidate hidden states (needs_base_hidden)")
    if features == "last":
        return last
    if candidates.base_hidden_mean is None:
        raise RuntimeError("this reward head reads the answer's mean hidden state, which the caller did not give")
    return torch.cat([last, candidates.base_hidden_mean.to(last.dtype)], dim=-1)


def prefix_inputs(candidates: CandidateBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What ``"prefix+token"`` heads read at a step, in the prefix state's dtype: (B, H) state before the candidates,
    (B, H) mean over the answer before them, (B, k, H) their embeddings."""
    prefix, mean, tokens = candidates.prefix_hidden, candidates.prefix_mean, candidates.candidate_embeddings
    if prefix is None or mean is None or tokens is None:
        raise RuntimeError("a prefix+token reward head needs the prefix state, its mean and the candidate embeddings")
    return prefix, mean.to(prefix.dtype), tokens.to(prefix.dtype)


def answer_features(
    features: HeadFeatures,
    states: torch.Tensor,
    before: torch.Tensor | None = None,
    embeddings: torch.Tensor | None = None,
) -> torch.Tensor:
    """(T, F) head inputs at every token of one answer: row t reads the answer cut after token t.

    ``states`` (T, H) are the answer's final hidden states; ``"prefix+token"`` heads also need ``before`` (H,), the
    state of the token before the answer (the prompt's last), and ``embeddings`` (T, H), the answer tokens' input
    embeddings (``token_embeddings``).
    """
    if features == "last":
        return states
    if features == "last+mean":
        return torch.cat([states, running_means(states)], dim=-1)
    if before is None or embeddings is None:
        raise ValueError("prefix+token features need the state before the answer and the answer's token embeddings")
    previous = torch.cat([before[None].to(states.dtype), states[:-1]])
    sums = torch.cat([states.new_zeros(1, states.shape[-1]), states.cumsum(0)[:-1]])
    counts = torch.arange(states.shape[0], dtype=states.dtype, device=states.device).clamp(min=1)[:, None]
    return torch.cat([previous, sums / counts, embeddings.to(states.dtype)], dim=-1)


def running_means(states: torch.Tensor) -> torch.Tensor:
    """(T, H) -> (T, H): row t is the mean of rows 0..t."""
    counts = torch.arange(1, states.shape[0] + 1, dtype=states.dtype, device=states.device)[:, None]
    return states.cumsum(0) / counts


def token_embeddings(model: PreTrainedModel, token_ids: torch.Tensor) -> torch.Tensor:
    """The base model's input embeddings of ``token_ids`` (..., H): what ``"prefix+token"`` heads read of a token.
    Its own embedding module, so a model that scales embeddings there (Gemma 3) is read as it reads itself."""
    embedding = model.get_input_embeddings()
    weight = cast(torch.Tensor, embedding.weight)
    with torch.no_grad():
        return embedding(token_ids.to(weight.device))


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

    def score_candidates(self, candidates: CandidateBatch) -> torch.Tensor:
        """(B, k) float raw rewards of a decoding step's candidates, read as the head's features say."""
        features = head_input(self.config.features, candidates)
        weight = next(self.parameters())
        if weight.device != features.device or weight.dtype != features.dtype:
            self.to(device=features.device, dtype=features.dtype)
        with torch.no_grad():
            return self(features).float()

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

    ``needs_base_hidden`` (the candidates' own forward) or ``needs_prefix_hidden`` (the state before them) follows
    the head's features. ``stack``/``index``: the head is column ``index`` of a ``HeadStack`` (``HeadStack.add``
    makes these), so every head of the stack is scored in one batched computation per step instead of one small
    forward per head.
    """

    def __init__(self, head: RewardHead, name: str | None = None, stack: HeadStack | None = None, index: int = 0):
        self.head = head
        self.name = name or head.config.name
        self.calibration = head.config.calibration
        self.needs_base_hidden = reads_candidate_states(head.config.features)
        self.needs_prefix_hidden = not self.needs_base_hidden
        self.stack = stack
        self.index = index

    def start(self, prompts: PromptBatch) -> RewardSession:
        return _HeadSession(self)


class _HeadSession(RewardSession):
    can_select_rows = True

    def __init__(self, source: HeadReward):
        self.source = source

    def score(self, candidates: CandidateBatch) -> torch.Tensor:
        if self.source.stack is not None:
            return self.source.stack.scores(candidates)[..., self.source.index]
        return self.source.head.score_candidates(candidates)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Stateless (the hidden states come with every step's candidates): nothing to drop."""


class HeadStack:
    """Heads on one base model scored together: every head's reward at every candidate in one batched computation.

    Personalised decoding weighs several heads at every step (one per steered pole). Scored one by one, each is a
    tiny forward whose cost is mostly call overhead; stacked, the linear heads are one matrix product and the MLP
    heads of one size two (their first layers side by side, their second layers as one weighted sum). Heads are
    packed in two groups by what they read: ``"prefix+token"`` heads, and heads on the candidates' own states (when
    any of those reads ``"last+mean"``, all of them are packed for it, a ``"last"`` head with zero weights on the
    mean). A group whose inputs a step does not have (no candidate forward) is not computed; its columns are NaN,
    and no source of that step reads them. The heads' ``HeadReward``s (``add``) share the stack: the first one scored
    at a step computes all columns for that step's candidates, the others read theirs (kept per thread, keyed by the
    very ``CandidateBatch`` and hidden-state tensors, so concurrent calls never see each other's). Results equal the
    heads' own forwards up to float rounding. The weights are packed at the first step after a head joins: a head
    trained further after joining is not seen by the stack.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._heads: list[RewardHead] = []
        self._packed: list[_PackedHeads] | None = None
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

    def scores(self, candidates: CandidateBatch) -> torch.Tensor:
        """(B, k, N) float raw rewards of the stack's N heads (in the order added) at a step's candidates."""
        last = self._last
        key = (candidates, candidates.base_hidden, candidates.prefix_hidden)
        if last.__dict__.get("count") == len(self._heads) and all(a is b for a, b in zip(last.key, key)):
            return last.out
        reference = candidates.base_hidden if candidates.base_hidden is not None else candidates.prefix_hidden
        if reference is None:
            raise RuntimeError("reward heads need the base model's hidden states: the caller gave none")
        with self._lock:
            groups = self._packed
            if groups is None or groups[0].device != reference.device or groups[0].dtype != reference.dtype:
                groups = self._packed = _pack_groups(self._heads, reference.device, reference.dtype)
            count = len(self._heads)
        batch, k = candidates.candidate_ids.shape
        out = torch.full((batch, k, count), float("nan"), device=reference.device)
        for group in groups:
            if group.features == "prefix+token" and candidates.prefix_hidden is None:
                continue
            if group.features != "prefix+token" and candidates.base_hidden is None:
                continue
            out[..., group.members] = group(candidates)
        last.key, last.count, last.out = key, count, out
        return out


def _pack_groups(heads: list[RewardHead], device: torch.device, dtype: torch.dtype) -> list[_PackedHeads]:
    """The stack's heads packed by what they read (``HeadStack``): prefix+token heads, and heads on candidate states."""
    prefix = [i for i, head in enumerate(heads) if not reads_candidate_states(head.config.features)]
    candidate = [i for i in range(len(heads)) if i not in prefix]
    return [_PackedHeads(heads, members, device, dtype) for members in (prefix, candidate) if members]


class _PackedHeads:
    """The weights of some heads of a stack (``members``, which read the same inputs) laid side by side on one
    device and dtype (see ``HeadStack``)."""

    def __init__(self, stack: list[RewardHead], members: list[int], device: torch.device, dtype: torch.dtype):
        heads = [stack[i] for i in members]
        self.device, self.dtype, self.count = device, dtype, len(heads)
        self.members = torch.tensor(members, device=device)
        wide = any(head.config.features == "last+mean" for head in heads)
        self.features: HeadFeatures = heads[0].config.features
        if reads_candidate_states(self.features):
            self.features = "last+mean" if wide else "last"
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

        self.linear: _FirstLayer | None = None
        if linear:
            nets = [cast(nn.Linear, heads[i].net) for i in linear]
            self.linear = _FirstLayer(
                self.features,
                tensor([first_weight(heads[i], n) for i, n in zip(linear, nets)]),
                tensor([n.bias for n in nets]),
            )
        self.mlps: list[tuple[_FirstLayer, torch.Tensor, torch.Tensor]] = []
        for size, members in by_size.items():
            mlps = [cast(nn.Sequential, heads[i].net) for i in members]
            first = [cast(nn.Linear, net[0]) for net in mlps]
            second = [cast(nn.Linear, net[2]) for net in mlps]
            self.mlps.append(
                (
                    _FirstLayer(
                        self.features,
                        tensor([first_weight(heads[i], n) for i, n in zip(members, first)]),  # (N * M, F)
                        tensor([n.bias for n in first]),  # (N * M,)
                    ),
                    tensor([n.weight for n in second]).reshape(len(members), size),  # (N, M)
                    tensor([n.bias for n in second]),  # (N,)
                )
            )
        order = linear + [i for members in by_size.values() for i in members]
        self.order = torch.tensor([order.index(i) for i in range(len(heads))], device=device)

    def __len__(self) -> int:
        return self.count

    def __call__(self, candidates: CandidateBatch) -> torch.Tensor:
        """(B, k, N) float raw rewards of the packed heads at a step's candidates."""
        columns = []
        with torch.no_grad():
            if self.linear is not None:
                columns.append(self.linear(candidates))
            for first, w2, b2 in self.mlps:
                inner = torch.nn.functional.gelu(first(candidates))
                inner = inner.unflatten(-1, w2.shape)  # (..., N, M)
                columns.append((inner * w2).sum(-1) + b2)
            out = columns[0] if len(columns) == 1 else torch.cat(columns, dim=-1)[..., self.order]
        return out.float()


class _FirstLayer:
    """A packed first layer (weight (N * M, F), bias) applied at every candidate. For ``"prefix+token"`` heads its
    weight is kept as two parts: the prefix's (two thirds of the input, the same for a row's k candidates), applied
    once per row, and the token's, applied per candidate."""

    def __init__(self, features: HeadFeatures, weight: torch.Tensor, bias: torch.Tensor):
        self.features, self.weight, self.bias = features, weight, bias
        if features == "prefix+token":
            width = weight.shape[1] // 3
            self.weight, self.token_weight = weight[:, : 2 * width].contiguous(), weight[:, 2 * width :].contiguous()

    def __call__(self, candidates: CandidateBatch) -> torch.Tensor:
        if self.features != "prefix+token":
            return torch.nn.functional.linear(head_input(self.features, candidates), self.weight, self.bias)
        prefix, mean, tokens = prefix_inputs(candidates)
        per_row = torch.nn.functional.linear(torch.cat([prefix, mean], dim=-1), self.weight, self.bias)  # (B, N * M)
        return torch.nn.functional.linear(tokens, self.token_weight) + per_row[:, None]
