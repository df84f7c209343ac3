"""Errors a user can act on, raised before any decoding work."""

from __future__ import annotations

import pytest
import torch
from test_decoding import make_head
from transformers import AutoTokenizer

from panda_chat.decoding import DecodingError, PandaDecoder
from panda_chat.registry import ModelNotFoundError
from panda_chat.rewards.heads import HeadMismatchError
from panda_chat.rewards.loading import tokenizer_difference
from panda_chat.tiny_models import build_causal_lm, sample_corpus, train_tokenizer


@pytest.fixture(scope="module")
def decoder(tiny_models) -> PandaDecoder:
    dec = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32")
    return PandaDecoder(dec.model, dec.tokenizer, rewards={"formal": make_head(dec.model)})


def test_a_reward_model_with_another_tokenizer_never_takes_the_cached_token_id_path(tiny_models):
    """Token ids mean different things under another tokenizer: the loader must see the difference (what it does
    then, the cross-tokenizer text path, is tested with that path)."""
    base = AutoTokenizer.from_pretrained(tiny_models.base)
    assert tokenizer_difference(base, AutoTokenizer.from_pretrained(tiny_models.reward_model)) is None
    reason = tokenizer_difference(base, AutoTokenizer.from_pretrained(tiny_models.other_tokenizer_reward_model))
    assert reason is not None and "vocabular" in reason


def test_head_for_another_base_model_is_refused(tiny_models, tmp_path):
    other_base = PandaDecoder.from_pretrained(
        build_causal_lm(tmp_path / "other", train_tokenizer(sample_corpus(), vocab_size=512), seed=99), device="cpu"
    )
    head_file = make_head(other_base.model).save(tmp_path / "other_head.safetensors")
    with pytest.raises(HeadMismatchError, match="another base model"):
        PandaDecoder.from_pretrained(tiny_models.base, rewards={"formal": str(head_file)}, device="cpu")


def test_missing_folders_and_files_say_what_is_missing(tiny_models, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"^model folder not found: .*no-such-model \(give the folder"):
        PandaDecoder.from_pretrained(tmp_path / "no-such-model", device="cpu")
    with pytest.raises(ModelNotFoundError, match="reward 'helpful': no reward head file or reward model folder"):
        PandaDecoder.from_pretrained(tiny_models.base, rewards={"helpful": str(tmp_path / "nowhere")}, device="cpu")
    not_a_head = tmp_path / "notes.txt"
    not_a_head.write_text("hello")
    with pytest.raises(ValueError, match="not a reward head"):
        PandaDecoder.from_pretrained(tiny_models.base, rewards={"x": str(not_a_head)}, device="cpu")


def test_bad_requests_are_refused_with_the_reason(decoder):
    vocab = decoder.vocab_size
    cases = [
        (dict(prompts="hi", top_k=vocab + 1), DecodingError, "larger than the base model's vocabulary"),
        (dict(prompts=""), DecodingError, "prompt 0 is empty"),
        (dict(prompts=["ok", ""]), DecodingError, "prompt 1 is empty"),
        (dict(prompts=[]), DecodingError, "no prompts"),
        (dict(prompts="hi", top_k=0), DecodingError, "top_k must be >= 1"),
        (dict(prompts="hi", max_new_tokens=0), DecodingError, "max_new_tokens"),
        (dict(prompts="hi", greedy=False, temperature=0.0), DecodingError, "temperature"),
        (dict(prompts="hi", weights={"fromal": 1.0}), ValueError, "unknown reward 'fromal'.*formal"),
        (dict(prompts=["a", "b"], weights=[{"formal": 1.0}]), ValueError, "1 weight dicts for 2 prompts"),
        (dict(prompts="hi", lam=-0.5), ValueError, "lambda must be >= 0"),
        (dict(prompts=["a", "b"], lam=[1.0]), ValueError, "1 lambdas for 2 prompts"),
        (dict(prompts="hi", lam="big"), TypeError, "lambda must be a float or a LambdaFunction"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            decoder.generate(max_new_tokens=kwargs.pop("max_new_tokens", 2), **kwargs)


def test_a_lambda_function_returning_negative_values_is_refused(decoder):
    def negative(context, step):
        return torch.full((len(context.prompts),), -1.0)

    with pytest.raises(ValueError, match="negative"):
        decoder.generate("hi", weights={"formal": 1.0}, lam=negative, max_new_tokens=2)


def test_cuda_without_cuda_is_refused(tiny_models):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        PandaDecoder.from_pretrained(tiny_models.base, device="cuda")
