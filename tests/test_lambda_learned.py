"""Lambda schedules and the learned context-aware lambda: known optima recovered, files, the LambdaFunction protocol."""

import pytest
import torch
from safetensors.torch import save_file

from panda_chat.lam.base import ConstantLambda, LambdaContext, LambdaFunction
from panda_chat.lam.learned import LambdaTrainingSet, LearnedLambda, inverse_softplus
from panda_chat.lam.schedules import ExponentialDecayLambda, LinearDecayLambda, parse_lambda, schedule_grid


def _context(prompt_features, preference_features=None):
    n = prompt_features.shape[0]
    return LambdaContext(
        prompts=["p"] * n,
        prompt_lengths=torch.full((n,), 5),
        prompt_features=prompt_features,
        preference_features=preference_features,
    )


def test_schedules_by_hand():
    s = ExponentialDecayLambda(start=2.0, decay=0.5, floor=0.5)
    assert [s.at(t) for t in range(3)] == [2.0, 1.25, 0.875]
    assert torch.equal(s(_context(torch.zeros(3, 4)), 1), torch.full((3,), 1.25))
    lin = LinearDecayLambda(start=3.0, end=1.0, steps=4)
    assert [lin.at(t) for t in (0, 2, 4, 9)] == [3.0, 2.0, 1.0, 1.0]
    grid = schedule_grid([0.0, 1.0], [1.0, 0.9])
    assert grid == [ExponentialDecayLambda(0.0), ExponentialDecayLambda(1.0), ExponentialDecayLambda(1.0, 0.9)]
    assert parse_lambda("1.5") == ConstantLambda(1.5)
    assert parse_lambda("exp:2:0.9") == ExponentialDecayLambda(2.0, 0.9)
    assert parse_lambda("lin:2:0:10") == LinearDecayLambda(2.0, 0.0, 10)
    with pytest.raises(ValueError, match="bad lambda"):
        parse_lambda("fast")
    with pytest.raises(ValueError, match="decay"):
        ExponentialDecayLambda(start=1.0, decay=1.5)


def test_inverse_softplus_inverts():
    y = torch.tensor([1e-3, 0.5, 3.0, 40.0])
    assert torch.allclose(torch.nn.functional.softplus(inverse_softplus(y)), y, rtol=1e-5)


def _features(n, dim, seed):
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed))


def test_ridge_recovers_a_prompt_dependent_optimum():
    """Best lambda known: softplus(3 * x0 - 1) for every step. Ridge fits it on held-out prompts."""

    def best(x):
        return [ExponentialDecayLambda(float(torch.nn.functional.softplus(3 * r[0] - 1))) for r in x]

    train, test = _features(80, 6, 0), _features(20, 6, 1)
    model = LearnedLambda.fit(LambdaTrainingSet(train, best(train), horizon=8), kind="ridge", ridge_alpha=1e-3)
    for step in (0, 7):
        predicted = model(_context(test), step)
        expected = torch.tensor([s.at(step) for s in best(test)]).clamp(max=model.config.max_lambda)  # never above
        assert torch.allclose(predicted, expected, atol=0.02)
    assert isinstance(model, LambdaFunction) and bool((predicted >= 0).all())


def test_mlp_recovers_prompt_dependent_decay():
    """Best schedule known: start 1 + 1.5 * x0, decay 0.8 + 0.2 * x1 (prompt-dependent decay needs the MLP)."""

    def best(x):
        return [ExponentialDecayLambda(1 + 1.5 * float(r[0]), 0.8 + 0.2 * float(r[1])) for r in x]

    train, test = _features(120, 4, 2), _features(30, 4, 3)
    model = LearnedLambda.fit(LambdaTrainingSet(train, best(train), horizon=12), kind="mlp", epochs=800)
    errors = [
        float((model(_context(test), t) - torch.tensor([s.at(t) for s in best(test)])).abs().mean()) for t in range(12)
    ]
    assert max(errors) < 0.1
    baseline = LearnedLambda.fit(LambdaTrainingSet(train, best(train), horizon=12), kind="ridge")
    ridge_err = float((baseline(_context(test), 11) - torch.tensor([s.at(11) for s in best(test)])).abs().mean())
    assert errors[11] < ridge_err  # the interaction is real: a linear model cannot match it


def test_preference_features_condition_lambda_and_file_round_trip(tmp_path):
    prompts = _features(60, 3, 4)
    prefs = _features(60, 2, 5)
    best = [ExponentialDecayLambda(0.5 + 2 * float(p[1])) for p in prefs]
    model = LearnedLambda.fit(
        LambdaTrainingSet(prompts, best, horizon=4, preference_features=prefs), kind="ridge", ridge_alpha=1e-3
    )
    pref = torch.tensor([[0.5, 0.0], [0.5, 1.0]])
    lam = model(_context(torch.full((2, 3), 0.5), pref), 2)
    assert lam[1] - lam[0] == pytest.approx(2.0, abs=0.15)
    assert model(_context(torch.full((2, 3), 0.5)), 0).shape == (2,)  # no preferences: an average user

    loaded = LearnedLambda.load(model.save(tmp_path / "lam.safetensors"))
    assert loaded.config == model.config and torch.equal(loaded(_context(torch.full((2, 3), 0.5), pref), 2), lam)
    with pytest.raises(ValueError, match="prompt features of size 3"):
        loaded(_context(torch.zeros(2, 5)), 0)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a panda-chat lambda model"):
        LearnedLambda.load(tmp_path / "x.safetensors")


def test_at_steps_gives_each_row_what_its_own_step_gives_it():
    """A serving batch asks for every row at its own step in one call: the same values as one call per step."""

    def best(x):
        return [ExponentialDecayLambda(1 + float(r[0]), 0.9) for r in x]

    train, test = _features(60, 4, 4), _features(7, 4, 5)
    model = LearnedLambda.fit(LambdaTrainingSet(train, best(train), horizon=10), kind="mlp", epochs=50)
    steps = torch.tensor([0, 3, 9, 1, 1, 5, 40])
    together = model.at_steps(_context(test), steps)
    one_by_one = torch.stack([model(_context(test[i : i + 1]), int(step))[0] for i, step in enumerate(steps)])
    assert torch.allclose(together, one_by_one, atol=1e-6)
    assert not torch.allclose(together, model(_context(test), 0))  # the steps do matter


@pytest.mark.parametrize("kind", ["ridge", "mlp"])
def test_a_prompt_unlike_the_training_ones_gets_no_lambda_above_the_largest_it_was_fitted_to(kind, tmp_path):
    """A linear map extrapolates: features far outside the training range would ask for any lambda, and decoding
    degenerates past the strongest schedule it saw. The cap is the largest target and survives a file round trip."""

    def best(x):
        return [ExponentialDecayLambda(1.0 + 3.0 * float(r[0])) for r in x]  # lambdas in [1, 4]

    train = _features(60, 4, 2)
    model = LearnedLambda.fit(LambdaTrainingSet(train, best(train), horizon=4), kind=kind, ridge_alpha=1e-3)
    far = torch.full((3, 4), 50.0)  # x0 = 50: the uncapped linear map would say lambda ~ 150
    cap = max(s.at(0) for s in best(train))
    assert model.config.max_lambda == pytest.approx(cap)
    assert torch.all(model(_context(far), 0) <= cap + 1e-6)
    again = LearnedLambda.load(model.save(tmp_path / "lambda.safetensors"))
    assert torch.equal(again(_context(far), 0), model(_context(far), 0))
