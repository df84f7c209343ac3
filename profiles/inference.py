"""``PreferenceInference``: from a user's message vectors (and feedback) to a ``PreferenceContext``.

Pure computation: the store gathers the rows, this module turns them into weights. For each dimension:

1. Each pole has a prototype, the normalised mean embedding of its description and examples.
2. A message's similarity to each prototype is centred on what a *neutral* request scores (``NEUTRAL_TEXTS``), so
   generic messages ("can you recommend a book?") say little. Its vote is a softmax over the centred similarities;
   its strength grows with how far its best pole stands above the neutral baseline.
3. Strengths are multiplied by recency (half-life in days, measured back from the user's latest item) and, with a
   query, by topic relevance (``exp((cos(m, q) - max cos) / topic_temperature)``: the messages most related to the
   query count fully, unrelated ones little), so preferences can differ by topic.
4. Feedback is evidence too: for a chosen/rejected pair, the chosen text's centred similarity minus the rejected
   one's; for a rating, the response's own similarities, pointing away from its poles when the rating is negative.
5. Weights are a Dirichlet posterior mean (uniform prior of ``prior_strength`` pseudo-votes); confidence is
   ``n / (n + confidence_scale)`` for the total evidence strength ``n``. No evidence: neutral, confidence 0.

Explicit settings override a dimension outright (its pole gets weight 1, confidence 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, ConfigDict

from profiles.catalog import PreferenceCatalog
from profiles.context import DimensionPreference, Evidence, PreferenceContext
from profiles.embedders import Embedder, encode_normalised

_SECONDS_PER_DAY = 86_400.0
_MIN_EVIDENCE = 0.02  # weaker contributions are noise, not worth showing as evidence

NEUTRAL_TEXTS = (
    "Can you recommend a good book?",
    "What's the weather like tomorrow?",
    "How do I convert a PDF to a Word document?",
    "What time zone is Tokyo in?",
    "Tell me about the history of Rome.",
    "Which is bigger, a lion or a tiger?",
    "How do I reset my router?",
    "What should I cook for dinner tonight?",
    "Where is the Eiffel Tower?",
    "Can you help me plan a trip to Spain?",
    "What does this error message mean?",
    "How many ounces are in a pound?",
)


class InferenceSettings(BaseModel):
    """The knobs of inference; the defaults suit all-MiniLM-L6-v2."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    half_life_days: float = 30.0
    vote_temperature: float = 0.05
    strength_scale: float = 0.2
    topic_temperature: float = 0.1
    prior_strength: float = 1.0
    confidence_scale: float = 3.0
    feedback_weight: float = 2.0
    evidence_per_dimension: int = 3
    max_messages: int = 2000


@dataclass(frozen=True)
class MessageRows:
    """A user's messages as inference needs them: ids, UTC epoch seconds, normalised vectors (one row each)."""

    ids: np.ndarray
    times: np.ndarray
    vectors: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> MessageRows:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros((0, dim), np.float32))


@dataclass(frozen=True)
class FeedbackRow:
    """One feedback item: ``positive`` is the chosen (or rated) response's vector, ``negative`` the rejected one's
    (None for a rating); ``rating`` is in [-1, 1] (1 for a pair)."""

    feedback_id: int
    message_id: int | None
    time: float
    text: str
    prompt: np.ndarray
    positive: np.ndarray
    negative: np.ndarray | None
    rating: float


@dataclass(frozen=True)
class _Signals:
    votes: np.ndarray  # (n, poles)
    strength: np.ndarray  # (n,)


