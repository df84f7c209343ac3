"""PreferenceContext -> steering: the pole-weight mapping, reward sources per pole with fallbacks, and the plan."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from panda_chat.personalize import Personalizer, PoleRewards, pole_steering
from panda_chat.rewards.base import Calibration
from panda_chat.rewards.heads import BaseModelSignature, HeadReward, RewardHead, RewardHeadConfig
from panda_chat.rewards.zero_shot import ZeroShotReward
from profiles import (
    Dimension,
    DimensionPreference,
    HashingEmbedder,
    Pole,
    PreferenceCatalog,
    PreferenceContext,
    RewardSpec,
)


def test_neutral_or_unsure_users_get_no_steering():
    assert pole_steering({"a": 0.5, "b": 0.5}, confidence=1.0) == {}
    assert pole_steering({"a": 1.0, "b": 0.0}, confidence=0.0) == {}


def test_a_certain_user_is_pushed_toward_the_pole_and_away_from_the_other():
    assert pole_steering({"a": 1.0, "b": 0.0}, confidence=1.0) == pytest.approx({"a": 1.0, "b": -1.0})
    assert pole_steering({"a": 0.75, "b": 0.25}, confidence=0.5, strength=2.0) == pytest.approx({"a": 0.5, "b": -0.5})


def test_three_poles_sum_to_zero_and_tiny_weights_are_dropped():
    steering = pole_steering({"a": 1.0, "b": 0.0, "c": 0.0}, confidence=1.0)
    assert steering == pytest.approx({"a": 1.0, "b": -0.5, "c": -0.5})
    assert pole_steering({"a": 0.51, "b": 0.49}, confidence=0.5) == {}


@pytest.fixture(scope="module")
def tiny_lm(tiny_models):
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base).eval()
    return model, AutoTokenizer.from_pretrained(tiny_models.base)


def _head_file(path, signature: BaseModelSignature, hidden: int):
    torch.manual_seed(0)
    config = RewardHeadConfig(name="h", hidden_size=hidden, base_signature=signature, calibration=Calibration())
    return str(RewardHead(config).save(path))


def _catalog(head_path: str) -> PreferenceCatalog:
    return PreferenceCatalog(
        dimensions=[
            Dimension(
                name="tone",
                poles=[
                    Pole(
                        name="friendly",
                        description="A warm, friendly answer.",
                        examples=["be nice"],
                        reward=RewardSpec(kind="head", path=head_path),
                    ),
                    Pole(name="formal", description="A formal, precise answer.", examples=["be formal"]),
                ],
            ),
        ]
    )


def _context(catalog, weights, confidence=1.0):
    dims = {"tone": DimensionPreference(weights=weights, confidence=confidence, source="explicit")}
    return PreferenceContext.build(catalog, user_id="alice", query=None, dimensions=dims, evidence=[])


def test_pole_rewards_use_a_fitting_head_and_zero_shot_otherwise(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    head = _head_file(tmp_path / "h.safetensors", BaseModelSignature.of(model), model.config.hidden_size)
    catalog = _catalog(head)
    rewards = PoleRewards(model, tokenizer, embedder=HashingEmbedder())
    friendly = rewards.get(catalog, catalog.dimensions[0], catalog.dimensions[0].poles[0])
    formal = rewards.get(catalog, catalog.dimensions[0], catalog.dimensions[0].poles[1])
    assert (friendly.kind, friendly.name, friendly.note) == ("head", "tone.friendly", None)
    assert isinstance(friendly.source, HeadReward)
    assert formal.kind == "zero_shot" and isinstance(formal.source, ZeroShotReward)
    assert formal.source.calibration.std != 1.0  # calibrated on the catalog's texts
    assert rewards.get(catalog, catalog.dimensions[0], catalog.dimensions[0].poles[1]) is formal  # cached


def test_a_head_for_another_model_falls_back_to_zero_shot_with_a_warning(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    foreign = BaseModelSignature.of(model).model_copy(update={"vocab_size": 99})
    catalog = _catalog(_head_file(tmp_path / "foreign.safetensors", foreign, model.config.hidden_size))
    rewards = PoleRewards(model, tokenizer, embedder=HashingEmbedder())
    with pytest.warns(RuntimeWarning, match="falls back to its zero-shot reward"):
        built = rewards.get(catalog, catalog.dimensions[0], catalog.dimensions[0].poles[0])
    assert built.kind == "zero_shot" and built.configured == "head"
    assert "does not fit this model" in built.note and "vocab_size" in built.note


def test_no_reward_at_all_means_an_unguided_plan_not_a_crash(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm

    def broken_embedder(texts):
        raise OSError("no embedding model available offline")

    catalog = _catalog(str(tmp_path / "missing.safetensors"))
    personalizer = Personalizer(catalog, PoleRewards(model, tokenizer, embedder=broken_embedder))
    with pytest.warns(RuntimeWarning, match="will not be steered"):
        plan = personalizer.plan(_context(catalog, {"friendly": 1.0, "formal": 0.0}))
    assert plan.mode == "unguided" and plan.weights == {} and plan.lam == 0.0
    assert plan.summary()["mode"] == "unguided"
    assert "no reward could be built" in plan.explain()


def test_plan_weights_lambda_features_and_summary(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    head = _head_file(tmp_path / "h.safetensors", BaseModelSignature.of(model), model.config.hidden_size)
    catalog = _catalog(head)
    personalizer = Personalizer(catalog, PoleRewards(model, tokenizer, embedder=HashingEmbedder()), lam=2.5)
    context = _context(catalog, {"friendly": 0.25, "formal": 0.75}, confidence=0.8)
    plan = personalizer.plan(context)
    assert plan.mode == "steered"
    assert plan.weights == pytest.approx({"tone.friendly": -0.4, "tone.formal": 0.4})
    assert set(plan.rewards) == {"tone.friendly", "tone.formal"}
    assert plan.lam == 2.5 and plan.preference_features == context.vector
    summary = plan.summary(lambdas=[2.5, 2.5])
    assert summary["dimensions"]["tone"]["top_pole"] == "formal"
    assert summary["reward_kinds"] == ["head", "zero_shot"]
    assert summary["lambda"] == {"kind": "constant 2.5", "value": 2.5, "mean": 2.5, "min": 2.5, "max": 2.5}
    assert "steer tone.formal by +0.40 with a zero_shot reward" in plan.explain()


def test_a_neutral_context_plans_plain_decoding(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    catalog = _catalog(str(tmp_path / "unused.safetensors"))
    plan = Personalizer(catalog, PoleRewards(model, tokenizer, embedder=HashingEmbedder())).plan(
        PreferenceContext.neutral(catalog, "bob")
    )
    assert plan.mode == "neutral" and plan.weights == {} and plan.rewards == {} and plan.lam == 0.0


def test_model_rewards_replace_only_zero_shot_poles(tmp_path):
    from panda_chat.personalize import with_model_rewards

    catalog = _catalog(str(tmp_path / "configured.safetensors"))
    shipped = {
        "friendly": RewardSpec(kind="head", path="shipped-friendly"),
        "formal": RewardSpec(kind="head", path="shipped-formal"),
    }
    replaced = with_model_rewards(catalog, shipped)
    friendly, formal = replaced.dimensions[0].poles
    assert friendly.reward.path == str(tmp_path / "configured.safetensors")  # configured explicitly: kept
    assert formal.reward == RewardSpec(kind="head", path="shipped-formal")  # zero-shot: the model's own head
    assert with_model_rewards(catalog, {}) is catalog
