"""The denoised lambda targets of ``fit_lambda(target="value")`` and the lambda stage's synthetic users."""

import torch

from panda_chat.demo.recipe.lambda_stage import synthetic_users
from panda_chat.evaluation.lambda_fitting import value_targets


def test_value_targets_follow_a_feature_that_decides_the_best_schedule():
    gen = torch.Generator().manual_seed(0)
    group = (torch.arange(80) % 2).float()  # half the prompts want schedule 0, half schedule 2
    x = torch.cat([group[:, None], torch.randn(80, 3, generator=gen)], 1)
    values = torch.randn(80, 3, generator=gen) * 0.3
    values[:, 0] += 2 * (1 - group)
    values[:, 2] += 2 * group
    targets, alpha, cv = value_targets(x, values)
    assert alpha != float("inf")
    assert targets == [0 if g == 0 else 2 for g in group.tolist()]
    assert cv[f"{alpha:g}"] >= cv["inf"]


def test_value_targets_fall_back_to_the_best_fixed_schedule_on_noise():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(60, 20, generator=gen)
    values = torch.randn(60, 4, generator=gen)
    values[:, 1] += 1.0  # schedule 1 is best on average; the features say nothing
    targets, alpha, _ = value_targets(x, values)
    assert set(targets) == {1}
    assert alpha >= 1e3


def test_synthetic_users_single_dimension_share():
    users = synthetic_users(12, seed=0, min_confidence=0.4, single_dimension_share=0.5)
    single = [u for u in users if sum(c > 0 for c in u.confidence.values()) == 1]
    assert len(single) == 6
    assert all(min(u.confidence.values()) >= 0.4 for u in users if u not in single)


def test_shipped_demo_lambda_is_what_chatpanda_uses():
    from panda_chat.chat_model.runtime import ModelDefaults
    from panda_chat.demo.models import demo_model_dir
    from panda_chat.lam.learned import LearnedLambda
    from profiles.catalog import PreferenceCatalog

    defaults = ModelDefaults.for_model(str(demo_model_dir()))
    assert isinstance(defaults.lam, LearnedLambda)
    # ChatPanda only uses a fitted lambda that reads its catalog's preference vector
    assert defaults.lam_preference_dim == len(PreferenceCatalog.default().vector_layout())