class PreferenceInference:
    """Infers a ``PreferenceContext`` for one catalog and one embedder (prototypes are embedded once, here)."""

    def __init__(
        self, catalog: PreferenceCatalog, embedder: Embedder, settings: InferenceSettings | None = None
    ) -> None:
        self.catalog = catalog
        self.settings = settings or InferenceSettings()
        neutral = encode_normalised(embedder, list(NEUTRAL_TEXTS))
        self._prototypes: dict[str, np.ndarray] = {}
        self._baselines: dict[str, np.ndarray] = {}
        for dimension in catalog.dimensions:
            rows = []
            for pole in dimension.poles:
                vectors = encode_normalised(embedder, [pole.description, *pole.examples])
                mean = vectors.mean(axis=0)
                rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            prototypes = np.stack(rows).astype(np.float32)
            self._prototypes[dimension.name] = prototypes
            self._baselines[dimension.name] = (neutral @ prototypes.T).mean(axis=0)

    def infer(
        self,
        user_id: str,
        messages: MessageRows,
        *,
        feedback: Sequence[FeedbackRow] = (),
        explicit: Mapping[str, str] | None = None,
        query: str | None = None,
        query_vector: np.ndarray | None = None,
        texts: Callable[[list[int]], Mapping[int, str]] = lambda ids: {},
    ) -> PreferenceContext:
        """The context for ``user_id``; ``texts`` fetches message texts for the evidence shown."""
        settings = self.settings
        explicit = dict(explicit or {})
        feedback = list(feedback)
        times = np.concatenate([messages.times, np.array([row.time for row in feedback], dtype=np.float64)])
        latest = float(times.max()) if len(times) else 0.0
        half_life = settings.half_life_days * _SECONDS_PER_DAY
        recency = np.power(0.5, (latest - times) / half_life) if len(times) else times

        topic = np.ones(len(times))
        if query_vector is not None and len(times):
            related = np.concatenate(
                [messages.vectors @ query_vector, np.array([row.prompt @ query_vector for row in feedback])]
            )
            topic = np.exp((related - related.max()) / settings.topic_temperature)
        weight = recency * topic

        dimensions: dict[str, DimensionPreference] = {}
        candidates: list[tuple[float, int, str, str]] = []  # (score, row, dimension, pole)
        for dimension in self.catalog.dimensions:
            poles = dimension.pole_names
            if dimension.name in explicit:
                chosen = explicit[dimension.name]
                dimensions[dimension.name] = DimensionPreference(
                    weights={pole: float(pole == chosen) for pole in poles}, confidence=1.0, source="explicit"
                )
                continue
            signals = self._message_signals(dimension.name, messages.vectors)
            feedback_signals = self._feedback_signals(dimension.name, feedback)
            votes = np.concatenate([signals.votes, feedback_signals.votes])
            strength = np.concatenate([signals.strength, feedback_signals.strength]) * weight
            total = float(strength.sum())
            if total <= 1e-9:
                dimensions[dimension.name] = DimensionPreference(
                    weights={pole: 1.0 / len(poles) for pole in poles}, confidence=0.0, source="neutral"
                )
                continue
            mass = strength @ votes
            prior = settings.prior_strength
            posterior = (mass + prior / len(poles)) / (total + prior)
            dimensions[dimension.name] = DimensionPreference(
                weights={pole: float(value) for pole, value in zip(poles, posterior / posterior.sum(), strict=True)},
                confidence=float(total / (total + settings.confidence_scale)),
                source="inferred",
            )
            best_rows = np.argsort(-strength)[: settings.evidence_per_dimension]
            candidates.extend(
                (float(strength[row]), int(row), dimension.name, poles[int(votes[row].argmax())])
                for row in best_rows
                if strength[row] > _MIN_EVIDENCE
            )

        return PreferenceContext.build(
            self.catalog,
            user_id=user_id,
            query=query,
            dimensions=dimensions,
            evidence=self._evidence(candidates, messages, feedback, texts),
        )

    def _message_signals(self, dimension: str, vectors: np.ndarray) -> _Signals:
        centred = vectors @ self._prototypes[dimension].T - self._baselines[dimension]
        return self._signals(centred)

    def _feedback_signals(self, dimension: str, feedback: list[FeedbackRow]) -> _Signals:
        poles = len(self._prototypes[dimension])
        if not feedback:
            return _Signals(np.zeros((0, poles)), np.zeros(0))
        prototypes, baseline = self._prototypes[dimension], self._baselines[dimension]
        rows = []
        for item in feedback:
            if item.negative is not None:
                rows.append(prototypes @ item.positive - prototypes @ item.negative)
            else:
                rows.append(np.sign(item.rating) * (prototypes @ item.positive - baseline))
        signals = self._signals(np.stack(rows))
        scale = np.array([self.settings.feedback_weight * min(abs(item.rating), 1.0) for item in feedback])
        return _Signals(signals.votes, signals.strength * scale)

    def _signals(self, centred: np.ndarray) -> _Signals:
        """Votes (softmax of centred similarities) and strengths (how far the best pole stands out)."""
        logits = centred / self.settings.vote_temperature
        logits -= logits.max(axis=1, keepdims=True)
        votes = np.exp(logits)
        votes /= votes.sum(axis=1, keepdims=True)
        strength = np.clip(centred.max(axis=1) / self.settings.strength_scale, 0.0, 1.0)
        return _Signals(votes, strength)

    @staticmethod
    def _evidence(
        candidates: list[tuple[float, int, str, str]],
        messages: MessageRows,
        feedback: list[FeedbackRow],
        texts: Callable[[list[int]], Mapping[int, str]],
    ) -> list[Evidence]:
        count = len(messages.ids)
        message_ids = sorted({int(messages.ids[row]) for _, row, _, _ in candidates if row < count})
        found = texts(message_ids) if message_ids else {}
        evidence = []
        for score, row, dimension, pole in sorted(candidates, key=lambda item: -item[0]):
            if row < count:
                message_id = int(messages.ids[row])
                evidence.append(
                    Evidence(
                        message_id=message_id, text=found.get(message_id, ""), score=score, dimension=dimension,
                        pole=pole, kind="message", created_at=_utc(messages.times[row]),
                    )
                )
            else:
                item = feedback[row - count]
                evidence.append(
                    Evidence(
                        message_id=item.message_id, text=item.text, score=score, dimension=dimension, pole=pole,
                        kind="feedback", created_at=_utc(item.time),
                    )
                )
        return evidence


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(float(epoch_seconds), tz=UTC)
