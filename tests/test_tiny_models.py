"""The fixture models load through the same from_pretrained code users run, and the tokenizer is usable for chat."""

from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer


def test_tiny_models_load_back_with_from_pretrained(tiny_models):
    tok = AutoTokenizer.from_pretrained(tiny_models.base)
    lm = AutoModelForCausalLM.from_pretrained(tiny_models.base)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_models.reward_model)
    assert lm.config.vocab_size == len(tok)
    assert rm.config.num_labels == 1
    assert tok.eos_token == "<|end|>" and tok.pad_token_id is not None


def test_tokenizer_round_trips_text_and_has_a_chat_template(tiny_models):
    tok = AutoTokenizer.from_pretrained(tiny_models.base)
    text = "Héllo, wörld! 123 — unseen words: zyxwv."
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>hi<|end|><|assistant|>"


def test_other_reward_model_has_a_different_tokenizer(tiny_models):
    a = AutoTokenizer.from_pretrained(tiny_models.base)
    b = AutoTokenizer.from_pretrained(tiny_models.other_tokenizer_reward_model)
    assert a.get_vocab() != b.get_vocab()
