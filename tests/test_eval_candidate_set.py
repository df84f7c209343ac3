"""The selection rule, teacher-forced response scoring, the lambda candidate set, lambda fitting and the eval runner."""

import pytest
import torch
from test_reward_training import formality_pairs
from transformers import AutoModelForCausalLM, AutoTokenizer

from panda_chat.decoding import PandaDecoder
from panda_chat.evaluation.candidate_set import LambdaCandidateSet, PromptGrid
from panda_chat.evaluation.lambda_fitting import fit_lambda, prompt_features
from panda_chat.evaluation.objective import ScoredResponse, SelectionObjective, select_best
from panda_chat.evaluation.runner import evaluate
from panda_chat.evaluation.scoring import ResponseScorer, degeneration
from panda_chat.lam.base import LambdaContext
from panda_chat.lam.learned import LearnedLambda
from panda_chat.lam.schedules import ExponentialDecayLambda, schedule_grid
from panda_chat.rewards.features import ResponseFeaturizer
from panda_chat.rewards.training import RewardTrainingConfig, train_reward_head

PROMPTS = ["Tell me how the cat cooks a simple soup.", "Explain the budget", "Our team builds a bicycle"]


@pytest.fixture(scope="module")
def decoder(tiny_models):
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    head = train_reward_head(
        (model, tokenizer), formality_pairs(150), name="formal", config=RewardTrainingConfig(epochs=4)
    ).head
    on_candidates = train_reward_head(
        (model, tokenizer),
        formality_pairs(150),
        featurizer=ResponseFeaturizer(model, tokenizer, features="last+mean"),
        name="formal-on-candidates",
        config=RewardTrainingConfig(epochs=4),
    ).head
    rewards = {"formal": head, "formal-on-candidates": on_candidates, "rm": tiny_models.reward_model}
    return PandaDecoder(model, tokenizer, rewards=rewards)


def _scored(reward, nll, degen=0.0):
    return ScoredResponse(reward=reward, nll=nll, degeneration=degen)


def test_selection_rule_by_hand():
    objective = SelectionObjective(beta=2.0, gamma=0.5)
    unguided = _scored(1.0, 2.0, 0.1)
    mild, strong = _scored(1.5, 2.1, 0.1), _scored(3.0, 3.5, 0.6)
    # mild: (1.5 - 1) - 2 * (0.1 + 0.5 * 0) = 0.3 ; strong: 2 - 2 * (1.5 + 0.5 * 0.5) = -1.5
    assert objective.value(mild, unguided) == pytest.approx(0.3)
    assert objective.value(strong, unguided) == pytest.approx(-1.5)
    assert objective.fluency_loss(strong, unguided) == pytest.approx(1.75)
    grid = PromptGrid(
        prompt="p",
        unguided=None,
        unguided_score=unguided,
        outputs=["o-mild", "o-strong"],
        scores=[mild, strong],
        values=[objective.value(s, unguided) for s in (mild, strong)],
    )
    choice = LambdaCandidateSet([0.5, 4.0], objective).choose(grid)
    assert (choice.index, choice.label, choice.output) == (0, "0.5", "o-mild")  # not the largest lambda
    # with fluency ignored, the higher reward wins
    assert select_best([SelectionObjective(beta=0.0).value(s, unguided) for s in (mild, strong)]) == 1
    assert select_best([1.0, 1.0]) == 0 and degeneration("a b a b a") == pytest.approx(1 - 0.5 * (2 / 3))


