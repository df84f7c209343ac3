"""``panda-chat chat``: talk to a personalised model in the terminal, and teach it what you prefer.

    panda-chat chat --user alice                    # the embedded demo model
    panda-chat chat --user alice --model ./my-chat-model --db profiles.db

Answers stream token by token. Every turn is recorded in alice's profile (unless ``--no-record``), so the answers
shift as she talks. Commands inside the chat:

    /why          which preferences steer the answers now, and the messages they were inferred from
    /good, /bad   rate the last answer (feedback moves the inferred preferences)
    /prefer       show two alternative answers to the last question; /prefer 1 or /prefer 2 picks the better one
    /train        train your own reward head on your feedback now (it also retrains in the background after
                  /good, /bad and /prefer once there are enough feedback pairs); it steers your next answers
    /reset        start a new conversation (the profile stays)
    /help, /quit
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from panda_chat.cli.errors import friendly_errors, one_line
from panda_chat.cli.options import (
    catalog_option,
    db_option,
    device_option,
    dtype_option,
    embedder_option,
    model_option,
    top_k_option,
    user_id_callback,
)

if TYPE_CHECKING:  # LangChain and the store load when a chat starts, never for --help
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import RunnableConfig

    from panda_chat.chat_model.model import ChatPanda
    from profiles.store import ProfileStore

HELP = """commands: /why  /good  /bad  /prefer [1|2]  /train  /reset  /help  /quit"""
# Feedback pairs needed before a user head is (re)trained from them.
MIN_TRAIN_PAIRS = 4
# The second alternative of /prefer is sampled, so it differs from the greedy answer.
ALTERNATIVE_TEMPERATURE = 0.9


@dataclass
class ChatSession:
    """One terminal conversation: the history sent with each call, and what feedback commands refer to."""

    llm: ChatPanda
    store: ProfileStore
    user: str
    history: list[BaseMessage] = field(default_factory=list)
    conversation_id: int | None = None
    alternatives: list[str] = field(default_factory=list)
    record: bool = True
    """False (``--no-record``): nothing is written to the store, feedback included."""
    trainer: threading.Thread | None = None

    @property
    def last_question(self) -> str | None:
        from langchain_core.messages import HumanMessage

        return next((m.text for m in reversed(self.history) if isinstance(m, HumanMessage)), None)

    @property
    def last_answer(self) -> str | None:
        from langchain_core.messages import AIMessage

        return next((m.text for m in reversed(self.history) if isinstance(m, AIMessage)), None)

    def config(self) -> RunnableConfig:
        configurable: dict[str, str | int] = {"user_id": self.user}
        if self.conversation_id is not None:
            configurable["conversation_id"] = self.conversation_id
        return {"configurable": configurable}

    def ask(self, text: str) -> None:
        """Stream the answer to ``text``; the turn joins the history (and the profile, when recording)."""
        from langchain_core.messages import AIMessage, HumanMessage

        messages = [*self.history, HumanMessage(text)]
        pieces, last = [], None
        click.echo("panda> ", nl=False)
        for chunk in self.llm.stream(messages, config=self.config()):
            if chunk.text:
                pieces.append(chunk.text)
                click.echo(chunk.text, nl=False)
            last = chunk
        click.echo()
        metadata = last.response_metadata if last is not None else {}
        if metadata.get("conversation_id") is not None:
            self.conversation_id = metadata["conversation_id"]
        self.history = [*messages, AIMessage("".join(pieces))]
        self.alternatives = []
        click.echo(f"  ({steering_line(metadata.get('personalization', {}))})")

    def why(self) -> None:
        click.echo(self.llm.explain(user_id=self.user, query=self.last_question))

    def rate(self, rating: float) -> None:
        question = self.last_question
        if self.last_answer is None or question is None:
            click.echo("nothing to rate yet: ask something first")
            return
        if not self.last_answer.strip():
            click.echo("the last answer is empty: nothing to rate (ask again, or try /prefer)")
            return
        if not self.record:
            click.echo("not stored: this chat runs with --no-record, so feedback is not kept either")
            return
        self.store.add_feedback(self.user, prompt=question, response=self.last_answer, rating=rating)
        click.echo("thanks, noted: " + ("more like this" if rating > 0 else "less like this"))
        self.retrain_in_background()

    def show_alternatives(self) -> None:
        from langchain_core.messages import AIMessage

        question = self.last_question
        if question is None:
            click.echo("ask something first, then /prefer shows two answers to compare")
            return
        quiet = self.llm.model_copy(update={"record": False})
        messages = self.history[:-1] if isinstance(self.history[-1], AIMessage) else self.history
        greedy = quiet.invoke(messages, config=self.config(), temperature=0.0).text
        sampled = quiet.invoke(messages, config=self.config(), temperature=ALTERNATIVE_TEMPERATURE).text
        self.alternatives = []
        for number, text in enumerate((greedy, sampled), start=1):
            click.echo(f"[{number}] {text}")
        if not greedy.strip() or not sampled.strip() or greedy == sampled:
            click.echo("nothing to compare: the two answers are the same or one is empty (try /prefer again)")
            return
        self.alternatives = [greedy, sampled]
        click.echo("pick the better one with /prefer 1 or /prefer 2")

    def prefer(self, choice: str) -> None:
        question = self.last_question
        if len(self.alternatives) != 2 or question is None:
            click.echo("no alternatives yet: type /prefer first")
            return
        if choice not in ("1", "2"):
            click.echo("choose 1 or 2")
            return
        chosen, rejected = self.alternatives if choice == "1" else self.alternatives[::-1]
        if not self.record:
            self.alternatives = []
            click.echo("not stored: this chat runs with --no-record, so feedback is not kept either")
            return
        self.store.add_feedback(self.user, prompt=question, chosen=chosen, rejected=rejected)
        self.alternatives = []
        click.echo(f"thanks, noted: you prefer answer {choice}")
        self.retrain_in_background()

    def train(self) -> str:
        """Train the user's own reward head on their feedback pairs (saved in their profile); a line saying how."""
        from panda_chat.chat_model.model import default_model_path
        from panda_chat.chat_model.runtime import model_runtime
        from panda_chat.rewards.training import train_user_reward_head

        if not self.record:
            return "not trained: this chat runs with --no-record, so nothing is saved to your profile"
        pairs = len(self.store.feedback_pairs(self.user))
        if pairs < MIN_TRAIN_PAIRS:
            return (
                f"your head needs {MIN_TRAIN_PAIRS} feedback pairs, you have {pairs}: use /prefer (or /good "
                "and /bad on answers to the same question)"
            )
        runtime = model_runtime(
            self.llm.model_name or default_model_path(), device=self.llm.device, dtype=self.llm.dtype
        )
        with runtime.lock:  # no decode runs while the head's features are computed on the same model
            trained = train_user_reward_head(
                self.store, self.user, (runtime.decoder.model, runtime.tokenizer), min_pairs=MIN_TRAIN_PAIRS
            )
        accuracy = trained.report.val_accuracy
        return (
            f"your reward head is trained on {pairs} feedback pairs"
            + (f" (held-out accuracy {accuracy:.2f})" if accuracy is not None else "")
            + ": it steers your next answers"
        )

    def retrain_in_background(self) -> None:
        """After new feedback: retrain the user's head in a background thread once there are enough pairs."""
        if self.trainer is not None and self.trainer.is_alive():
            return
        if len(self.store.feedback_pairs(self.user)) < MIN_TRAIN_PAIRS:
            return
        click.echo("retraining your reward head in the background ...")

        def run() -> None:
            try:
                click.echo(f"\n[{self.train()}]")
            except Exception as error:  # noqa: BLE001 - a failed retrain must not end the chat
                click.echo(f"\n[retraining your head failed: {one_line(error)}]", err=True)

        self.trainer = threading.Thread(target=run, daemon=True)
        self.trainer.start()

    def reset(self) -> None:
        self.history, self.conversation_id, self.alternatives = [], None, []
        click.echo("new conversation (your profile is kept)")


