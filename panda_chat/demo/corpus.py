"""A generator of assistant dialogues whose answers exist in every style of the default preference catalog.

The demo models have to show PANDA steering a model, offline, with nothing downloaded. So the project writes its own
training data: user questions about many topics (``panda_chat.demo.topics``), each answerable in 2 x 2 x 2 styles
(expertise: elementary | expert, verbosity: concise | detailed, tone: friendly | formal). Each style has surface
signals a small model can learn (plain words and analogies vs technical terms and precise figures; one sentence vs
several; warm openers and "you" vs an impersonal register), and each answer's content comes from its topic, so the
base model learns style and content separately and answers, unguided, in a mix of styles.

Everything is a pure function of a seed (``random.Random``), so the recipe that trains the demo models is
reproducible. Topics are split once, by a stable hash of their name, into ``train`` and ``heldout``: held-out topics
never appear in training data, and the Table 2 evaluation asks about them only.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

from panda_chat.demo.topics import TOPICS, Topic
from panda_chat.rewards.data import PreferencePair

Split = Literal["train", "heldout"]

# Dimension -> its two poles, in the default catalog's order. Poles are the names the shipped reward heads carry.
DIMENSIONS: dict[str, tuple[str, str]] = {
    "expertise": ("elementary", "expert"),
    "verbosity": ("concise", "detailed"),
    "tone": ("friendly", "formal"),
}
POLES: tuple[str, ...] = tuple(pole for poles in DIMENSIONS.values() for pole in poles)
HELDOUT_PERCENT = 15  # share of topics (by a stable hash of the name) that training never sees


def dimension_of(pole: str) -> str:
    """The dimension a pole belongs to (``"expert"`` -> ``"expertise"``)."""
    for dimension, poles in DIMENSIONS.items():
        if pole in poles:
            return dimension
    raise ValueError(f"unknown pole {pole!r}; known poles: {', '.join(POLES)}")


def opposite_pole(pole: str) -> str:
    """The other pole of the same dimension."""
    a, b = DIMENSIONS[dimension_of(pole)]
    return b if pole == a else a


@dataclass(frozen=True)
class StyleSpec:
    """One answer style: a pole on each of the three dimensions (the poles are ``DIMENSIONS``' strings: styles are
    built from that table and from ``dimension_of``, so the fields are plain ``str``)."""

    expertise: str  # "elementary" | "expert"
    verbosity: str  # "concise" | "detailed"
    tone: str  # "friendly" | "formal"

    @classmethod
    def all(cls) -> list[StyleSpec]:
        """The 8 combinations, in a fixed order."""
        return [
            cls(e, v, t) for e in DIMENSIONS["expertise"] for v in DIMENSIONS["verbosity"] for t in DIMENSIONS["tone"]
        ]

    @classmethod
    def random(cls, rng: random.Random) -> StyleSpec:
        return cls(*(rng.choice(DIMENSIONS[d]) for d in DIMENSIONS))

    def with_pole(self, pole: str) -> StyleSpec:
        """This style with ``pole`` on its dimension (other dimensions unchanged)."""
        return replace(self, **{dimension_of(pole): pole})

    @property
    def poles(self) -> tuple[str, str, str]:
        return (self.expertise, self.verbosity, self.tone)


@dataclass(frozen=True)
class Dialogue:
    """One user question and one assistant answer in a known style."""

    topic: Topic
    question: str
    answer: str
    style: StyleSpec

    def messages(self) -> list[dict[str, str]]:
        """Chat-template messages (user, assistant)."""
        return [{"role": "user", "content": self.question}, {"role": "assistant", "content": self.answer}]


def topic_split(topic: Topic) -> Split:
    """The split a topic belongs to: a stable hash of its name, the same for every seed and every run."""
    return "heldout" if zlib.crc32(topic.name.encode()) % 100 < HELDOUT_PERCENT else "train"


def topics_in(split: Split) -> list[Topic]:
    return [t for t in TOPICS if topic_split(t) == split]


# --- user questions (neutral: they ask about a topic without asking for a style) ---------------------------------

QUESTION_TEMPLATES: tuple[str, ...] = (
    "What is {name}?",
    "Can you explain {name}?",
    "How does {name} work?",
    "Tell me about {name}.",
    "What should I know about {name}?",
    "Explain {name} to me.",
    "Could you help me understand {name}?",
    "What's the deal with {name}?",
    "Give me an overview of {name}.",
    "How would you describe {name}?",
    "I'm curious about {name}. What is it?",
    "What do people mean by {name}?",
    "I have a question about {name}: how does it work?",
    "Can you tell me something about {name}?",
    "What is the idea behind {name}?",
    "Help me make sense of {name}.",
    "Why does {name} matter?",
    "What's important about {name}?",
    "I was reading about {name}. Can you explain it?",
    "How do you explain {name}?",
)

# --- user utterances that signal a pole (for the demo users' histories and the catalog's exemplars) ---------------

POLE_UTTERANCES: dict[str, tuple[str, ...]] = {
    "elementary": (
        "I'm new to {field}, so please keep it simple: what is {name}?",
        "Explain {name} like I'm five.",
        "I don't know much about {field}. Can you use plain words for {name}?",
        "Please avoid jargon, I'm just a beginner. What is {name}?",
        "I'm not a specialist at all. In everyday words, how does {name} work?",
        "My kid asked me about {name} and I have no idea. Can you explain it simply?",
    ),
    "expert": (
        "I work in {field}; give me the technical details of {name}.",
        "Skip the basics, I'm a specialist in {field}. What about {name}?",
        "Use precise terminology please: what is the mechanism of {name}?",
        "I need exact figures on {name} for my research.",
        "As a {field} professional, I want the rigorous explanation of {name}.",
        "Give me the technical picture of {name}, numbers included.",
    ),
    "concise": (
        "Just a quick answer please: what is {name}?",
        "In one sentence, what is {name}?",
        "Keep it short: {name}?",
        "TL;DR on {name}?",
        "No long explanations, just the gist of {name}.",
        "Briefly, what's {name}? I only have a minute.",
    ),
    "detailed": (
        "Can you walk me through {name} in depth?",
        "I want a thorough explanation of {name}, with all the details.",
        "Please explain {name} step by step and don't leave anything out.",
        "Give me the long version about {name}, I have time.",
        "Explain {name} fully, with examples and the reasons behind it.",
        "I'd like a complete, detailed answer on {name}.",
    ),
    "friendly": (
        "Hey there! Could you tell me about {name}? Thanks so much!",
        "Hi friend :) what's up with {name}?",
        "Hiya! Super curious about {name}!",
        "Thanks a bunch for the last answer! Now I'd love to hear about {name}!",
        "Hey, you're awesome! Quick one about {name}?",
        "Morning! Hope you're well :) Tell me about {name}?",
    ),
    "formal": (
        "Good afternoon. I would appreciate an explanation of {name}.",
        "Dear assistant, kindly provide information regarding {name}.",
        "I would be grateful for a formal summary of {name}.",
        "Please provide a professional overview of {name}.",
        "I request a precise and courteous account of {name}.",
        "Would you be so kind as to describe {name}? Thank you in advance.",
    ),
}

# --- answer phrases: (style pole[s]) -> alternatives ------------------------------------------------------------

_FRIENDLY_OPENERS = (
    "Great question!",
    "Oh, I love this one!",
    "Happy to help!",
    "Sure thing!",
    "Good one!",
    "Ooh, fun topic!",
    "Absolutely, let's dig in!",
)
_FORMAL_OPENERS = (
    "Certainly.",
    "Thank you for the question.",
    "The answer is as follows.",
    "Good day.",
    "An explanation follows.",
    "This question can be answered as follows.",
)
_FRIENDLY_CLOSERS = (
    "Hope that helps, and have fun with it!",
    "Let me know if you want more!",
    "You've got this!",
    "Enjoy exploring it!",
    "Happy learning, friend!",
    "Give it a try and tell me how it goes!",
)
_FORMAL_CLOSERS = (
    "I trust this clarifies the matter.",
    "Further details can be provided upon request.",
    "This concludes the explanation.",
    "Kind regards.",
    ("Should further clarification be required, it can be provided."),
    "It is hoped that this answer is of use.",
)
_FRIENDLY_LEADS = ("Sure thing, ", "Oh, easy one: ", "Great question, so ", "Happy to help: ", "Good one, ")
_FORMAL_LEADS = ("In short, ", "Briefly stated, ", "To summarise, ", "Put concisely, ", "In brief, ")

_CORE = {
    ("elementary", "friendly"): (
        "Here's the simple idea: {simple}.",
        "In simple words, {simple}.",
        "You can think of it this way: {simple}.",
        "So basically, {simple}.",
    ),
    ("elementary", "formal"): (
        "The simple idea is this: {simple}.",
        "In plain terms, {simple}.",
        "Put simply, {simple}.",
        "The basic principle is that {simple}.",
    ),
    ("expert", "friendly"): (
        "Here's the technical picture: {expert}.",
        "So, technically, {expert}.",
        "You'll like the precise version: {expert}.",
        "In your terms, {expert}.",
    ),
    ("expert", "formal"): (
        "Technically, {expert}.",
        "In precise terms, {expert}.",
        "From a {field} standpoint, {expert}.",
        "Formally, {expert}.",
    ),
}
_SECOND = {
    ("elementary", "friendly"): (
        "You can picture it {analogy}.",
        "It's a bit {analogy}.",
        "Imagine it {analogy}, and you've got it.",
    ),
    ("elementary", "formal"): (
        "It may be pictured {analogy}.",
        "It is somewhat {analogy}.",
        "A helpful picture is {analogy}.",
    ),
    ("expert", "friendly"): (
        "Here's a number you'll want: {fact}.",
        "Quantitatively, you'll find {fact}.",
        "A handy figure for you: {fact}.",
    ),
    ("expert", "formal"): (
        "A useful reference figure: {fact}.",
        "Quantitatively, {fact}.",
        "For calibration, note that {fact}.",
    ),
}
_EXTRA = {
    ("elementary", "friendly"): (
        "You don't need any fancy words to get the main idea.",
        "You can spot this in everyday life if you look for it.",
        "Once you see it once, you'll notice it everywhere.",
        "It's much easier than it sounds, I promise.",
    ),
    ("elementary", "formal"): (
        "No specialised vocabulary is required to grasp the main idea.",
        "The same effect can be observed in everyday life.",
        "Once it has been observed, it is easy to recognise elsewhere.",
        "The idea is simpler than it may first appear.",
    ),
    ("expert", "friendly"): (
        "You'll see this modelled explicitly in the {field} literature.",
        "If you design around it, you'll want to measure the parameters yourself.",
        "You'll find the edge cases depend on boundary conditions, so check them.",
        "You can derive the rest from first principles if you like.",
    ),
    ("expert", "formal"): (
        "The mechanism is well characterised in the {field} literature.",
        "Practitioners in {field} model this explicitly when designing around it.",
        "Edge cases depend on boundary conditions, which should be measured.",
        "The remaining behaviour follows from first principles.",
    ),
}


def _cap(text: str) -> str:
    return text[0].upper() + text[1:] if text else text


class DialogueCorpus:
    """Dialogues, preference pairs and pole-signalling user utterances, all generated from ``seed``."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def _rng(self, *salt: object) -> random.Random:
        return random.Random(f"{self.seed}/" + "/".join(map(str, salt)))

    # -- questions and answers ----------------------------------------------------------------------------------

    @staticmethod
    def question(topic: Topic, rng: random.Random) -> str:
        return rng.choice(QUESTION_TEMPLATES).format(name=topic.name)

    @staticmethod
    def answer(topic: Topic, style: StyleSpec, phrase_seed: int) -> str:
        """The answer to a question about ``topic`` in ``style``.

        ``phrase_seed`` picks the phrasing alternatives; two styles rendered with the same seed share every choice that
        does not depend on the style, which is what makes a preference pair differ in one dimension only.
        """
        rng = random.Random(phrase_seed)
        fields = {
            "simple": topic.simple,
            "analogy": topic.analogy,
            "expert": topic.expert,
            "fact": topic.fact,
            "field": topic.field,
        }
        level, tone = style.expertise, style.tone
        core_choice, second_choice, extra_choice, order_choice = rng.random(), rng.random(), rng.random(), rng.random()
        opener_choice, closer_choice, lead_choice, concise_long = rng.random(), rng.random(), rng.random(), rng.random()

        def pick(options: tuple[str, ...], u: float) -> str:
            return options[int(u * len(options))]

        if style.verbosity == "concise":
            lead = pick(_FRIENDLY_LEADS if tone == "friendly" else _FORMAL_LEADS, lead_choice)
            if level == "elementary":
                body = topic.simple + (f", {topic.analogy}" if concise_long < 0.5 else "")
            else:
                body = topic.expert + (f"; {topic.fact}" if concise_long < 0.5 else "")
            return lead + body + ("!" if tone == "friendly" else ".")

        key = (level, tone)
        sentences = [pick(_CORE[key], core_choice).format(**fields), pick(_SECOND[key], second_choice).format(**fields)]
        extras = list(_EXTRA[key])
        first_extra = int(extra_choice * len(extras))
        n_extra = 1 if order_choice < 0.5 else 2
        sentences += [extras[(first_extra + i) % len(extras)].format(**fields) for i in range(n_extra)]
        if order_choice > 0.75:  # sometimes the comparison or the figure comes first
            sentences[0], sentences[1] = sentences[1], sentences[0]
        sentences = [_cap(s) for s in sentences]
        opener = pick(_FRIENDLY_OPENERS if tone == "friendly" else _FORMAL_OPENERS, opener_choice)
        closer = pick(_FRIENDLY_CLOSERS if tone == "friendly" else _FORMAL_CLOSERS, closer_choice)
        return " ".join([opener, *sentences, closer])

    def dialogue(self, topic: Topic, style: StyleSpec, rng: random.Random) -> Dialogue:
        question = self.question(topic, rng)
        return Dialogue(
            topic=topic, question=question, answer=self.answer(topic, style, rng.getrandbits(32)), style=style
        )

    def dialogues(self, n: int, split: Split = "train") -> list[Dialogue]:
        """``n`` dialogues on ``split``'s topics, styles uniform over the 8 combinations (the base model's mixture)."""
        rng = self._rng("dialogues", split)
        topics = topics_in(split)
        return [self.dialogue(rng.choice(topics), StyleSpec.random(rng), rng) for _ in range(n)]

    def prompts(self, n: int, split: Split = "heldout") -> list[str]:
        """``n`` neutral user questions on ``split``'s topics (the evaluation prompts)."""
        rng = self._rng("prompts", split)
        topics = topics_in(split)
        return [self.question(rng.choice(topics), rng) for _ in range(n)]

    # -- preference pairs ---------------------------------------------------------------------------------------

    def preference_pairs(self, pole: str, n: int, split: Split = "train") -> list[PreferencePair]:
        """``n`` pairs for ``pole``: chosen has the pole, rejected the opposite pole; other dimensions and phrasing
        equal."""
        rng = self._rng("pairs", pole, split)
        topics = topics_in(split)
        pairs = []
        for _ in range(n):
            topic = rng.choice(topics)
            style = StyleSpec.random(rng).with_pole(pole)
            question = self.question(topic, rng)
            phrase_seed = rng.getrandbits(32)
            pairs.append(
                PreferencePair(
                    prompt=question,
                    chosen=self.answer(topic, style, phrase_seed),
                    rejected=self.answer(topic, style.with_pole(opposite_pole(pole)), phrase_seed),
                )
            )
        return pairs

    def prefix_pairs(self, pole: str, n: int, split: Split = "train") -> list[PreferencePair]:
        """Like ``preference_pairs``, but both answers cut after the same number of words.

        PANDA scores partial answers (the prefix so far plus one candidate token), so a reward that only ever saw
        complete answers would be guessing mid-answer. Training on prefixes teaches it the early signals too: the
        opener already tells a friendly answer from a formal one.
        """
        rng = self._rng("prefix-pairs", pole, split)
        pairs: list[PreferencePair] = []
        for full in self.preference_pairs(pole, n * 2, split):
            chosen, rejected = full.chosen.split(), full.rejected.split()
            cut = rng.randint(2, max(2, min(len(chosen), len(rejected))))
            c, r = " ".join(chosen[:cut]), " ".join(rejected[:cut])
            if c != r:
                pairs.append(PreferencePair(prompt=full.prompt, chosen=c, rejected=r))
            if len(pairs) == n:
                break
        return pairs

    # -- user utterances ----------------------------------------------------------------------------------------

    def user_utterances(self, pole: str, n: int, split: Split = "train") -> list[str]:
        """``n`` user messages that signal ``pole`` (a user's history; the catalog's example utterances)."""
        templates = POLE_UTTERANCES[pole]
        rng = self._rng("utterances", pole, split)
        topics = topics_in(split)
        out = []
        for _ in range(n):
            topic = rng.choice(topics)
            out.append(rng.choice(templates).format(name=topic.name, field=topic.field))
        return out

    def iter_texts(self, n_dialogues: int) -> Iterator[str]:
        """Plain texts for tokenizer training: training questions and answers plus pole utterances."""
        for d in self.dialogues(n_dialogues):
            yield d.question
            yield d.answer
        for pole in POLES:
            yield from self.user_utterances(pole, 50)


def style_pair_source(seed: int = 0, pairs_per_pole: int = 400, heldout_per_pole: int = 100):
    """The shipped, model-agnostic style corpus as a bootstrap pair source (``panda_chat.rewards.bootstrap``):
    (dimension, pole) -> (pairs on training topics, pairs on held-out topics), or None for a pole the corpus does
    not write (a catalog's own ``register.formal`` is not the corpus's ``tone.formal``)."""
    corpus = DialogueCorpus(seed)

    def pairs_for(dimension: str, pole: str) -> tuple[list[PreferencePair], list[PreferencePair]] | None:
        if pole not in POLES or dimension_of(pole) != dimension:
            return None
        return (
            corpus.preference_pairs(pole, pairs_per_pole),
            corpus.preference_pairs(pole, heldout_per_pole, split="heldout"),
        )

    return pairs_for
