"""``panda-chat demo``: the product working in a minute, offline, on the embedded demo models.

Two users get short conversation histories that imply opposite preferences, in a temporary profile store. Both then
ask the same questions through ``ChatPanda``. For each question the demo prints the unguided answer (the base model
alone), each user's PANDA answer, and every answer's rewards (calibrated, so 0 is an average answer and +1 is one
standard deviation toward the pole). Before that, it prints what the store inferred about each user and the messages
that are the evidence. When steering leaves an answer unchanged, the demo says so rather than hiding it.
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import click

from panda_chat.cli.errors import friendly_errors

# user -> their past messages: two per preference they imply (ana: elementary, concise, friendly; ben: expert,
# detailed, formal). The topics are training topics; the demo's questions are about held-out ones.
DEMO_HISTORIES: dict[str, tuple[str, ...]] = {
    "ana": (
        "Can you explain photosynthesis like I'm five?",
        "I'm a complete beginner in cooking, please keep it simple: why does bread dough rise?",
        "Keep it short please: what is inflation?",
        "tl;dr on compound interest?",
        "hey!! thanks so much, you're awesome :) what's a black hole?",
        "Hiya! quick question for ya, how do magnets work?",
    ),
    "ben": (
        "Skip the basics, I work in machine learning professionally. What exactly is overfitting?",
        "Give me the rigorous version of how DNS resolution works, with the relevant technical details.",
        "Please walk me through gradient descent step by step, with examples, and don't leave anything out.",
        "I want the full, thorough explanation of how vaccines work.",
        "Dear assistant, I would be grateful for a formal summary of how interest rates work.",
        "Kindly provide a professional overview of the stock market.",
    ),
}
_WIDTH = 100


def _wrap(label: str, text: str) -> str:
    return textwrap.fill(text, width=_WIDTH, initial_indent=f"  {label:<11}", subsequent_indent=" " * 13)


@click.command("demo")
@click.option("--questions", "n_questions", default=3, show_default=True, type=click.IntRange(1, 20),
              help="How many held-out questions both users ask.")
@click.option("--max-tokens", default=100, show_default=True, type=click.IntRange(8, 512))
@click.option("--seed", default=0, show_default=True, help="Picks the held-out questions.")
@click.option("--embedder", default=None,
              help="Profile-store embedder (default: all-MiniLM-L6-v2 from the installed package; 'hashing' for "
                   "a dependency-free one).")
@friendly_errors
def demo(n_questions: int, max_tokens: int, seed: int, embedder: str | None) -> None:
    """Two users, the same questions, different answers: PANDA on the embedded demo models, offline."""
    from langchain_core.messages import HumanMessage
    from transformers.utils import logging as transformers_logging

    from panda_chat.chat_model import ChatPanda
    from panda_chat.demo import demo_head_paths, demo_lambda_path, demo_model_dir
    from panda_chat.demo.catalog import demo_catalog
    from panda_chat.demo.corpus import POLES, DialogueCorpus
    from panda_chat.demo.scoring import DemoRewardScorer
    from panda_chat.lam.learned import LearnedLambda
    from profiles.store import ProfileStore

    transformers_logging.disable_progress_bar()
    started = time.perf_counter()
    corpus = DialogueCorpus(seed)
    questions = corpus.prompts(n_questions, split="heldout")
    model_dir = str(demo_model_dir())
    workdir = Path(tempfile.mkdtemp(prefix="panda-demo-"))
    try:
        store = ProfileStore(workdir / "profiles.sqlite", catalog=demo_catalog(), embedder=embedder)
        store.embedder  # noqa: B018 - load it now: a wrong --embedder fails before anything is printed
        click.echo(f"panda-chat demo: base model {model_dir}\n"
                   f"temporary profile store {workdir}; lambda: learned ({demo_lambda_path().name})\n")
        for user, history in DEMO_HISTORIES.items():
            store.add_messages(user, [("user", text, None) for text in history])
            context = store.preferences(user)
            click.echo(f"== {user}: {len(history)} past messages")
            for name, pref in context.dimensions.items():
                weights = ", ".join(f"{pole} {w:.2f}" for pole, w in pref.weights.items())
                click.echo(f"  {name:<10} -> {pref.top_pole:<10} ({weights}; confidence {pref.confidence:.2f}, "
                           f"{pref.source})")
            for item in context.evidence[:4]:
                click.echo(f"  evidence  {item.pole:<10} {item.score:.2f}  \"{item.text}\"")
            click.echo("")

        lam = LearnedLambda.load(demo_lambda_path())
        unguided = ChatPanda(model=model_dir, store=store, personalize=False, record=False, max_tokens=max_tokens)
        steered = {user: ChatPanda(model=model_dir, user_id=user, store=store, lam=lam,
                                   max_tokens=max_tokens) for user in DEMO_HISTORIES}
        scorer = DemoRewardScorer(model_dir, demo_head_paths())
        shown = [pole for pole in POLES if pole in scorer.poles]
        click.echo("rewards: calibrated head scores per pole (0 = an average answer, +1 = one std toward the pole)\n")
        for number, question in enumerate(questions, start=1):
            click.echo(f"Q{number}. {question}")
            base_answer = unguided.invoke([HumanMessage(question)]).text
            answers = {"unguided": base_answer}
            lambdas = {}
            for user, model in steered.items():
                message = model.invoke([HumanMessage(question)])
                answers[user] = message.text
                lam_info = message.response_metadata.get("personalization", {}).get("lambda", {})
                lambdas[user] = lam_info.get("mean")
            for label, answer in answers.items():
                click.echo(_wrap(label, answer or "(empty answer)"))
                rewards = scorer.score(question, answer)
                line = "  ".join(f"{pole} {rewards[pole]:+.2f}" for pole in shown)
                extra = ""
                if label != "unguided":
                    extra = f"  | lambda mean {lambdas[label]:.2f}" if lambdas.get(label) is not None else ""
                    if answer == base_answer:
                        extra += "  | steering did not change this answer"
                click.echo(" " * 13 + line + extra)
            click.echo("")
        store.close()
        click.echo(f"done in {time.perf_counter() - started:.1f} s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
