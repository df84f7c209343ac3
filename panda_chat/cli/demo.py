"""``panda-chat demo``: the product working in a minute, offline, on the embedded demo models.

Two users get short conversation histories that imply different preferences, in a temporary profile store. Both then
ask the same questions through ``ChatPanda`` with its default settings. For each question the demo prints the
unguided answer (the base model alone), each user's PANDA answer, and every answer's rewards (calibrated, so 0 is an
average answer and +1 is one standard deviation toward the pole). Before that, it prints what the store inferred
about each user and the messages that are the evidence. When steering leaves an answer unchanged, the demo says so
rather than hiding it, with the inferred poles the unchanged answer already leans toward, and it ends with the
measured count of personalised answers that moved toward their user's inferred styles. ``--json`` prints
all of it as one object.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from panda_chat.cli.errors import friendly_errors
from panda_chat.cli.options import embedder_option, json_option

# user -> their past messages, three clear requests per preference. Each user wants something the demo LM does not
# do unguided: on its trained topics it answers elementary, concise and friendly (25 of 25 unguided answers concise
# and friendly, 22 elementary, in `benchmarks/demo_personas.py`), so a user who wants that has nothing to show. ana
# is a beginner who wants thorough, courteous answers (elementary, detailed, formal); ben a professional who wants
# them short and courteous (expert, concise, formal). The pair was chosen over many questions, not the demo's
# three (table in benchmarks/README.md).
DEMO_HISTORIES: dict[str, tuple[str, ...]] = {
    "ana": (
        "Can you explain photosynthesis like I'm five?",
        "Explain it to me like I'm a total newbie, no jargon please: what is a computer virus?",
        "I'm a total beginner, keep it simple: why does bread dough rise?",
        "Walk me through how a car engine works, every step, with examples.",
        "I want the full, thorough explanation of how vaccines work.",
        "Give me the long explanation with all the background: why did the Roman Empire fall?",
        "Dear assistant, would you kindly explain what the stock market is?",
        "Good morning. Could you kindly explain what inflation is?",
        "Good afternoon. Could you please explain what a pension is? With kind regards.",
    ),
    "ben": (
        "Skip the basics, I work in machine learning professionally. What exactly is overfitting?",
        "Use the precise technical terms, I'm a structural engineer: why do bridges have expansion joints?",
        "Assume graduate-level chemistry: what is the rate-limiting step of the Maillard reaction?",
        "What is a vaccine, in one sentence?",
        "Too long last time, give me the short version: what is a mortgage?",
        "Give me the bottom line, no background: is coffee bad for you?",
        "Good morning. Would you be so kind as to explain what a bond yield is?",
        "Good evening. Could you kindly tell me what a central bank does? Many thanks.",
        "Dear assistant, could you please explain what a patent is? With kind regards.",
    ),
}
_WIDTH = 100


def _wrap(label: str, text: str) -> str:
    return textwrap.fill(text, width=_WIDTH, initial_indent=f"  {label:<11}", subsequent_indent=" " * 13)


@click.command("demo")
@click.option(
    "--questions",
    "n_questions",
    default=3,
    show_default=True,
    type=click.IntRange(1, 20),
    help="How many questions both users ask.",
)
@click.option("--max-tokens", default=100, show_default=True, type=click.IntRange(8, 512))
@click.option("--seed", default=0, show_default=True, help="Picks the questions.")
@click.option(
    "--heldout",
    is_flag=True,
    help="Ask about topics the demo LM never saw (Table 2's topics): the style is steered, the content "
    "is made up. Default: topics it was trained on, labelled as such.",
)
@embedder_option
@json_option("Print one JSON object (users, questions, answers, rewards).")
@friendly_errors
def demo(n_questions: int, max_tokens: int, seed: int, heldout: bool, embedder: str | None, as_json: bool) -> None:
    """Two users, the same questions, different answers: PANDA on the embedded demo models, offline."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    started = time.perf_counter()
    echo = (lambda *args, **kwargs: None) if as_json else click.echo
    result = run_demo(n_questions, max_tokens, seed, heldout, embedder, echo)
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
    else:
        click.echo(f"done in {time.perf_counter() - started:.1f} s")


