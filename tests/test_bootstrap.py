"""Reward heads for any base model: ``panda-chat reward bootstrap``, the manifest ChatPanda reads, and what ChatPanda
does on a model with no heads."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
from click.testing import CliRunner

from panda_chat.chat_model import ChatPanda
from panda_chat.cli import main
from panda_chat.rewards.heads import RewardHead
from panda_chat.rewards.manifest import HEADS_DIR_ENV, MANIFEST_FILE, HeadsManifest
from profiles import PreferenceCatalog, ProfileStore

HUMOUR = """
[[dimensions]]
name = "humour"
[[dimensions.poles]]
name = "serious"
description = "A serious, matter-of-fact answer."
examples = ["No jokes please, this is important.", "Keep it strictly factual."]
[[dimensions.poles]]
name = "playful"
description = "A light, playful, funny answer."
examples = ["Make it funny!", "Tell it with a joke or two."]
"""


@pytest.fixture
def model_copy(tiny_models, tmp_path):
    """A fresh folder of the tiny base model (ChatPanda's runtimes are per folder, so nothing is shared)."""
    return shutil.copytree(tiny_models.base, tmp_path / "model")


def bootstrap(*args):
    return CliRunner().invoke(main, ["reward", "bootstrap", *map(str, args), "--pairs", "20", "--threads", "1"])


def test_bootstrap_writes_a_head_per_pole_with_accuracies_and_refuses_to_overwrite(model_copy, tmp_path):
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(HUMOUR, encoding="utf-8")
    out = tmp_path / "heads"
    options = ["--catalog", catalog, "--self-pairs", "2", "--features", "last+mean", "--json"]
    result = bootstrap("--base", model_copy, "--out", out, *options)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["settings"]["features"] == "last+mean"  # heads on the candidates' own states, when asked
    poles = {p["pole"]: p for p in report["poles"]}
    # poles given only in words become heads too; the corpus's poles get its pairs (and self-written ones kept)
    assert all(poles[p]["source"] == "words" and poles[p]["accuracy"] is None for p in ("serious", "playful"))
    assert poles["formal"]["source"] in ("corpus", "corpus+self") and poles["formal"]["accuracy"] is not None
    manifest = HeadsManifest.load(out)
    assert set(manifest.heads) == set(poles)
    assert all(RewardHead.load(out / entry.path).config.features == "last+mean" for entry in manifest.heads.values())
    again = bootstrap("--base", model_copy, "--out", out, "--catalog", catalog)
    assert again.exit_code != 0 and "--force" in again.stderr


def test_corpus_poles_report_complete_and_partial_accuracy_and_chat_panda_uses_the_heads(model_copy, tmp_path):
    result = bootstrap("--base", model_copy, "--self-pairs", "0", "--json")  # default --out: the model folder
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {p["source"] for p in report["poles"]} == {"corpus"}
    assert report["settings"]["features"] == "prefix+token"  # the default: steering runs no candidate forward
    for pole in report["poles"]:
        assert 0.0 <= pole["accuracy"] <= 1.0 and 0.0 <= pole["partial_accuracy"] <= 1.0
    assert (model_copy / MANIFEST_FILE).is_file()
    with ProfileStore(tmp_path / "p.db", embedder="hashing") as store:
        store.set_preference("ann", "tone", "formal")
        answer = ChatPanda(model=str(model_copy), store=store, user_id="ann", max_tokens=4, device="cpu").invoke("Hi")
    assert answer.response_metadata["personalization"]["reward_kinds"] == ["head"]


def test_a_model_without_heads_says_so_once_or_builds_them(model_copy, tmp_path, monkeypatch):
    monkeypatch.setenv(HEADS_DIR_ENV, str(tmp_path / "user-heads"))
    with ProfileStore(tmp_path / "p.db", embedder="hashing") as store:
        store.set_preference("ann", "tone", "formal")
        llm = ChatPanda(model=str(model_copy), store=store, user_id="ann", max_tokens=3, device="cpu")
        with pytest.warns(RuntimeWarning, match=f"panda-chat reward bootstrap --base {model_copy}"):
            llm.invoke("Hi")
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # said once, not on every call
            assert llm.invoke("Hi").response_metadata["personalization"]["reward_kinds"] == ["zero_shot"]

        fresh = shutil.copytree(model_copy, tmp_path / "model2")
        builder = ChatPanda(model=str(fresh), store=store, user_id="ann", max_tokens=3, device="cpu", build_heads=True)
        answer = builder.invoke("Hi")
    assert answer.response_metadata["personalization"]["reward_kinds"] == ["head"]
    built = list((tmp_path / "user-heads").glob(f"*/{MANIFEST_FILE}"))
    assert len(built) == 1 and not (fresh / MANIFEST_FILE).exists()  # the user's model folder is left alone


@pytest.mark.parametrize(
    ("family", "config"),
    [
        ("gpt2", {"n_positions": 64}),  # learned positions cannot read past their last one: answers are cut to fit
        ("gemma3-multimodal", {}),  # its sizes are in the text config
    ],
)
def test_other_families_are_bootstrapped_and_steer_with_their_heads(tmp_path, family, config):
    from model_families import FAMILY_BY_NAME

    from panda_chat.tiny_models import sample_corpus, train_tokenizer

    tokenizer = train_tokenizer(sample_corpus(), vocab_size=512)
    folder = tmp_path / family
    FAMILY_BY_NAME[family].build(len(tokenizer), **config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    result = bootstrap("--base", folder, "--self-pairs", "0", "--json")
    assert result.exit_code == 0, result.output
    assert {p["source"] for p in json.loads(result.stdout)["poles"]} == {"corpus"}
    with ProfileStore(tmp_path / "p.db", embedder="hashing") as store:
        store.set_preference("ann", "tone", "formal")
        answer = ChatPanda(model=str(folder), store=store, user_id="ann", max_tokens=4, device="cpu").invoke("Hi")
    assert answer.response_metadata["personalization"]["reward_kinds"] == ["head"]


REGISTER = """
[[dimensions]]
name = "register"
[[dimensions.poles]]
name = "formal"
description = "Legal, bureaucratic register: long sentences, defined terms, citations of clauses."
examples = ["Pursuant to clause 4(b), the party of the first part shall notify the other party."]
[[dimensions.poles]]
name = "casual"
description = "Slangy chat register."
examples = ["yo, quick q about this"]
"""


def test_a_pole_name_two_dimensions_share_gets_a_head_of_its_own(model_copy, tmp_path):
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(REGISTER, encoding="utf-8")
    result = bootstrap("--base", model_copy, "--catalog", catalog, "--self-pairs", "0", "--json")
    assert result.exit_code == 0, result.output
    poles = {f"{p['dimension']}.{p['pole']}": p for p in json.loads(result.stdout)["poles"]}
    # the corpus writes tone.formal, not this catalog's register.formal: that one is made from its own words
    assert poles["tone.formal"]["source"] == "corpus" and poles["register.formal"]["source"] == "words"
    assert poles["tone.formal"]["path"] != poles["register.formal"]["path"]
    assert len(HeadsManifest.load(model_copy).heads) == len(poles) == 8
    preferences = PreferenceCatalog.from_file(catalog)
    with ProfileStore(tmp_path / "p.db", embedder="hashing", catalog=preferences) as store:
        store.set_preference("ann", "register", "formal")
        llm = ChatPanda(model=str(model_copy), store=store, user_id="ann", max_tokens=3, device="cpu")
        steering = llm.invoke("Hi").response_metadata["personalization"]["steering"]
    assert {(s["reward"], s["kind"]) for s in steering} == {("register.formal", "head"), ("register.casual", "head")}
    used = {s["reward"]: s for s in steering}
    assert used["register.formal"]["weight"] > 0
    from panda_chat.chat_model.runtime import model_runtime

    heads = model_runtime(model_copy, device="cpu").defaults.pole_rewards
    assert heads["register.formal"].path.endswith(poles["register.formal"]["path"])
    assert heads["tone.formal"].path.endswith(poles["tone.formal"]["path"])


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_a_base_that_is_no_model_folder_is_a_one_line_error(tmp_path, make):
    base = tmp_path / "base"
    if make == "empty":
        base.mkdir()
    elif make == "file":
        base.write_text("not a model", encoding="utf-8")
    result = bootstrap("--base", base)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert str(base) in result.stderr and len(result.stderr.strip().splitlines()[-1]) < 200
    assert {"missing": "not found", "empty": "no config.json", "file": "is a file"}[make] in result.stderr


def test_heads_written_where_chat_panda_does_not_look_are_said_so(model_copy, tmp_path):
    elsewhere = bootstrap("--base", model_copy, "--out", tmp_path / "heads", "--self-pairs", "0", "--json")
    assert elsewhere.exit_code == 0, elsewhere.output
    assert (
        f"reads heads from {model_copy}" in elsewhere.stderr and "copy panda_heads.json and heads/" in elsewhere.stderr
    )
    json.loads(elsewhere.stdout)  # the note is on stderr: stdout stays one JSON object
    # the model folder itself, named with --out: no note, and no --force needed while it holds no manifest
    into_model = bootstrap("--base", model_copy, "--out", model_copy, "--self-pairs", "0")
    assert into_model.exit_code == 0, into_model.output
    assert "note:" not in into_model.stderr and (model_copy / MANIFEST_FILE).is_file()
