"""k candidate tokens on one shared, cached prefix: the tree mask, the general (repeated-cache) way, and the check.

PANDA scores k candidate next tokens per row at every step. Re-encoding prefix+candidate k times costs O(k * L)
tokens a step. Two exact ways avoid it; ``PrefixCache`` implements both behind one interface:

- **tree** (the fast path): the prefix is cached ONCE, and the k candidates go through the model as one row of k
  tokens with a "tree" attention mask: candidate i sees the row's real prefix tokens and itself, never the other
  candidates, and all k sit at the same position (the next one). Sliding-window layers get their own mask per layer
  type (candidate i sees only the last ``window`` slots, as it would at the end of prefix+candidate). After the
  choice, only the chosen candidate's keys/values are kept (written into the first candidate slot, the cache cropped
  to it), so the cache again holds the prefix plus one token, never k copies of anything. The cache keeps every
  slot of sliding layers too (the masks do the windowing), which costs memory on answers far longer than the window.
- **general** (the beam-search way): the model's own cache (sliding layers and all) is repeated k times along the
  batch for ONE ordinary one-token step of the k candidates, with the model's own masks from a 2D padding mask;
  then the chosen rows are kept (``Cache.reorder_cache``, what beam search uses, so recurrent and convolutional
  states of hybrid models follow too). Costs k x the cache for one step, and works for whatever a tree mask cannot
  express:
  ALiBi biases built from a 2D mask (Bloom) or from key slots (MPT), attention kinds nobody has checked.

Which way a model takes is decided once per model by ``tree_path_problem``, a short check of the tree way against the
model's own full forward on prefix+candidate (padding, several candidates, a kept candidate and a second step, and
more tokens than the smallest window when that window is small). The decoder (base model) and the cached reward
model (``panda_chat.rewards.reward_model``) each keep a ``PrefixCache``, which is why it lives here, below both.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import get_layer_types_and_kwargs

from panda_chat.grouped_attention import grouped_sdpa

log = logging.getLogger(__name__)

Path = Literal["tree", "general"]
PATHS: tuple[Path, ...] = ("tree", "general")

# Layer types whose mask the tree path can build: full causal attention, and causal attention over a sliding window.
_FULL, _SLIDING = "full_attention", "sliding_attention"


def prefill_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: real tokens count 0, 1, 2, ...; padding gets 0 (it is masked anyway).

    The same convention as ``transformers``' ``generate``, so a padded row is encoded exactly like the same prompt
    without padding.
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


# Per loaded model (weakly held: a process-wide registry, like the model registry): a server admits requests many
# times a second, and reading the layer types from the config each time showed in its profile.
_windows_of: weakref.WeakKeyDictionary[PreTrainedModel, dict[str, int | None] | None] = weakref.WeakKeyDictionary()


def attention_windows(model: PreTrainedModel) -> dict[str, int | None] | None:
    """The attention kinds of the model's layers, read the way ``transformers`` builds its own cache for it:
    {"full_attention": None, "sliding_attention": window}. None when a layer uses a kind the tree mask cannot
    express (chunked, linear, ... attention), or the config cannot be read that way."""
    if model not in _windows_of:
        _windows_of[model] = _read_attention_windows(model)
    return _windows_of[model]


def _read_attention_windows(model: PreTrainedModel) -> dict[str, int | None] | None:
    try:
        layer_types, layer_kwargs = get_layer_types_and_kwargs(model.config.get_text_config(decoder=True))
    except (AttributeError, TypeError, ValueError):
        return None
    windows: dict[str, int | None] = {}
    for layer_type, kwargs in zip(layer_types, layer_kwargs):
        if layer_type == _FULL:
            windows[_FULL] = None
        elif layer_type == _SLIDING and isinstance(kwargs.get("sliding_window"), int):
            if windows.setdefault(_SLIDING, kwargs["sliding_window"]) != kwargs["sliding_window"]:
                return None  # several window sizes: one mask per layer type cannot say it
        else:
            return None
    return windows or None


@dataclass
class SharedPrefix:
    """What a model's KV cache holds per row: which slots are real tokens, and the next position id of each row.

    The cache itself lives in the model's ``DynamicCache``; this object tracks the padding mask and positions that
    must accompany every forward on top of it.
    """

    attention_mask: torch.Tensor  # (B, P) long: 1 where the cached slot is a real token, 0 for left padding
    next_position: torch.Tensor  # (B,) long: position id of the token that comes next in each row

    @classmethod
    def from_prompt(cls, attention_mask: torch.Tensor) -> SharedPrefix:
        mask = attention_mask.long()
        return cls(attention_mask=mask, next_position=mask.sum(-1))

    @property
    def length(self) -> int:
        """Number of cached slots (padding included)."""
        return self.attention_mask.shape[1]

    def tree_mask(self, k: int, dtype: torch.dtype, window: int | None = None) -> torch.Tensor:
        """The 4D additive attention mask (B, 1, k, P + k) of k candidates per row.

        Each candidate attends to its row's real prefix tokens and to itself. With a ``window`` (a sliding-window
        layer), only to the prefix slots a query at slot P sees: those after P - window, as in ``transformers``'
        own sliding masks (which count cache slots; left padding is older than every real token, so it changes
        nothing).
        """
        batch, prefix_len = self.attention_mask.shape
        blocked = torch.finfo(dtype).min
        device = self.attention_mask.device
        hidden = self.attention_mask == 0
        if window is not None:
            too_old = torch.arange(prefix_len, device=device) <= prefix_len - window
            hidden = hidden | too_old[None, :]
        # Filled in place (one allocation, two masked fills): this runs at every step of personalised decoding.
        mask = torch.zeros(batch, 1, k, prefix_len + k, dtype=dtype, device=device)
        mask[..., :prefix_len].masked_fill_(hidden[:, None, None, :], blocked)
        mask[..., prefix_len:].masked_fill_(~torch.eye(k, dtype=torch.bool, device=device), blocked)
        return mask

    def tree_inputs(
        self, k: int, dtype: torch.dtype, windows: dict[str, int | None] | None = None
    ) -> tuple[torch.Tensor | dict[str, torch.Tensor], torch.Tensor]:
        """The attention mask and position ids (B, k) for k candidates per row; all k share the next position.

        The mask is one 4D tensor when every layer attends the same way, else a {layer type: 4D mask} mapping (the
        form hybrid models such as Gemma 2/3 accept for their full and sliding layers).
        """
        windows = windows or {_FULL: None}
        masks = {layer_type: self.tree_mask(k, dtype, window) for layer_type, window in windows.items()}
        positions = self.next_position[:, None].expand(self.attention_mask.shape[0], k)
        return (next(iter(masks.values())) if len(masks) == 1 else masks), positions

    def append_one(self) -> None:
        """Record that every row's cache grew by one real token (the chosen candidate, or a plain decode step)."""
        ones = torch.ones_like(self.attention_mask[:, :1])
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=-1)
        self.next_position = self.next_position + 1

    def decode_inputs(self, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """2D attention mask (B * repeat, P + 1) and position ids (B * repeat, 1) for a plain one-token step on top of
        the prefix (``repeat`` copies of each row for the general path's k candidates)."""
        ones = torch.ones_like(self.attention_mask[:, :1])
        mask = torch.cat([self.attention_mask, ones], dim=-1)
        positions = self.next_position[:, None]
        if repeat > 1:
            mask, positions = mask.repeat_interleave(repeat, 0), positions.repeat_interleave(repeat, 0)
        return mask, positions

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (e.g. drop finished rows from the batch)."""
        self.attention_mask = self.attention_mask[rows]
        self.next_position = self.next_position[rows]


def keep_chosen_candidate(cache: DynamicCache, prefix_length: int, chosen: torch.Tensor) -> None:
    """After a tree forward (cache = prefix + k candidates), keep only each row's ``chosen`` candidate.

    The chosen entry is copied into slot ``prefix_length`` (the first candidate slot) and the cache is cropped to
    ``prefix_length + 1`` (a view: no re-allocation of the prefix). It runs at every personalised step, so it is
    lean: one row (a chat turn) copies one slot per layer, and nothing when the first candidate was chosen; several
    rows take one gather per layer.
    """
    batch = chosen.shape[0]
    first = int(chosen[0]) if batch == 1 else None  # a host read the decoder makes at every step anyway
    index = None
    for layer in cache.layers:
        for name in ("keys", "values"):
            states = getattr(layer, name)  # (B, kv_heads, P + k, head_dim)
            if first is None:
                if index is None or index.shape[1:] != (states.shape[1], 1, states.shape[3]):
                    slots = (prefix_length + chosen).view(batch, 1, 1, 1)
                    index = slots.expand(batch, states.shape[1], 1, states.shape[3])
                states.narrow(2, prefix_length, 1).copy_(states.gather(2, index))
            elif first:
                states.narrow(2, prefix_length, 1).copy_(states.narrow(2, prefix_length + first, 1))
            setattr(layer, name, states.narrow(2, 0, prefix_length + 1))


def cache_bytes(cache: DynamicCache) -> int:
    """Bytes held by a cache's keys and values (views count at their visible size)."""
    total = 0
    for layer in cache.layers:
        for states in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(states, torch.Tensor):
                total += states.numel() * states.element_size()
    return total


def final_hidden(output) -> torch.Tensor:
    """The final (normed) hidden states of a backbone's output, or of a full model run with output_hidden_states."""
    hidden = output.get("last_hidden_state")
    return hidden if hidden is not None else output.hidden_states[-1]


def backbone_of(model: PreTrainedModel) -> torch.nn.Module:
    """The module that turns token ids into final hidden states (``LlamaModel`` in ``LlamaForCausalLM``).

    ``model.base_model`` names it for almost every class; a few declare a prefix they do not use (Llama 4's causal LM
    says ``language_model`` and keeps ``model``), where ``base_model`` is the model itself.
    """
    backbone = model.base_model
    if backbone is model:
        inner = getattr(model, "model", None)
        backbone = inner if isinstance(inner, torch.nn.Module) else model.get_decoder()
    return backbone


class PrefixCache:
    """A decoder's KV cache over a left-padded batch, with the forwards PANDA needs on top of it (tree or general).

    ``module`` is what each forward calls: the backbone (``backbone_of``, returning the final hidden states), or
    the full causal LM (the general path of the decoder, whose logits must come from the model's own forward). The
    methods return that module's output; ``final_hidden`` reads the hidden states from either.
    """

    def __init__(self, model: PreTrainedModel, path: Path, module: torch.nn.Module | None = None, **forward_options):
        if path not in PATHS:
            raise ValueError(f"unknown decoding path {path!r}: use one of {', '.join(PATHS)}")
        self.path = path
        self.module = module if module is not None else backbone_of(model)
        self.dtype = model.dtype
        self.forward_options = forward_options
        # The tree path keeps every slot of every layer (plain dynamic layers) and windows by mask; the general
        # path uses the very cache the model's own generate would (sliding layers crop themselves).
        self.cache = DynamicCache() if path == "tree" else DynamicCache(config=model.config)
        self.windows = attention_windows(model) if path == "tree" else None
        self.prefix: SharedPrefix | None = None
        self._repeated = 1  # general path: k while the cache holds k copies of each row (forward_candidates to keep)

    @property
    def filled_prefix(self) -> SharedPrefix:
        """The prefix state of the cached rows; there is none before ``prefill``."""
        if self.prefix is None:
            raise RuntimeError("PrefixCache: call prefill before stepping")
        return self.prefix

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, module: torch.nn.Module | None = None):
        """Encode the left-padded prompts (B, L) into the cache; return the output of the module (or of ``module``,
        e.g. the backbone where the cache's module is the full model) over them."""
        self.prefix = SharedPrefix.from_prompt(attention_mask)
        mask = self.prefix.attention_mask
        return self._forward(input_ids, mask, prefill_position_ids(mask), module=module)

    def step(self, tokens: torch.Tensor):
        """Append one token per row (B,); return the module's output for it (sequence length 1)."""
        attention_mask, positions = self.filled_prefix.decode_inputs()
        output = self._forward(tokens[:, None], attention_mask, positions)
        self.filled_prefix.append_one()
        return output

    def forward_candidates(self, candidate_ids: torch.Tensor):
        """Run k candidates per row (B, k) on the cached prefix; return the module's output, whose hidden states
        (and logits) are (B, k, ...) on the tree path and (B * k, 1, ...) on the general path. The cache holds the
        candidates until ``keep``."""
        batch, k = candidate_ids.shape
        if self.path == "tree":
            mask, positions = self.filled_prefix.tree_inputs(k, self.dtype, self.windows)
            return self._forward(candidate_ids, mask, positions)
        # transformers annotates beam indices with the legacy torch.LongTensor class; any int64 tensor is accepted.
        self.cache.reorder_cache(torch.arange(batch, device=candidate_ids.device).repeat_interleave(k))  # type: ignore[arg-type]
        self._repeated = k
        mask, positions = self.filled_prefix.decode_inputs(repeat=k)
        return self._forward(candidate_ids.reshape(batch * k, 1), mask, positions)

    def keep(self, chosen: torch.Tensor) -> None:
        """After ``forward_candidates``: keep each row's chosen candidate (B,) and drop the other k - 1."""
        if self.path == "tree":
            keep_chosen_candidate(self.cache, self.filled_prefix.length, chosen)
        else:
            rows = torch.arange(chosen.shape[0], device=chosen.device)
            self.cache.reorder_cache(rows * self._repeated + chosen)  # type: ignore[arg-type]  # legacy LongTensor
            self._repeated = 1
        self.filled_prefix.append_one()

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the batch ``rows`` (finished rows are dropped), also between ``forward_candidates`` and
        ``keep``."""
        copies = torch.arange(self._repeated, device=rows.device)
        self.cache.reorder_cache((rows[:, None] * self._repeated + copies).flatten())  # type: ignore[arg-type]
        self.filled_prefix.select_rows(rows)

    def _forward(self, input_ids: torch.Tensor, attention_mask, positions: torch.Tensor, module=None):
        options = self.forward_options if module is None else {}
        with grouped_sdpa():  # GQA layers skip copying their keys/values on the CPU (panda_chat.grouped_attention)
            return (module or self.module)(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=positions,
                cache=self.cache,
                use_cache=True,
                **options,
            )


# ---------------------------------------------------------------------------------------------- choosing the path

# Eight candidates: a bias that grows with the candidate's slot (ALiBi by key slot, MPT) is then far above the
# rounding noise of half precision (measured on tiny random models: MPT's error 0.14 vs. Llama's bfloat16 noise 0.002).
_CHECK_CANDIDATES = 8
_CHECK_PROMPT_TOKENS = 10
_LONGEST_CHECKED_WINDOW = 150  # the check's input outgrows windows up to this size (longer ones would cost too much)


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-3 if dtype == torch.float32 or dtype == torch.float64 else 2e-2


def _disagreement(fast: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype) -> float | None:
    """The relative max difference of two results when it is above the dtype's tolerance, else None."""
    fast, reference = fast.float(), reference.float()
    scale = 1.0 + reference.abs().max().item()
    difference = (fast - reference).abs().max().item() / scale
    return difference if not difference <= _tolerance(dtype) else None


