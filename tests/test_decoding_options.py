"""DecodingOptions: one object for how to decode, given whole (``options=``) or as keyword overrides."""

from __future__ import annotations

import pytest
from test_decoding import make_head

from panda_chat.decoding import DecodingError, DecodingOptions, PandaDecoder

PROMPTS = ["The cat", "A student compares linear algebra"]
STEER = dict(weights={"formal": 1.0}, lam=2.0)


@pytest.fixture(scope="module")
def decoder(tiny_models) -> PandaDecoder:
    dec = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32")
    dec = PandaDecoder(dec.model, dec.tokenizer)
    dec.add_reward("formal", make_head(dec.model))
    return dec


def test_of_applies_overrides_to_the_given_options_or_the_defaults():
    assert DecodingOptions.of() == DecodingOptions()
    base = DecodingOptions(top_k=3, seed=7)
    assert DecodingOptions.of(base) is base
    merged = DecodingOptions.of(base, max_new_tokens=5, stop="\nUser:")
    assert (merged.top_k, merged.seed, merged.max_new_tokens, merged.stop) == (3, 7, 5, ("\nUser:",))
    assert base.max_new_tokens == DecodingOptions().max_new_tokens  # the given options are never changed
    with pytest.raises(TypeError):
        DecodingOptions.of(top_kk=3)  # a typo is an error, never silently ignored


def test_stop_is_always_a_tuple():
    assert DecodingOptions(stop=None).stop == ()
    assert DecodingOptions(stop="x").stop == ("x",)
    assert DecodingOptions(stop=["a", "b"]).stop == ("a", "b")


def test_temperature_zero_is_greedy_and_positive_samples():
    greedy = DecodingOptions.from_temperature(0, top_k=4)
    assert greedy.greedy and greedy.top_k == 4 and greedy.temperature == 1.0
    sampled = DecodingOptions.from_temperature(0.7, DecodingOptions(seed=3))
    assert not sampled.greedy and sampled.temperature == 0.7 and sampled.seed == 3
    with pytest.raises(DecodingError, match="temperature"):
        DecodingOptions.from_temperature(-1)


def test_options_object_and_keywords_decode_the_same(decoder):
    by_keywords = decoder.generate(PROMPTS, max_new_tokens=12, top_k=4, greedy=False, seed=5, **STEER)
    options = DecodingOptions(max_new_tokens=12, top_k=4, greedy=False, seed=5)
    by_options = decoder.generate(PROMPTS, options=options, **STEER)
    overridden = decoder.generate(
        PROMPTS, options=DecodingOptions(max_new_tokens=3, top_k=4, greedy=False), max_new_tokens=12, seed=5, **STEER
    )
    streamed = decoder.stream(PROMPTS[0], options=options, **STEER)
    assert [o.token_ids for o in by_keywords] == [o.token_ids for o in by_options] == [o.token_ids for o in overridden]
    (alone,) = decoder.generate(PROMPTS[0], max_new_tokens=12, top_k=4, greedy=False, seed=5, **STEER)
    assert streamed.output.token_ids == alone.token_ids  # a seeded draw depends on the batch: compare one prompt
    with pytest.raises(DecodingError, match="top_k"):
        decoder.generate(PROMPTS, options=options, top_k=0)
