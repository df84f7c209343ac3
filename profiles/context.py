"""``PreferenceContext``: what the store tells a chat about one user, for one prompt.

It is the boundary between the profile store and the decoding side: the per-dimension pole weights pick and weight
the rewards, the confidence says how much to trust them, the evidence explains them to a person, and ``vector`` is
a fixed-layout numeric summary a learned lambda model takes as input.

``vector`` layout (see ``PreferenceCatalog.vector_layout()`` for the names): for each dimension in catalog order,
each pole's ``weight * confidence`` in pole order, then the dimension's ``confidence``. Its length is
``sum(len(poles) + 1)`` over the catalog, the same for every user of one catalog; a neutral context is all zeros.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from profiles.catalog import PreferenceCatalog


class DimensionPreference(BaseModel):
    """One dimension's result: a weight per pole (summing to 1) and how confident the store is (0..1)."""

    model_config = ConfigDict(frozen=True)

    weights: dict[str, float]
    confidence: float = Field(ge=0.0, le=1.0)
    source: Literal["inferred", "explicit", "neutral"]

    @property
    def top_pole(self) -> str:
        """The pole with the largest weight (the first one on a tie)."""
        return max(self.weights, key=lambda pole: self.weights[pole])


class Evidence(BaseModel):
    """One message (or feedback item) that moved a dimension toward a pole, and by how much (``score``)."""

    model_config = ConfigDict(frozen=True)

    message_id: int | None
    text: str
    score: float
    dimension: str
    pole: str
    kind: Literal["message", "feedback"] = "message"
    created_at: datetime | None = None


class PreferenceContext(BaseModel):
    """A user's preferences as the store infers them (optionally for one query); see the module docstring."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    query: str | None = None
    dimensions: dict[str, DimensionPreference]
    evidence: list[Evidence] = Field(default_factory=list)
    vector: list[float]

    @classmethod
    def neutral(cls, catalog: PreferenceCatalog, user_id: str, query: str | None = None) -> PreferenceContext:
        """Uniform weights and zero confidence on every dimension: what a user with no history gets."""
        dimensions = {
            dimension.name: DimensionPreference(
                weights={pole: 1.0 / len(dimension.poles) for pole in dimension.pole_names},
                confidence=0.0,
                source="neutral",
            )
            for dimension in catalog.dimensions
        }
        return cls.build(catalog, user_id=user_id, query=query, dimensions=dimensions, evidence=[])

    @classmethod
    def build(
        cls,
        catalog: PreferenceCatalog,
        *,
        user_id: str,
        query: str | None,
        dimensions: dict[str, DimensionPreference],
        evidence: list[Evidence],
    ) -> PreferenceContext:
        """Assemble a context, computing ``vector`` from ``dimensions`` in the catalog's layout."""
        return cls(
            user_id=user_id,
            query=query,
            dimensions={name: dimensions[name] for name in catalog.names},
            evidence=evidence,
            vector=context_vector(catalog, dimensions),
        )


def context_vector(catalog: PreferenceCatalog, dimensions: dict[str, DimensionPreference]) -> list[float]:
    """The fixed-layout summary: per dimension, ``weight * confidence`` for each pole, then ``confidence``."""
    vector: list[float] = []
    for dimension in catalog.dimensions:
        preference = dimensions[dimension.name]
        vector.extend(preference.weights[pole] * preference.confidence for pole in dimension.pole_names)
        vector.append(preference.confidence)
    return vector
