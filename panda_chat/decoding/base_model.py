"""The base model pi_b during one generate call: its KV cache, and the three kinds of forward the engine needs.

- ``prefill``: the left-padded prompts once; returns the first step's logits and the prompt features lambda uses.
- ``advance``: one chosen token per row (plain decoding, and the external-reward-model path).
- ``expand`` + ``keep``: the k candidates of every row in ONE forward (shared-backbone heads need the base model's
  hidden state at each candidate); after the choice ``keep`` drops the other candidates from the cache and returns
  the next step's logits for the chosen one, so the chosen token never needs a forward of its own.

It also keeps, per row, the final hidden state of the last token and the running sum of the final hidden states of
the answer's tokens (whichever forward chose them), so ``answer_means`` gives ``"last+mean"`` reward heads the mean
over the answer plus each candidate exactly, for one addition per step, and ``prefix_features`` gives
``"prefix+token"`` heads all they read without any forward of the candidates.

Logits always come from the model's own output processing (Granite's logit scaling, Cohere's logit scale, Gemma 2/3's
final soft-capping, whatever a future family adds), never from a re-implementation of it:

- on the **tree** path (``panda_chat.tree_attention``) the backbone runs, and ``OwnOutputHead`` runs the model's own
  ``forward`` from the final hidden state on, for the rows that need logits only (the last prompt token, the chosen
  candidate): never for all k candidates or all prompt positions. The path check compares these logits with the
  model's own forward, so a model whose forward does something else takes the general path;
- on the **general** path the full model runs (``model(...)``): logits for the k candidates of every row, of which
  one per row is used (that costs k x the LM head; the benchmark shows it). Its prefill runs the prompt through
  the backbone and only the last prompt token through the full model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel

from panda_chat.rewards.base import CandidateBatch, RewardSource
from panda_chat.tree_attention import Path, PrefixCache, backbone_of, choose_path, final_hidden


class _BackboneOutput(dict):
    """What the stand-in backbone returns: the given final hidden states, as attribute, key and index 0."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__(last_hidden_state=hidden)

    def __getattr__(self, name: str):
        return self.get(name)  # e.g. ``cache``, ``hidden_states``, ``router_logits``: None

    def __getitem__(self, key):
        return self["last_hidden_state"] if key == 0 else super().__getitem__(key)


class _GivenHidden:
    """Stands in for the backbone inside the model's own forward and returns the hidden states it was given.

    Any attribute is itself, so forwards that call a sub-module of the backbone (OPT: ``self.model.decoder(...)``)
    get it too.
    """

    def __init__(self, hidden: torch.Tensor):
        self.hidden = hidden

    def __call__(self, *args, **kwargs) -> _BackboneOutput:
        return _BackboneOutput(self.hidden)

    def __getattr__(self, name: str):
        return self


class _WithBackbone:
    """The model, seen by its own ``forward``, with the backbone attribute replaced (the model itself is untouched,
    so concurrent calls on the shared weights are safe)."""

    def __init__(self, model: PreTrainedModel, attribute: str, backbone: _GivenHidden):
        self.__dict__["_model"] = model
        self.__dict__[attribute] = backbone

    def __getattr__(self, name: str):
        return getattr(self.__dict__["_model"], name)


class OwnOutputHead:
    """Logits (N, V) from final hidden states (N, H), through the model's own forward after its backbone."""

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self.forward = type(model).forward
        backbone = backbone_of(model)
        # The attribute the forward calls the backbone through (None: not a direct child; the path check then fails).
        self.attribute = next((name for name, child in model.named_children() if child is backbone), None)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.attribute is None:
            raise TypeError(f"{type(self.model).__name__}: its backbone is not a direct attribute of the model")
        view = _WithBackbone(self.model, self.attribute, _GivenHidden(hidden[:, None]))
        dummy_ids = torch.zeros(hidden.shape[0], 1, dtype=torch.long, device=hidden.device)
        return self.forward(view, input_ids=dummy_ids, logits_to_keep=1, return_dict=True).logits[:, -1]


def resolve_path(model: PreTrainedModel, requested: str = "auto") -> Path:
    """The decoder's path for ``model`` (see ``tree_attention.choose_path``); its check includes the logits."""
    return choose_path(model, requested, OwnOutputHead(model))


