"""Scoring finished responses: R(x, y), the base model's NLL and degeneration, for whatever decoded them.

The decoder records rewards only while it steers (a call whose lambdas are all 0 scores nothing), and evaluation must
measure every method on the same scale, so responses are re-scored here, teacher-forced through the very
``RewardSession`` contract the decoder uses: the sessions are started on the same prompt batch, and at step t each is
shown the response's actual token t as the only candidate and told it was chosen. Every reward source (heads, cached
reward models, text rewards) therefore gives exactly the reward it gave, or would have given, during decoding.

One right-padded forward of the base model over prompt + response gives both the per-token NLL and the hidden state
at every response token (what reward heads read). ``R(x, y)`` is the combined calibrated reward at the response's
last token, a final EOS excluded (the reward of the complete text, not of the end marker).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from panda_chat.decoding import GenerationOutput, PandaDecoder
from panda_chat.decoding.steering import SteeringPlan
from panda_chat.evaluation.objective import ScoredResponse
from panda_chat.metrics import diversity
from panda_chat.padding import pad_token_id, right_pad
from panda_chat.rewards.base import CandidateBatch
from panda_chat.rewards.heads import running_means, token_embeddings

Weights = Mapping[str, float] | Sequence[Mapping[str, float]] | None


def degeneration(text: str) -> float:
    """D(y) = 1 - diversity([y]): 0 without repeated 2/3/4-grams, towards 1 for a loop."""
    return 1.0 - diversity([text])


class ResponseScorer:
    """Scores (prompt, response) pairs with a decoder's base model and reward sources."""

    def __init__(self, decoder: PandaDecoder, batch_size: int = 16):
        self.decoder = decoder
        self.batch_size = batch_size

    def score(
        self, prompts: Sequence[str], outputs: Sequence[GenerationOutput], weights: Weights = None
    ) -> list[ScoredResponse]:
        """One ``ScoredResponse`` per (prompt, output); ``weights`` as in ``PandaDecoder.generate``."""
        if len(prompts) != len(outputs):
            raise ValueError("one output per prompt is needed")
        scored: list[ScoredResponse] = []
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            chunk_weights = list(weights[start:stop]) if isinstance(weights, Sequence) else weights
            scored += self._score_chunk(list(prompts[start:stop]), list(outputs[start:stop]), chunk_weights)
        return scored

    @torch.inference_mode()
    def _score_chunk(
        self, prompts: list[str], outputs: list[GenerationOutput], weights: Weights
    ) -> list[ScoredResponse]:
        decoder, model = self.decoder, self.decoder.model
        device = decoder.device
        batch = decoder.encode_prompts(prompts)
        mask = batch.attention_mask.bool()
        prompt_ids = [batch.input_ids[b][mask[b]].tolist() for b in range(len(prompts))]
        responses = [list(o.token_ids) for o in outputs]
        hidden = self._hidden_states([p + r for p, r in zip(prompt_ids, responses)])  # (B, L, H)

        nll = []
        lm_head = model.get_output_embeddings()
        for b, (p, r) in enumerate(zip(prompt_ids, responses)):
            if not r:
                nll.append(0.0)
                continue
            logits = lm_head(hidden[b, len(p) - 1 : len(p) + len(r) - 1]).float()  # position i predicts token i+1
            logp = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(r, device=device)[:, None])
            nll.append(float(-logp.mean()))

        token_rewards = self._token_rewards(batch, prompt_ids, responses, hidden, weights)
        eos = decoder.eos_token_ids()
        result = []
        for o, r, rewards, n in zip(outputs, responses, token_rewards, nll):
            last = len(r) - 1
            if last >= 1 and r[-1] in eos:
                last -= 1
            result.append(
                ScoredResponse(
                    reward=rewards[last] if last >= 0 else 0.0,
                    nll=n,
                    degeneration=degeneration(o.text),
                    token_rewards=rewards,
                )
            )
        return result

    def _hidden_states(self, sequences: list[list[int]]) -> torch.Tensor:
        """(B, L, H) final normed hidden states of right-padded sequences (exactly as if each ran alone)."""
        ids, attn = right_pad(sequences, pad_token_id(self.decoder.tokenizer))
        model = self.decoder.model
        return model.base_model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device)).last_hidden_state

    def _token_rewards(self, batch, prompt_ids, responses, hidden, weights) -> list[list[float]]:
        """Per row, the combined reward of each response token's prefix, teacher-forced through the sessions."""
        size = len(responses)
        plan = SteeringPlan.build(self.decoder.rewards, weights, 1.0, size).to(self.decoder.device)
        longest = max((len(r) for r in responses), default=0)
        if not plan.sources or longest == 0:
            return [[0.0] * len(r) for r in responses]
        sessions = [source.start(batch) for source in plan.sources]
        needs_hidden = any(source.needs_base_hidden for source in plan.sources)
        needs_prefix = any(source.needs_prefix_hidden for source in plan.sources)
        device = self.decoder.device
        out: list[list[float]] = [[] for _ in responses]
        pad = pad_token_id(self.decoder.tokenizer)  # fills the rows whose response has ended
        means = _answer_means(hidden, prompt_ids, responses, longest) if needs_hidden or needs_prefix else None
        rows = torch.arange(size, device=hidden.device)
        starts = torch.tensor([len(p) for p in prompt_ids], device=hidden.device)  # each response's first position
        for t in range(longest):
            active = [t < len(r) for r in responses]
            tokens = torch.tensor([r[t] if t < len(r) else pad for r in responses], device=device)
            base_hidden = base_mean = prefix_hidden = prefix_mean = embeddings = None
            # an ended response is read at its last token, as at its end
            at = torch.tensor([min(t, max(len(r) - 1, 0)) for r in responses], device=hidden.device)
            if needs_hidden and means is not None:
                base_hidden = hidden[rows, starts + at][:, None, :]
                base_mean = means[rows, at][:, None, :]
            if needs_prefix and means is not None:  # what prefix+token heads read: the state before the token
                prefix_hidden = hidden[rows, starts + at - 1]
                before = means[rows, (at - 1).clamp(min=0)]
                prefix_mean = torch.where((at > 0)[:, None], before, torch.zeros_like(before))
                last_tokens = [r[min(t, len(r) - 1)] if r else pad for r in responses]
                embeddings = token_embeddings(self.decoder.model, torch.tensor(last_tokens, device=device)[:, None])
            candidates = CandidateBatch(
                step=t,
                candidate_ids=tokens[:, None],
                generated_ids=[r[:t] for r in responses],
                active=torch.tensor(active, device=device),
                base_hidden=base_hidden,
                base_hidden_mean=base_mean,
                prefix_hidden=prefix_hidden,
                prefix_mean=prefix_mean,
                candidate_embeddings=embeddings,
            )
            raw = torch.stack([session.score(candidates) for session in sessions], dim=-1)  # (B, 1, R)
            combined = plan.combine(raw, clip=None)[:, 0].tolist()  # measured as calibrated, not as steered
            for session in sessions:
                session.commit(torch.zeros(size, dtype=torch.long, device=device))
            for b in range(size):
                if active[b]:
                    out[b].append(combined[b])
        return out


def _answer_means(hidden: torch.Tensor, prompt_ids, responses, longest: int) -> torch.Tensor:
    """(B, longest, H): row b, step t is the mean hidden state over response b's tokens 0..t (what ``"last+mean"``
    heads read at t, and ``"prefix+token"`` heads at t + 1); a response that has ended repeats its last mean."""
    rows = []
    for b, (prompt, response) in enumerate(zip(prompt_ids, responses)):
        states = hidden[b, len(prompt) : len(prompt) + max(len(response), 1)].float()
        if states.shape[0] == 0:  # an empty response at the end of the batch's longest sequence: nothing to read
            states = hidden.new_zeros(1, hidden.shape[-1], dtype=torch.float32)
        last = torch.tensor([min(t, states.shape[0] - 1) for t in range(longest)], device=hidden.device)
        rows.append(running_means(states)[last].to(hidden.dtype))
    return torch.stack(rows)
