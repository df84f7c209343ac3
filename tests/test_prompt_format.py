"""One home for the prompt as the decoder sees it (``panda_chat.prompt_format``) and for padding (``padding``).

The demo models were trained on prompts formatted by the five formatters this module replaced; the exactness tests
check, on the shipped demo tokenizer, that the one formatter gives the same strings and ids as their plain formula
(the chat template with the assistant cue, tokenised without added special tokens), and that every user of it
(decoder, head features, base-LM training, ChatPanda's messages) sees the same ids.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tokenizers.processors import TemplateProcessing
from transformers import AutoModelForCausalLM, AutoTokenizer

from panda_chat.chat_model.messages import Turn, render_prompt
from panda_chat.decoding import PandaDecoder
from panda_chat.demo.corpus import DialogueCorpus
from panda_chat.demo.models import demo_model_dir
from panda_chat.padding import left_pad, pad_batch, pad_token_id, right_pad
from panda_chat.prompt_format import (
    ChatTemplateMissingError,
    chat_prompt,
    encode_prompt,
    question_ids,
    question_prompt,
)
from panda_chat.rewards.features import encode_response, last_token_hidden_states
from panda_chat.tiny_models import BOS_TOKEN, sample_corpus, train_tokenizer


@pytest.fixture(scope="module")
def demo_tokenizer():
    return AutoTokenizer.from_pretrained(demo_model_dir())


@pytest.fixture(scope="module")
def questions() -> list[str]:
    corpus = DialogueCorpus(0)
    return [*corpus.prompts(12, split="train"), *corpus.prompts(6, split="heldout"), "a\n\nb", "  spaced  "]


def _plain_text(tokenizer, question: str) -> str:
    """The formula every old formatter applied to the demo tokenizer."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )


def test_demo_prompts_are_exactly_the_chat_template_the_demo_models_were_trained_on(demo_tokenizer, questions):
    for question in questions:
        text = question_prompt(demo_tokenizer, question)
        assert text == _plain_text(demo_tokenizer, question)
        assert text.endswith("<|assistant|>")
        plain_ids = demo_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert question_ids(demo_tokenizer, question) == plain_ids
        assert render_prompt([Turn("user", question)], demo_tokenizer) == text


def test_every_user_of_the_formatter_sees_the_same_demo_ids(demo_tokenizer, questions):
    """Decoder prompts, head-feature sequences and base-LM training rows start with the same prompt ids."""
    from panda_chat.demo.recipe.base_lm import encode_dialogue

    model = AutoModelForCausalLM.from_pretrained(demo_model_dir()).eval()
    decoder = PandaDecoder(model, demo_tokenizer)
    batch = decoder.encode_prompts([question_prompt(demo_tokenizer, q) for q in questions])
    mask = batch.attention_mask.bool()
    for row, question in enumerate(questions):
        ids = question_ids(demo_tokenizer, question)
        assert batch.input_ids[row][mask[row]].tolist() == ids
        assert encode_response(demo_tokenizer, question, "an answer")[: len(ids)] == ids
    for dialogue in DialogueCorpus(0).dialogues(8):
        ids, labels = encode_dialogue(demo_tokenizer, dialogue, max_length=512)
        prompt = question_ids(demo_tokenizer, dialogue.question)
        assert ids[: len(prompt)] == prompt and set(labels[: len(prompt)]) == {-100}
        assert ids[-1] == demo_tokenizer.eos_token_id


def test_a_tokenizer_without_a_template_gets_the_question_itself_and_a_conversation_is_an_error():
    tokenizer = train_tokenizer(sample_corpus(200), vocab_size=320)
    tokenizer.chat_template = None
    assert question_prompt(tokenizer, "Hello there") == "Hello there"
    assert question_ids(tokenizer, "Hello there") == tokenizer("Hello there")["input_ids"]
    with pytest.raises(ChatTemplateMissingError, match="no chat template"):
        chat_prompt(tokenizer, [{"role": "user", "content": "Hello"}])
    assert chat_prompt(tokenizer, [{"role": "user", "content": "Hi"}], "{{ messages[0]['content'] }}!") == "Hi!"


def test_bos_is_added_once_whether_or_not_the_template_writes_it():
    tokenizer = train_tokenizer(sample_corpus(200), vocab_size=320)
    bos = tokenizer.convert_tokens_to_ids(BOS_TOKEN)
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{BOS_TOKEN} $A", special_tokens=[(BOS_TOKEN, bos)]
    )
    plain = question_ids(tokenizer, "Hello")  # the tiny template writes no BOS: the tokenizer adds it
    tokenizer.chat_template = BOS_TOKEN + tokenizer.chat_template  # this template writes it itself
    templated = question_ids(tokenizer, "Hello")
    assert plain.count(bos) == 1 and templated.count(bos) == 1 and plain[0] == templated[0] == bos
    assert encode_prompt(tokenizer, "Hello", add_special_tokens=False).count(bos) == 0


def test_a_template_that_rejects_the_conversation_is_a_clear_error(demo_tokenizer):
    strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}x"
    with pytest.raises(ValueError, match=r"rejected the conversation \(roles: system, user\)"):
        chat_prompt(demo_tokenizer, [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], strict)


class _Tok:
    def __init__(self, pad, eos):
        self.pad_token_id, self.eos_token_id = pad, eos


def test_the_pad_id_is_the_pad_token_else_eos_else_zero():
    assert pad_token_id(_Tok(0, 2)) == 0  # a pad id of 0 is a pad id, not a missing one
    assert pad_token_id(_Tok(None, 2)) == 2
    assert pad_token_id(_Tok(None, None)) == 0


sequences = st.lists(st.lists(st.integers(1, 50), max_size=6), min_size=1, max_size=5)


@given(sequences, st.integers(0, 3), st.sampled_from(["left", "right"]))
def test_padding_keeps_every_token_in_order_and_masks_only_the_padding(rows, pad, side):
    ids, mask = pad_batch(rows, pad, side)
    width = max(len(r) for r in rows)
    assert ids.shape == mask.shape == (len(rows), width)
    for row, seq in enumerate(rows):
        assert ids[row][mask[row].bool()].tolist() == seq
        assert mask[row].sum() == len(seq)
        assert set(ids[row][~mask[row].bool()].tolist()) <= {pad}
        real = mask[row].nonzero().flatten().tolist()
        assert real == (list(range(width - len(seq), width)) if side == "left" else list(range(len(seq))))


def test_left_and_right_padded_forwards_equal_each_sequence_run_alone(tiny_models):
    """The exactness the two sides exist for: right padding for scoring, left padding (with positions from the mask)
    for decoding."""
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base).eval()
    rows = [[5, 9, 13, 21, 8], [7, 30], [11, 12, 40]]
    with torch.no_grad():
        alone = [model(torch.tensor([r])).logits[0, -1] for r in rows]
        ids, mask = right_pad(rows, 0)
        right = model(input_ids=ids, attention_mask=mask).logits
        ids, mask = left_pad(rows, 0)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        left = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    for i, row in enumerate(rows):
        assert torch.allclose(right[i, len(row) - 1], alone[i], atol=1e-5)
        assert torch.allclose(left[i, -1], alone[i], atol=1e-5)
    hidden = last_token_hidden_states(model, rows, 0)
    for i, row in enumerate(rows):
        assert torch.allclose(hidden[i], last_token_hidden_states(model, [row], 0)[0], atol=1e-5)