@torch.inference_mode()
def tree_path_problem(
    model: PreTrainedModel, logits_of: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> str | None:
    """Why the tree path would not reproduce ``model``'s own forward, or None when it does.

    Two rows (one left-padded), a prefill, ``_CHECK_CANDIDATES`` candidates with the tree mask, keeping the second
    one, and a second candidate step; each candidate's final hidden state is compared with the backbone's own forward
    on the unpadded prefix+candidate. With ``logits_of`` (how the decoder turns a final hidden state into logits),
    those logits are compared with the full model's own ``logits`` too.
    """
    windows = attention_windows(model)
    if windows is None:
        return "its layers use an attention kind the tree mask cannot express"
    smallest = min((w for w in windows.values() if w is not None), default=None)
    length = _CHECK_PROMPT_TOKENS
    if smallest is not None and smallest <= _LONGEST_CHECKED_WINDOW:
        length = max(length, smallest + 3)
    vocab = cast(torch.Tensor, model.get_input_embeddings().weight).shape[0]  # an embedding's weight is a tensor
    device = model.device
    generator = torch.Generator().manual_seed(0)
    # Ids from the middle of the vocabulary: far from the special tokens, which some models treat specially.
    low, high = min(vocab // 4, 100), max(vocab // 2, 2)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=generator).to(device)

    prompts = draw(2, length)
    pad = 3
    attention_mask = torch.ones(2, length, dtype=torch.long, device=device)
    attention_mask[1, :pad] = 0
    sequences = [prompts[0].tolist(), prompts[1, pad:].tolist()]
    kv = PrefixCache(model, "tree")
    try:
        kv.prefill(prompts, attention_mask)
        for _step in range(2):
            candidates = draw(2, _CHECK_CANDIDATES)
            hidden = final_hidden(kv.forward_candidates(candidates))
            for row in range(2):
                full = torch.tensor([sequences[row] + [c] for c in candidates[row].tolist()], device=device)
                reference = backbone_of(model)(input_ids=full)
                difference = _disagreement(hidden[row], final_hidden(reference)[:, -1], model.dtype)
                if difference is not None:
                    return f"tree-masked hidden states differ from its own forward (relative {difference:.2g})"
                if logits_of is not None:
                    own_logits = model(input_ids=full, logits_to_keep=1).logits[:, -1]
                    difference = _disagreement(logits_of(hidden[row]), own_logits, model.dtype)
                    if difference is not None:
                        return f"logits from the final hidden state differ from its own (relative {difference:.2g})"
            chosen = torch.tensor([1, _CHECK_CANDIDATES - 1], device=device)
            kv.keep(chosen)
            for row in range(2):
                sequences[row].append(int(candidates[row, chosen[row]]))
    except Exception as error:  # noqa: BLE001 - any failure of the fast path on this model means: the general path
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"the tree forward fails: {type(error).__name__}: {first_line}"[:300]
    return None


class _PathMemo:
    """The path each loaded model takes, decided once per (model, dtype, check): a process-wide cache (weak keys,
    so it never keeps a model alive), like the model registry it sits beside."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, model: PreTrainedModel, check: str, decide: Callable[[], str | None]) -> str | None:
        key = (str(model.dtype), str(model.device), check)
        with self._lock:
            found = self._memo.get(model, {})
            if key in found:
                return found[key]
        problem = decide()
        with self._lock:
            self._memo.setdefault(model, {})[key] = problem
        return problem


PATH_MEMO = _PathMemo()


def choose_path(
    model: PreTrainedModel,
    requested: str | None = "auto",
    logits_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Path:
    """The path ``model`` takes: ``"auto"`` (or None) is the checked choice, logged once per model at debug level
    when it is the general path; ``"general"`` is always allowed; ``"tree"`` only when the check passes, so a forced
    fast path is never silently wrong. ``logits_of``: see ``tree_path_problem`` (the decoder's base model passes it,
    a reward model, whose score head is a plain linear map, does not)."""
    requested = requested or "auto"
    if requested not in ("auto", *PATHS):
        raise ValueError(f"unknown decoding path {requested!r}: use auto, tree or general")
    if requested == "general":
        return "general"

    def decide() -> str | None:
        problem = tree_path_problem(model, logits_of)
        if problem is not None:
            log.debug("%s takes the general path: %s", type(model).__name__, problem)
        return problem

    problem = PATH_MEMO.get(model, "with logits" if logits_of is not None else "hidden states", decide)
    if problem is not None and requested == "tree":
        raise ValueError(f"the tree path is not exact for {type(model).__name__}: {problem}")
    return "tree" if problem is None else "general"
