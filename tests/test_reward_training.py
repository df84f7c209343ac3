"""Bradley-Terry training: heads on cached features and full reward models, calibration, base-model checks."""

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from panda_chat.rewards.calibration import RewardModelInfo, calibrate
from panda_chat.rewards.data import PreferencePair
from panda_chat.rewards.features import ResponseFeaturizer
from panda_chat.rewards.heads import HeadMismatchError, RewardHead
from panda_chat.rewards.training import (
    RewardTrainingConfig,
    bradley_terry_loss,
    split_pairs,
    train_reward_head,
    train_reward_model,
)
from panda_chat.tiny_models import build_causal_lm, sample_corpus, train_tokenizer

_SUBJECTS = ["the cat", "a physicist", "my neighbour", "our team", "a student", "the river"]
_VERBS = ["explains", "measures", "cooks", "builds", "describes", "compares"]
_OBJECTS = ["quantum tunnelling", "a simple soup", "the budget", "sorting algorithms", "the weather", "a bicycle"]
FORMAL = ["politely.", "formally, as required.", "with great care!", "like an expert would."]
CASUAL = ["with a smile :)", "briefly.", "in plain words.", "for beginners."]


def formality_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    """Same body, formal ending preferred to a casual one: a signal a head on the hidden states can learn."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        prompt = f"Tell me how {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
        body = f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
        pairs.append(
            PreferencePair(
                prompt=prompt, chosen=f"{body} {rng.choice(FORMAL)}", rejected=f"{body} {rng.choice(CASUAL)}"
            )
        )
    return pairs


@pytest.fixture(scope="module")
def base(tiny_models):
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base).eval()
    return model, AutoTokenizer.from_pretrained(tiny_models.base)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_head_reaches_high_held_out_accuracy_and_saves_calibration(base, tmp_path, kind):
    pairs = formality_pairs(300)
    trained = train_reward_head(base, pairs, name="formal", config=RewardTrainingConfig(val_split=0.3, head_kind=kind))
    report = trained.report
    assert (report.train_pairs, report.val_pairs) == (210, 90)
    assert report.val_accuracy >= 0.9
    assert report.val_accuracy == report.history[report.best_epoch - 1].val_accuracy

    # The saved head reads *raw* hidden states (standardisation folded in): score held-out pairs from scratch.
    head = RewardHead.load(trained.head.save(tmp_path / "formal.safetensors"))
    head.check_base(base[0])
    train, val = split_pairs(pairs, 0.3, seed=0)
    featurizer = ResponseFeaturizer(*base)
    with torch.no_grad():
        chosen = head(featurizer([p.prompt for p in val], [p.chosen for p in val]))
        rejected = head(featurizer([p.prompt for p in val], [p.rejected for p in val]))
        train_rewards = head(
            featurizer([p.prompt for p in train] * 2, [p.chosen for p in train] + [p.rejected for p in train])
        )
    assert float((chosen > rejected).float().mean()) == pytest.approx(report.val_accuracy)

    # Calibration: the head's mean/std over the training responses, stored in the file; normalising centres them.
    assert head.config.calibration.mean == pytest.approx(float(train_rewards.mean()), abs=1e-4)
    assert head.config.calibration.std == pytest.approx(float(train_rewards.std(unbiased=False)), rel=1e-4)
    normalised = head.config.calibration.normalise(train_rewards)
    assert float(normalised.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(normalised.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    assert head.config.training["train_pairs"] == 210 and head.config.training["val_accuracy"] == report.val_accuracy


def test_head_trained_for_one_base_refuses_another(base, tmp_path):
    trained = train_reward_head(base, formality_pairs(40), name="formal", config=RewardTrainingConfig(epochs=2))
    head = RewardHead.load(trained.head.save(tmp_path / "h.safetensors"))
    other = AutoModelForCausalLM.from_pretrained(
        build_causal_lm(tmp_path / "b", train_tokenizer(sample_corpus(), vocab_size=512), seed=7)
    )
    with pytest.raises(HeadMismatchError, match="another base model"):
        head.check_base(other)


def test_unlearnable_labels_stay_near_chance(base):
    """A guard that the accuracy test can fail: random labels give no held-out signal."""
    rng = random.Random(1)
    pairs = [
        p if rng.random() < 0.5 else PreferencePair(prompt=p.prompt, chosen=p.rejected, rejected=p.chosen)
        for p in formality_pairs(300, seed=3)
    ]
    report = train_reward_head(base, pairs, name="noise", config=RewardTrainingConfig(val_split=0.3)).report
    assert report.val_accuracy < 0.75


def test_features_are_cached_on_disk_and_reused(base, tmp_path):
    featurizer = ResponseFeaturizer(*base, cache_dir=tmp_path)
    first = featurizer(["a prompt", "another"], ["a reply.", "one more reply."])
    files = list(tmp_path.glob("features-*.safetensors"))
    assert len(files) == 1
    again = ResponseFeaturizer(*base, cache_dir=tmp_path)(["a prompt", "another"], ["a reply.", "one more reply."])
    assert torch.equal(first, again)
    # Same text alone, unpadded: the padded batch gives the same hidden state.
    alone = ResponseFeaturizer(*base)(["another"], ["one more reply."])
    assert torch.allclose(alone[0], first[1], atol=1e-5)


def test_split_and_loss_basics():
    pairs = formality_pairs(10)
    train, val = split_pairs(pairs, 0.2, seed=0)
    assert len(train) == 8 and len(val) == 2 and set(train) | set(val) == set(pairs)
    assert split_pairs(pairs[:2], 0.01, seed=0)[1]  # two pairs or more: at least one held out
    assert float(bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0]))) == pytest.approx(0.6931, abs=1e-4)
    assert calibrate(torch.full((5,), 3.0)).std == 1.0  # a constant reward never divides by zero


def test_full_reward_model_training_saves_a_loadable_calibrated_folder(tiny_models, tmp_path):
    out = tmp_path / "rm"
    report = train_reward_model(
        tiny_models.base,
        formality_pairs(80),
        out,
        name="formal",
        config=RewardTrainingConfig(epochs=2, lr=1e-3, batch_size=16, val_split=0.25),
    )
    assert report.kind == "model" and report.val_pairs == 20 and report.val_accuracy >= 0.9
    info = RewardModelInfo.load(out)
    assert info.calibration == report.calibration and info.training["train_pairs"] == 60
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None


def test_texts_longer_than_a_models_learned_positions_are_read_up_to_its_last_one():
    """GPT-2-style learned positions cannot be read past the last one (an index error): features (for ``reward
    train`` and a user's feedback heads) and token-level pairs (bootstrap) keep the end of a text that does not fit."""
    from model_families import FAMILY_BY_NAME

    from panda_chat.rewards.token_level import PrefixFeaturizer

    tokenizer = train_tokenizer(sample_corpus(200), vocab_size=300)
    model = FAMILY_BY_NAME["gpt2"].build(len(tokenizer), n_positions=24)
    long_answer = " ".join(sample_corpus(40))
    features = ResponseFeaturizer(model, tokenizer)(["A question?"], [long_answer])
    # the state before the last token, the mean before it and the last token's embedding
    assert features.shape == (1, 3 * model.config.hidden_size) and torch.isfinite(features).all()
    pair = PreferencePair(prompt="A question?", chosen=long_answer, rejected=long_answer[::-1])
    pairs = PrefixFeaturizer(model, tokenizer).pairs([pair])
    assert len(pairs) > 0


def test_token_level_pairs_from_two_sources_join_into_one_training_set(base):
    """Bootstrap adds the model's own kept pairs to the corpus pairs: the joined set keeps every row, in order, and
    the kind of head input they were computed for."""
    from panda_chat.rewards.token_level import PrefixFeaturizer

    featurizer = PrefixFeaturizer(*base, features="last+mean")
    first, second = featurizer.pairs(formality_pairs(3)), featurizer.pairs(formality_pairs(5)[3:])
    joined = first.joined(second)
    assert len(joined) == len(first) + len(second) and joined.features == "last+mean"
    assert torch.equal(joined.chosen, torch.cat([first.chosen, second.chosen]))
    assert torch.equal(joined.complete, torch.cat([first.complete, second.complete]))
