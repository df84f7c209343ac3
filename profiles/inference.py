"""``PreferenceInference``: from a user's message vectors (and feedback) to a ``PreferenceContext``.

Pure computation: the store gathers the rows, this module turns them into weights. For each dimension:

1. A message's score for a pole is its mean cosine similarity to the pole's ``exemplar_top_k`` nearest exemplars
   (the description and the examples). Nearest exemplars, not one mean prototype: a message that matches one
   distinctive example ("tl;dr please") scores high, where a mean over all examples would dilute it.
2. Scores are centred on what *neutral* requests score (``NEUTRAL_TEXTS``: plain "how does X work?", "explain X",
   "what is X?" questions on many topics). Sentence embeddings mix topic and style, and a plain question lands near
   some poles' examples ("explain ...", "walk me through ...") for its form alone; centring removes that pull.
3. A message's vote is a softmax over its centred scores. Its strength is the *contrast*: how far its best pole
   stands above the runner-up, beyond a margin (the ``neutral_margin_quantile`` of the contrasts the neutral
   requests themselves reach), over ``strength_scale``. A message equally near two poles of a dimension says nothing
   about it, however near both it is, and the margin keeps ordinary questions from counting as evidence.
4. Strengths are multiplied by recency (half-life in days, measured back from the user's latest item) and, with a
   query, by topic relevance (``exp((cos(m, q) - max cos) / topic_temperature)``: the messages most related to the
   query count fully, unrelated ones little), so preferences can differ by topic. A stored message that *is* the
   query (cosine >= ``_SAME_TEXT``: the turn being answered, recorded before inference) counts for nothing and is
   left out of the maximum: otherwise it would match itself with cosine 1 and cut every past message to ~1e-4.
   Topic weighting decides which way the evidence points, not how much of it there is: the topic-weighted votes
   are rescaled to the user's whole evidence on the dimension (recency-weighted), so a question on a new topic
   is answered with the confidence the user's history has earned, in the direction of its most related messages.
5. Feedback is evidence too: for a chosen/rejected pair, the chosen text's scores minus the rejected one's; for a
   rating, the response's own centred scores, pointing away from its poles when the rating is negative.
6. Weights are a Dirichlet posterior mean (uniform prior of ``prior_strength`` pseudo-votes); confidence is
   ``n / (n + confidence_scale)`` for the total evidence strength ``n`` (recency-weighted, every topic). No
   evidence: neutral, confidence 0.

Explicit settings override a dimension outright (its pole gets weight 1, confidence 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from profiles.catalog import PreferenceCatalog
from profiles.context import DimensionPreference, Evidence, PreferenceContext
from profiles.embedders import Embedder, encode_normalised

_SECONDS_PER_DAY = 86_400.0
_MIN_EVIDENCE = 0.02  # weaker contributions are noise, not worth showing as evidence
# A stored message this similar to the query is the query itself (ChatPanda records a turn before inferring): it is
# neither evidence nor the topic maximum, else it matches itself with cosine 1 and drowns the user's history.
_SAME_TEXT = 0.9999

NEUTRAL_TEXTS = (
    # Requests that signal no preference, the zero point of every pole's score. Many are plain "how does X work?",
    # "explain X", "what is X?" questions on varied topics: their form is what every explanation request shares, so
    # centring on them cancels the pull such a form has towards the poles whose examples ask for explanations.
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
    "How does a microwave oven heat food?",
    "Explain how a rainbow forms.",
    "What is democracy?",
    "How do bees make honey?",
    "Explain the theory of evolution.",
    "How does a bicycle stay upright?",
    "What is cloud computing?",
    "Explain how the heart pumps blood.",
    "How do volcanoes erupt?",
    "What is the speed of light?",
    "How does a camera work?",
    "Explain what an atom is.",
    "How do plants grow?",
    "What is a recession?",
    "Explain how a loan works.",
    "How does a thermostat work?",
    "What is the Pythagorean theorem?",
    "How do birds migrate?",
    "What is an operating system?",
    "Explain how a nuclear reactor works.",
    "Why do we have seasons?",
    "How is glass made?",
)


class InferenceSettings(BaseModel):
    """The knobs of inference; the defaults suit all-MiniLM-L6-v2 (measured on the labelled messages in
    ``tests/store/inference_cases.py``).

    ``exemplar_top_k``: how many of a pole's nearest exemplars its score averages (1: the single nearest).
    ``vote_temperature``: softmax temperature of a message's vote over its centred scores.
    ``neutral_margin_quantile``: the margin a message's contrast (best pole minus runner-up) must pass before it
    counts as evidence, as a quantile of the contrasts that ``NEUTRAL_TEXTS`` reach (0.5: their median).
    ``strength_scale``: the contrast above the margin at which a message counts fully (strength 1).
    ``half_life_days``, ``topic_temperature``: recency and topic weighting. ``prior_strength``: pseudo-votes of the
    uniform prior. ``confidence_scale``: the evidence at which confidence is 1/2. ``feedback_weight``: a feedback
    item's strength relative to a message's. ``evidence_per_dimension``: messages shown as evidence.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    half_life_days: float = 30.0
    exemplar_top_k: int = Field(default=2, ge=1)
    vote_temperature: float = 0.05
    neutral_margin_quantile: float = Field(default=0.5, ge=0.0, le=1.0)
    strength_scale: float = 0.1
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
class Signals:
    """Per-item evidence for one dimension: ``votes`` (n, poles), each row a distribution over the poles, and
    ``strength`` (n,) in [0, 1], how much each item counts before recency and topic weighting."""

    votes: np.ndarray
    strength: np.ndarray


