"""Stop strings (multi-token, per row), incremental detokenisation and streaming."""

from __future__ import annotations

import pytest
from test_decoding import make_head

from panda_chat.decoding import DecodingError, PandaDecoder
from panda_chat.decoding.stopping import IncrementalDetokenizer, StopTracker, held_back_length

PROMPTS = ["The cat", "A student compares linear algebra", "Your garden enjoys the weather politely. It took 7"]
STEER = dict(weights={"formal": 1.0}, lam=2.0)


@pytest.fixture(scope="module")
def decoder(tiny_models) -> PandaDecoder:
    dec = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32")
    dec = PandaDecoder(dec.model, dec.tokenizer)
    dec.add_reward("formal", make_head(dec.model))
    return dec


def stop_string_from(decoder: PandaDecoder, outputs: list, row: int) -> str:
    """A stop string row ``row`` really generates: 2-3 consecutive generated tokens of plain text (several tokens
    once re-encoded), and, when there are several rows, one that not every row generates."""
    found = find_stop_string(decoder, outputs, row)
    if found is None:
        pytest.fail(f"no plain-text stop string in {outputs[row].text!r}")
    return found


def find_stop_string(decoder: PandaDecoder, outputs: list, row: int) -> str | None:
    """``stop_string_from``'s string, or None when the row generated none."""
    ids = outputs[row].token_ids
    for start in range(3, len(ids) - 3):
        for n in (2, 3):
            piece = decoder.tokenizer.decode(ids[start : start + n])
            plain = (
                len(piece) >= 3
                and piece.strip() == piece
                and all(c.isascii() and (c.isalnum() or c == " ") for c in piece)
            )
            if (
                plain
                and len(decoder.tokenizer(piece)["input_ids"]) >= 2
                and (len(outputs) == 1 or not all(piece in o.text for o in outputs))
            ):
                return piece
    return None


def test_stop_strings_end_rows_independently_and_are_cut_from_the_text(decoder):
    full = decoder.generate(PROMPTS, max_new_tokens=30, stop_at_eos=False, **STEER)
    stop = stop_string_from(decoder, full, row=1)
    outputs = decoder.generate(PROMPTS, max_new_tokens=30, stop_at_eos=False, stop=[stop, "never-said"], **STEER)
    for out, whole in zip(outputs, full):
        if stop in whole.text:
            cut = whole.text.index(stop)
            assert out.finish_reason == "stop" and out.text == whole.text[:cut]
            # Generation ends with the token that completed the stop string: ids are a prefix of the full run.
            assert out.token_ids == whole.token_ids[: len(out.token_ids)] and len(out.token_ids) < 30
            assert stop in decoder.tokenizer.decode(out.token_ids)
            assert stop not in decoder.tokenizer.decode(out.token_ids[:-1])
        else:
            assert out.finish_reason == "length" and (out.token_ids, out.text) == (whole.token_ids, whole.text)
            assert out.rewards == pytest.approx(whole.rewards, abs=1e-4)  # the batch shrank: float rounding only
    assert outputs[1].finish_reason == "stop"
    assert any(o.finish_reason == "length" for o in outputs), "pick a stop string only some rows generate"


def test_streaming_yields_the_final_text_piece_by_piece(decoder):
    (whole,) = decoder.generate(PROMPTS[1], max_new_tokens=25, **STEER)
    pieces = list(decoder.stream(PROMPTS[1], max_new_tokens=25, **STEER))
    assert "".join(pieces) == whole.text and len(pieces) > 5
    stop = stop_string_from(decoder, [whole], row=0)
    (stopped,) = decoder.generate(PROMPTS[1], max_new_tokens=25, stop=[stop], **STEER)
    streamed = list(decoder.stream(PROMPTS[1], max_new_tokens=25, stop=[stop], **STEER))
    assert stopped.finish_reason == "stop" and "".join(streamed) == stopped.text
    assert all(stop not in piece for piece in streamed)


def test_stream_gives_the_full_output_after_its_pieces(decoder):
    (whole,) = decoder.generate(PROMPTS[1], max_new_tokens=25, **STEER)
    stream = decoder.stream(PROMPTS[1], max_new_tokens=25, **STEER)
    assert not stream.done
    pieces = list(stream)
    out = stream.output
    assert stream.done and "".join(pieces) == out.text == whole.text
    assert out.token_ids == whole.token_ids and out.finish_reason == whole.finish_reason
    assert out.rewards == pytest.approx(whole.rewards, abs=1e-4) and out.lambdas == whole.lambdas
    assert (out.prompt_tokens, out.completion_tokens) == (whole.prompt_tokens, whole.completion_tokens)
    # Reading the output early decodes the rest: nothing is lost.
    early = decoder.stream(PROMPTS[1], max_new_tokens=25, **STEER)
    first = next(early)
    assert whole.text.startswith(first) and early.output.token_ids == whole.token_ids
    assert list(early) == []


def test_stream_refuses_bad_options_when_called(decoder):
    with pytest.raises(DecodingError, match="top_k"):
        decoder.stream(PROMPTS[1], top_k=0)


def test_batched_token_callback_gives_each_rows_text(decoder):
    received: dict[int, list[str]] = {i: [] for i in range(len(PROMPTS))}
    full = decoder.generate(PROMPTS, max_new_tokens=20, stop_at_eos=False, **STEER)
    # a row that generated plain text (the tiny random model's text is mostly bytes): its stop string ends it
    row, stop = next((i, found) for i in (2, 1, 0) if (found := find_stop_string(decoder, full, i)) is not None)
    outputs = decoder.generate(
        PROMPTS,
        max_new_tokens=20,
        stop_at_eos=False,
        stop=stop,
        on_token=lambda row, piece: received[row].append(piece),
        **STEER,
    )
    assert ["".join(received[i]) for i in range(len(PROMPTS))] == [o.text for o in outputs]
    assert outputs[row].finish_reason == "stop"


def test_incremental_detokenizer_matches_decoding_at_once_with_multibyte_text(tiny_models):
    dec = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32")
    text = "Café naïve 😀 — über straße, ≈ 3.14 µs; 東京 ok"
    ids = dec.tokenizer(text)["input_ids"]
    detok = IncrementalDetokenizer(dec.tokenizer)
    pieces = [detok.push(i) for i in ids]
    assert "".join(pieces) + detok.flush() == dec.tokenizer.decode(ids) == text
    assert "" in pieces, "a byte-level BPE splits multi-byte characters: some tokens complete no text"


def test_held_back_text_is_the_longest_possible_start_of_a_stop_string():
    assert held_back_length("hello\nUs", ["\nUser:"]) == 3
    assert held_back_length("hello", ["\nUser:"]) == 0
    assert held_back_length("ab", ["b", "abc"]) == 2  # "ab" could still become "abc"
    assert held_back_length("xa", ["ab", "xab"]) == 2


def test_stop_tracker_finds_stop_strings_split_over_tokens(tiny_models):
    dec = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32")
    ids = dec.tokenizer("the cat said\nUser: hi")["input_ids"]
    tracker = StopTracker(dec.tokenizer, 1, eos_token_ids=[], stop_strings=["\nUser:"])
    pieces = []
    for token in ids:
        pieces += [piece for _, piece in tracker.update([token], [0])]
        if tracker.rows[0].finish_reason:
            break
    assert tracker.rows[0].finish_reason == "stop"
    assert tracker.final_text(0) == "".join(pieces) == "the cat said"