def run_demo(
    n_questions: int,
    max_tokens: int,
    seed: int,
    heldout: bool,
    embedder: str | None,
    echo: Callable[..., None],
    histories: Mapping[str, Sequence[str]] = DEMO_HISTORIES,
) -> dict:
    """Run the demo, printing as it goes through ``echo``; returns the ``--json`` object.

    ``histories`` (user -> past messages) is the demo's two users unless a benchmark measures other personas
    (``benchmarks/demo_personas.py``) through the very same questions, models and count."""
    from langchain_core.messages import HumanMessage

    from panda_chat.chat_model import ChatPanda
    from panda_chat.demo import demo_head_paths, demo_model_dir
    from panda_chat.demo.catalog import demo_catalog
    from panda_chat.demo.corpus import DIMENSIONS, POLES, DialogueCorpus
    from panda_chat.demo.scoring import DemoRewardScorer
    from profiles.store import ProfileStore

    corpus = DialogueCorpus(seed)
    questions = corpus.prompts(n_questions, split="heldout" if heldout else "train")
    model_dir = str(demo_model_dir())
    workdir = Path(tempfile.mkdtemp(prefix="panda-demo-"))
    result: dict = {"users": [], "questions": []}
    try:
        store = ProfileStore(workdir / "profiles.sqlite", catalog=demo_catalog(), embedder=embedder)
        store.embedder  # noqa: B018 - load it now: a wrong --embedder fails before anything is printed
        echo(
            f"panda-chat demo: base model {model_dir}\ntemporary profile store {workdir}; "
            "ChatPanda with its default settings (every turn recorded, the model's own heads and lambda)\n"
        )
        inferred: dict[str, dict[str, str]] = {}
        for user, history in histories.items():
            store.add_messages(user, [("user", text, None) for text in history])
            context = store.preferences(user)
            echo(f"== {user}: {len(history)} past messages")
            for name, pref in context.dimensions.items():
                weights = ", ".join(f"{pole} {w:.2f}" for pole, w in pref.weights.items())
                echo(
                    f"  {name:<10} -> {pref.top_pole:<10} ({weights}; confidence {pref.confidence:.2f}, {pref.source})"
                )
            for item in context.evidence[:4]:
                echo(f'  evidence  {item.pole:<10} {item.score:.2f}  "{item.text}"')
            echo("")
            inferred[user] = {
                name: pref.top_pole
                for name, pref in context.dimensions.items()
                if pref.confidence > 0 and pref.top_pole is not None
            }
            result["users"].append({"user_id": user, "inferred": inferred[user]})

        unguided = ChatPanda(model=model_dir, store=store, personalize=False, record=False, max_tokens=max_tokens)
        steered = {
            user: ChatPanda(model=model_dir, user_id=user, store=store, max_tokens=max_tokens) for user in histories
        }  # the defaults: record=True, the model's manifest heads and lambda
        scorer = DemoRewardScorer(model_dir, demo_head_paths())
        shown = [pole for pole in POLES if pole in scorer.poles]
        echo("rewards: calibrated head scores per pole (0 = an average answer, +1 = one std toward the pole)\n")
        moved, total = 0, 0
        for number, question in enumerate(questions, start=1):
            echo(f"Q{number}. {question}  [{'held-out topic' if heldout else 'a topic the demo LM was trained on'}]")
            answers = {"unguided": unguided.invoke([HumanMessage(question)]).text}
            lambdas = {}
            for user, model in steered.items():
                message = model.invoke([HumanMessage(question)])
                answers[user] = message.text
                lambdas[user] = message.response_metadata.get("personalization", {}).get("lambda", {}).get("mean")
            rewards = {label: scorer.score(question, answer) for label, answer in answers.items()}
            entry: dict[str, Any] = {"question": question, "trained_topic": not heldout, "answers": []}
            for label, answer in answers.items():
                echo(_wrap(label, answer or "(empty answer)"))
                line = "  ".join(f"{pole} {rewards[label][pole]:+.2f}" for pole in shown)
                extra = ""
                if label != "unguided":
                    toward = _dimensions_moved(rewards[label], rewards["unguided"], inferred[label], DIMENSIONS)
                    total += 1
                    moved += len(toward) >= 2
                    extra = f"  | lambda mean {lambdas[label]:.2f}" if lambdas.get(label) is not None else ""
                    extra += f"  | moved toward {', '.join(toward) or 'none'} of its inferred poles"
                    if answer == answers["unguided"]:
                        leaning = _dimensions_leaning(rewards["unguided"], inferred[label], DIMENSIONS)
                        extra += (
                            f"  | steering did not change this answer, which already leans toward "
                            f"{', '.join(leaning) or 'none'} of its inferred poles"
                        )
                echo(" " * 13 + line + extra)
                entry["answers"].append({"who": label, "text": answer, "rewards": rewards[label]})
            result["questions"].append(entry)
            echo("")
        store.close()
        result["moved_toward_inferred"] = {
            "answers": moved,
            "of": total,
            "rule": "on at least 2 of 3 dimensions, "
            "the reward margin of the inferred pole over its opposite is larger "
            "than the unguided answer's",
        }
        echo(
            f"measured: {moved} of {total} personalised answers move toward their user's inferred pole on at "
            "least 2 of 3 dimensions (vs the unguided answer)"
        )
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _dimensions_leaning(
    rewards: dict[str, float], inferred: dict[str, str], dimensions: dict[str, tuple[str, str]]
) -> list[str]:
    """The inferred poles an answer already favours: the pole's reward is above its opposite's. An unchanged
    answer that leans the user's way on every dimension left steering nothing to do; one that does not, missed."""
    return [
        pole
        for dimension, pole in inferred.items()
        if dimension in dimensions and rewards[pole] > rewards[next(p for p in dimensions[dimension] if p != pole)]
    ]


def _dimensions_moved(
    own: dict[str, float], unguided: dict[str, float], inferred: dict[str, str], dimensions: dict[str, tuple[str, str]]
) -> list[str]:
    """The inferred poles this answer moved toward: the pole's reward margin over its opposite grew vs unguided."""
    toward = []
    for dimension, pole in inferred.items():
        if dimension not in dimensions:
            continue
        a, b = dimensions[dimension]
        other = b if pole == a else a
        if own[pole] - own[other] > unguided[pole] - unguided[other]:
            toward.append(pole)
    return toward