class BaseModelSession:
    """The base model (the paper's policy pi_b) for one ``generate`` call, as a ``RewardSession`` is a reward's: its KV
    cache over the batch and the forwards of the module docstring. The engine calls it ``policy``."""

    def __init__(self, model: PreTrainedModel, path: Path | None = None):
        self.path = path or resolve_path(model)
        if self.path == "tree":
            self.kv = PrefixCache(model, "tree")
            self.output_head: OwnOutputHead | None = OwnOutputHead(model)
        else:
            # The full model, for its own logits (of the last position only) and its final hidden states.
            self.kv = PrefixCache(model, "general", module=model, output_hidden_states=True, logits_to_keep=1)
            self.output_head = None
        self.backbone = backbone_of(model)
        self._candidate_hidden: torch.Tensor | None = None
        self._candidate_logits: torch.Tensor | None = None
        # (B, H) float32 sum of the final hidden states of each row's answer tokens, and (B,) how many there are
        self.answer_sum: torch.Tensor | None = None
        self.answer_length: torch.Tensor | None = None
        self.last_hidden: torch.Tensor | None = None  # (B, H) final hidden state of each row's last token
        self.embedding = model.get_input_embeddings()

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the prompts; return next-token logits (B, V) and the mean prompt hidden state (B, H)."""
        if self.output_head is None and input_ids.shape[1] > 1:
            # General path: the backbone encodes all but the last prompt token (the full model would keep every
            # layer's hidden states of the whole prompt to return the final ones), the full model the last token,
            # which every left-padded row has, for its own logits.
            first = final_hidden(self.kv.prefill(input_ids[:, :-1], attention_mask[:, :-1], module=self.backbone))
            output = self.kv.step(input_ids[:, -1])
            hidden = torch.cat([first, final_hidden(output)], dim=1)
        else:
            output = self.kv.prefill(input_ids, attention_mask)
            hidden = final_hidden(output)
        real = self.kv.filled_prefix.attention_mask[..., None].to(hidden.dtype)
        prompt_features = (hidden * real).sum(1) / real.sum(1).clamp(min=1)
        self.answer_sum = hidden.new_zeros(hidden.shape[0], hidden.shape[-1], dtype=torch.float32)
        self.answer_length = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        self.last_hidden = hidden[:, -1]  # left-padded: every row's last prompt token
        return self._last_logits(output), prompt_features.float()

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row (B,); return the next logits (B, V)."""
        output = self.kv.step(tokens)
        self._add_to_answer(final_hidden(output)[:, -1])
        return self._last_logits(output)

    def answer_means(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, k, H) mean final hidden state over each row's answer so far plus each candidate, from ``expand``'s
        candidate hidden states: what a ``"last+mean"`` head reads for the answer cut after that candidate."""
        if self.answer_sum is None or self.answer_length is None:
            raise RuntimeError("BaseModelSession.answer_means: call prefill first")
        total = self.answer_sum[:, None, :] + hidden.float()
        return (total / (self.answer_length[:, None, None] + 1)).to(hidden.dtype)

    def candidate_batch(
        self, candidate_ids: torch.Tensor, sources: Sequence[RewardSource], **fields: Any
    ) -> CandidateBatch:
        """A step's ``CandidateBatch`` (``fields``: step, generated_ids, active) with the base model's states that
        ``sources`` read: the candidates' own and their answer means (one forward of the k candidates, ``expand``;
        ``keep`` must follow) and/or the state before them (``prefix_features``, no forward). The one place the
        engine and the batch scheduler decide which forward a step runs."""
        hidden = self.expand(candidate_ids) if any(s.needs_base_hidden for s in sources) else None
        before: tuple[torch.Tensor | None, ...] = (None, None, None)
        if any(s.needs_prefix_hidden for s in sources):
            before = self.prefix_features(candidate_ids)
        return CandidateBatch(
            candidate_ids=candidate_ids,
            base_hidden=hidden,
            base_hidden_mean=self.answer_means(hidden) if hidden is not None else None,
            prefix_hidden=before[0],
            prefix_mean=before[1],
            candidate_embeddings=before[2],
            **fields,
        )

    def prefix_features(self, candidate_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What ``"prefix+token"`` heads read for the candidates (B, k): (B, H) each row's last final hidden state,
        (B, H) the mean of them over the answer so far (zeros before its first token) and (B, k, H) the
        candidates' input embeddings (the model's own embedding module, as ``heads.token_embeddings``)."""
        if self.answer_sum is None or self.answer_length is None or self.last_hidden is None:
            raise RuntimeError("BaseModelSession.prefix_features: call prefill first")
        mean = self.answer_sum / self.answer_length.clamp(min=1)[:, None]
        return self.last_hidden, mean.to(self.last_hidden.dtype), self.embedding(candidate_ids)

    def _add_to_answer(self, hidden: torch.Tensor) -> None:
        """Count the chosen tokens' final hidden states (B, H) into the answers' running sums; they are the rows'
        last states now."""
        if self.answer_sum is None or self.answer_length is None:
            raise RuntimeError("BaseModelSession: call prefill first")
        self.answer_sum = self.answer_sum + hidden.float()
        self.answer_length = self.answer_length + 1
        self.last_hidden = hidden

    def expand(self, candidate_ids: torch.Tensor) -> torch.Tensor:
        """Run the k candidates of every row (B, k) on the cached prefix; return their hidden states (B, k, H)."""
        batch, k = candidate_ids.shape
        output = self.kv.forward_candidates(candidate_ids)
        self._candidate_hidden = final_hidden(output).reshape(batch, k, -1)
        if self.output_head is None:
            self._candidate_logits = output.logits.reshape(batch, k, -1)
        return self._candidate_hidden

    def keep(self, chosen: torch.Tensor) -> torch.Tensor:
        """Keep each row's chosen candidate (B,) after ``expand``; return the next logits (B, V)."""
        self.kv.keep(chosen)
        rows = torch.arange(chosen.shape[0], device=chosen.device)
        if self._candidate_hidden is None:
            raise RuntimeError("BaseModelSession.keep: call expand first")
        chosen_hidden = self._candidate_hidden[rows, chosen]  # (B, H): the answer's new last state
        self._add_to_answer(chosen_hidden)
        if self.output_head is None:
            if self._candidate_logits is None:
                raise RuntimeError("BaseModelSession.keep: call expand first")
            return self._candidate_logits[rows, chosen]
        return self.output_head(chosen_hidden)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` of the batch (finished rows are dropped)."""
        self.kv.select_rows(rows)
        if self.answer_sum is not None and self.answer_length is not None:
            self.answer_sum, self.answer_length = self.answer_sum[rows], self.answer_length[rows]
        if self.last_hidden is not None:
            self.last_hidden = self.last_hidden[rows]
        if self._candidate_hidden is not None:
            self._candidate_hidden = self._candidate_hidden[rows]
        if self._candidate_logits is not None:
            self._candidate_logits = self._candidate_logits[rows]

    def _last_logits(self, output) -> torch.Tensor:
        if self.output_head is None:
            return output.logits[:, -1]
        return self.output_head(final_hidden(output)[:, -1])