@pytest.mark.parametrize("head", ["formal", "formal-on-candidates"])
def test_scorer_reproduces_the_decoders_rewards_and_nll(decoder, head):
    """The scorer rebuilds what each kind of head reads: the prefix state, its mean and the token's embedding, or the
    token's own state and the answer's mean."""
    features = {"formal": "prefix+token", "formal-on-candidates": "last+mean"}[head]
    assert decoder.rewards[head].head.config.features == features
    weights = [{head: 1.0, "rm": 0.5}, {head: 0.2, "rm": 1.0}]
    outs = decoder.generate(PROMPTS[:2], lam=[1.0, 3.0], weights=weights, max_new_tokens=8, stop_at_eos=False)
    scored = ResponseScorer(decoder).score(PROMPTS[:2], outs, weights=weights)
    for out, s, row_weights in zip(outs, scored, weights):
        # the scorer measures calibrated rewards unclipped: the decoder's raw rewards, combined without the clip
        measured = sum(
            w * decoder.rewards[name].calibration.normalise(torch.tensor(out.raw_rewards[name]))
            for name, w in row_weights.items()
        )
        assert torch.allclose(torch.tensor(s.token_rewards), measured, atol=1e-4)
        assert s.reward == pytest.approx(float(measured[-1]), abs=1e-4)
    # NLL by hand for row 0: the base model's log-probs of each generated token, one token at a time
    ids = decoder.encode_prompts(PROMPTS[:1]).input_ids[0].tolist()
    logps = []
    for token in outs[0].token_ids:
        with torch.no_grad():
            logits = decoder.model(input_ids=torch.tensor([ids])).logits[0, -1]
        logps.append(float(torch.log_softmax(logits, -1)[token]))
        ids.append(token)
    assert scored[0].nll == pytest.approx(-sum(logps) / len(logps), abs=1e-4)
    # an unsteered call records no rewards, the scorer still measures them
    plain = decoder.generate(PROMPTS[:1], lam=0.0, max_new_tokens=4)
    assert ResponseScorer(decoder).score(PROMPTS[:1], plain)[0].reward != 0.0


def test_candidate_set_decodes_rows_together_and_keeps_the_best(decoder):
    lambdas = [0.5, 2.0, ExponentialDecayLambda(4.0, 0.8)]
    choices = LambdaCandidateSet(lambdas, SelectionObjective(beta=0.5), max_rows=8).generate(
        decoder, PROMPTS, max_new_tokens=6
    )
    for prompt, choice in zip(PROMPTS, choices):
        grid = choice.grid
        assert len(grid.outputs) == 3 and choice.value == max(grid.values)
        # a row of the shared batch decodes as the prompt alone with that lambda does
        alone = decoder.generate([prompt], lam=lambdas[choice.index], max_new_tokens=6)[0]
        assert alone.token_ids == choice.output.token_ids
        assert grid.unguided.token_ids == decoder.generate([prompt], lam=0.0, max_new_tokens=6)[0].token_ids


def test_fit_lambda_reports_grid_oracle_and_learned_values(decoder, tmp_path):
    grid = schedule_grid([0.0, 1.0, 4.0], [1.0, 0.8])
    model, report = fit_lambda(decoder, PROMPTS, grid, max_new_tokens=5, objective=SelectionObjective(beta=0.5))
    assert report.grid == ["0", "1", "exp:1:0.8", "4", "exp:4:0.8"]
    assert sum(report.best_counts.values()) == 3
    assert report.oracle_value >= report.best_fixed_value >= report.mean_value["0"] == 0.0
    assert report.learned_value is not None
    features = prompt_features(decoder, PROMPTS)
    ctx = LambdaContext(prompts=PROMPTS, prompt_lengths=torch.ones(3), prompt_features=features)
    loaded = LearnedLambda.load(model.save(tmp_path / "lam.safetensors"))
    assert torch.equal(loaded(ctx, 2), model(ctx, 2)) and bool((loaded(ctx, 0) >= 0).all())
    assert loaded.config.training["grid"] == report.grid


def test_evaluate_builds_the_method_table(decoder):
    grid = schedule_grid([0.0, 2.0])
    lam_model, _ = fit_lambda(decoder, PROMPTS, grid, max_new_tokens=4, measure=False)
    report = evaluate(
        decoder,
        PROMPTS,
        ["greedy", "args", "panda", "panda-set"],
        lam_grid=[1.0, 3.0],
        lambda_model=lam_model,
        embedder="hashing",
        max_new_tokens=4,
        top_k=5,
    )
    by_method = {r.method: r for r in report.results}
    assert list(by_method) == ["greedy", "args", "panda", "panda-set"]
    assert by_method["greedy"].mean_objective == 0.0 and by_method["greedy"].mean_fluency_loss == 0.0
    assert by_method["args"].lam in ("1", "3")
    assert by_method["panda-set"].mean_objective >= by_method["args"].mean_objective
    assert all(r.metrics.coherence is not None and len(r.responses) == 3 for r in report.results)
    table = report.markdown()
    assert table.count("\n") == 5 and "| panda-set | candidate set |" in table
    with pytest.raises(ValueError, match="needs a fitted lambda model"):
        evaluate(decoder, PROMPTS, ["panda"])
