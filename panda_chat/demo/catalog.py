"""The default preference catalog wired to the shipped demo reward heads.

The default catalog (``profiles.catalog``) maps every pole to a zero-shot embedding reward, which works on any base
model. On the demo base LM the shipped heads are better rewards (trained on its own hidden states, measured on
held-out topics), so the demo catalog keeps the default dimensions, descriptions and example utterances and only
points each pole's reward at its head file.
"""

from __future__ import annotations

from panda_chat.demo.models import demo_head_paths
from profiles.catalog import PreferenceCatalog, RewardSpec


def demo_catalog() -> PreferenceCatalog:
    """The default catalog with every pole that has a shipped head mapped to it (``kind="head"``)."""
    heads = demo_head_paths()
    default = PreferenceCatalog.default()
    dimensions = []
    for dimension in default.dimensions:
        poles = [
            pole.model_copy(update={"reward": RewardSpec(kind="head", path=str(heads[pole.name]))})
            if pole.name in heads
            else pole
            for pole in dimension.poles
        ]
        dimensions.append(dimension.model_copy(update={"poles": poles}))
    return PreferenceCatalog(dimensions=dimensions)