class PreferenceInference:
    """Infers a ``PreferenceContext`` for one catalog and one embedder (exemplars are embedded once, here)."""

    def __init__(
        self, catalog: PreferenceCatalog, embedder: Embedder, settings: InferenceSettings | None = None
    ) -> None:
        self.catalog = catalog
        self.settings = settings or InferenceSettings()
        neutral = encode_normalised(embedder, list(NEUTRAL_TEXTS))
        self._exemplars: dict[str, list[np.ndarray]] = {}
        self._baselines: dict[str, np.ndarray] = {}
        self._margins: dict[str, float] = {}
        for dimension in catalog.dimensions:
            self._exemplars[dimension.name] = [
                encode_normalised(embedder, [pole.description, *pole.examples]) for pole in dimension.poles
            ]
            neutral_scores = self._scores(dimension.name, neutral)
            self._baselines[dimension.name] = neutral_scores.mean(axis=0)
            neutral_contrast = _contrast(neutral_scores - self._baselines[dimension.name])
            self._margins[dimension.name] = float(np.quantile(neutral_contrast, self.settings.neutral_margin_quantile))

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
        current = np.zeros(len(times), dtype=bool)  # stored copies of the query itself (this very turn)
        if query_vector is not None and len(times):
            related = np.concatenate(
                [messages.vectors @ query_vector, np.array([row.prompt @ query_vector for row in feedback])]
            )
            current[: len(messages.ids)] = related[: len(messages.ids)] >= _SAME_TEXT
            others = related[~current]
            top = float(others.max()) if len(others) else 0.0
            topic = np.minimum(np.exp((related - top) / settings.topic_temperature), 1.0)
        recent = np.where(current, 0.0, recency)
        weight = recent * topic

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
            signals = self.message_signals(dimension.name, messages.vectors)
            feedback_signals = self._feedback_signals(dimension.name, feedback)
            votes = np.concatenate([signals.votes, feedback_signals.votes])
            raw = np.concatenate([signals.strength, feedback_signals.strength])
            strength = raw * weight
            total = float(strength.sum())
            said = float((raw * recent).sum())  # how much the user has said about this dimension, on any topic
            if total <= 1e-9:
                dimensions[dimension.name] = DimensionPreference(
                    weights={pole: 1.0 / len(poles) for pole in poles}, confidence=0.0, source="neutral"
                )
                continue
            # the topic decides which way the evidence points; how much there is counts every topic
            mass = strength @ votes * (said / total)
            prior = settings.prior_strength
            posterior = (mass + prior / len(poles)) / (said + prior)
            dimensions[dimension.name] = DimensionPreference(
                weights={pole: float(value) for pole, value in zip(poles, posterior / posterior.sum(), strict=True)},
                confidence=float(said / (said + settings.confidence_scale)),
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

    def message_signals(self, dimension: str, vectors: np.ndarray) -> Signals:
        """Votes and strengths of messages (normalised vectors, one row each) for ``dimension``: what ``infer``
        aggregates, before recency and topic weighting."""
        return self._signals(dimension, self._scores(dimension, vectors) - self._baselines[dimension])

    def _scores(self, dimension: str, vectors: np.ndarray) -> np.ndarray:
        """(n, poles): each vector's mean cosine similarity to each pole's ``exemplar_top_k`` nearest exemplars."""
        columns = []
        for exemplars in self._exemplars[dimension]:
            similarities = vectors @ exemplars.T
            k = min(self.settings.exemplar_top_k, exemplars.shape[0])
            columns.append(np.sort(similarities, axis=1)[:, -k:].mean(axis=1))
        return np.stack(columns, axis=1)

    def _feedback_signals(self, dimension: str, feedback: list[FeedbackRow]) -> Signals:
        poles = len(self._exemplars[dimension])
        if not feedback:
            return Signals(np.zeros((0, poles)), np.zeros(0))
        rows = []
        for item in feedback:
            positive = self._scores(dimension, item.positive[None, :])[0]
            if item.negative is not None:
                rows.append(positive - self._scores(dimension, item.negative[None, :])[0])
            else:
                rows.append(np.sign(item.rating) * (positive - self._baselines[dimension]))
        signals = self._signals(dimension, np.stack(rows))
        scale = np.array([self.settings.feedback_weight * min(abs(item.rating), 1.0) for item in feedback])
        return Signals(signals.votes, signals.strength * scale)

    def _signals(self, dimension: str, centred: np.ndarray) -> Signals:
        """Votes (softmax of centred scores) and strengths (the contrast between the best pole and the runner-up,
        beyond the dimension's neutral margin)."""
        logits = centred / self.settings.vote_temperature
        logits -= logits.max(axis=1, keepdims=True)
        votes = np.exp(logits)
        votes /= votes.sum(axis=1, keepdims=True)
        beyond = _contrast(centred) - self._margins[dimension]
        strength = np.clip(beyond / self.settings.strength_scale, 0.0, 1.0)
        return Signals(votes, strength)

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
                        message_id=message_id,
                        text=found.get(message_id, ""),
                        score=score,
                        dimension=dimension,
                        pole=pole,
                        kind="message",
                        created_at=_utc(messages.times[row]),
                    )
                )
            else:
                item = feedback[row - count]
                evidence.append(
                    Evidence(
                        message_id=item.message_id,
                        text=item.text,
                        score=score,
                        dimension=dimension,
                        pole=pole,
                        kind="feedback",
                        created_at=_utc(item.time),
                    )
                )
        return evidence


def _contrast(centred: np.ndarray) -> np.ndarray:
    """Per row: the best centred score minus the runner-up's (how clearly one pole wins)."""
    ordered = np.sort(centred, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(float(epoch_seconds), tz=UTC)