def steering_line(personalization: dict[str, Any]) -> str:
    """One short line: which poles steer the answer, and how strongly."""
    steering = [s for s in personalization.get("steering", []) if s["weight"] > 0]
    if not steering:
        return {"unguided": "preferences known, but no reward for this model: not steered"}.get(
            personalization.get("mode", ""), "not steered yet: no confident preference"
        )
    return "steered toward " + ", ".join(f"{s['pole']} ({s['dimension']}, {s['weight']:.2f})" for s in steering)


def handle(session: ChatSession, line: str) -> bool:
    """Run one input line; False when the chat should end."""
    command, _, argument = line.partition(" ")
    if not line.startswith("/"):
        session.ask(line)
    elif command in ("/quit", "/exit"):
        return False
    elif command == "/why":
        session.why()
    elif command in ("/good", "/bad"):
        session.rate(1.0 if command == "/good" else -1.0)
    elif command == "/prefer":
        session.prefer(argument.strip()) if argument.strip() else session.show_alternatives()
    elif command == "/train":
        if session.trainer is not None and session.trainer.is_alive():
            session.trainer.join()
        click.echo(session.train())
    elif command == "/reset":
        session.reset()
    else:
        click.echo(HELP)
    return True


@click.command("chat")
@click.option(
    "--user", required=True, callback=user_id_callback, help="Whose profile steers the answers (created on first use)."
)
@model_option
@db_option
@embedder_option
@catalog_option
@click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@top_k_option
@click.option(
    "--temperature",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="0 is greedy; more samples from the re-scored candidates.",
)
@click.option(
    "--lam",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Constant lambda [default: the model's fitted lambda, else 1].",
)
@device_option
@dtype_option
@click.option("--record/--no-record", default=True, show_default=True, help="Store the conversation in the profile.")
@click.option(
    "--build-heads",
    is_flag=True,
    help="A model with no reward heads: build them now (once, into the user data directory) instead of "
    "steering with the slow zero-shot text reward.",
)
@friendly_errors
def chat(
    user: str,
    model: str | None,
    db: str | None,
    embedder: str | None,
    catalog: str | None,
    max_tokens: int,
    top_k: int,
    temperature: float,
    lam: float | None,
    device: str,
    dtype: str,
    record: bool,
    build_heads: bool,
) -> None:
    """Chat in the terminal with answers personalised to USER; /help lists the commands.

    The whole configuration (user id, database, embedder, model) is checked before the first prompt, so a bad one
    exits at once with an error; the exit code is also non-zero when any turn failed."""
    from langchain_core.messages import HumanMessage

    from panda_chat.chat_model import ChatPanda  # torch loads only when a chat starts
    from profiles import PreferenceCatalog, ProfileStore

    store = ProfileStore(db, embedder=embedder, catalog=PreferenceCatalog.from_file(catalog) if catalog else None)
    failed_turns = 0
    try:
        store.embedder  # noqa: B018 - load the embedder now: a wrong --embedder fails before the first question
        llm = ChatPanda(
            model=model,
            user_id=user,
            store=store,
            max_tokens=max_tokens,
            top_k=top_k,
            temperature=temperature,
            lam=lam,
            device=device,
            dtype=dtype,
            record=record,
            build_heads=build_heads,
        )
        # load the model and format a message now: a wrong --model, or one with no chat template, fails before
        # the first question instead of at every turn
        llm.get_num_tokens_from_messages([HumanMessage("load")])
        session = ChatSession(llm=llm, store=store, user=user, record=record)
        click.echo(f"chatting as {user} ({HELP})")
        while True:
            click.echo("you> ", nl=False)
            line = sys.stdin.readline()
            if not line:
                click.echo()
                break
            line = line.strip()
            if not line:
                continue
            try:
                if not handle(session, line):
                    break
            except Exception as error:  # noqa: BLE001 - one failed turn must not end the chat
                failed_turns += 1
                click.echo(f"\nerror: {one_line(error)}", err=True)
    finally:
        store.close()
    if failed_turns:
        raise click.ClickException(f"{failed_turns} turn(s) failed (see the errors above)")
