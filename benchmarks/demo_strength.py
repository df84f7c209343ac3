"""Steering strength for the demo's two users, measured on questions that are not the demo's.

    python benchmarks/demo_strength.py [--strengths 1,1.5,2] [--questions 8] [--corpus-seeds 1,2]

`panda-chat demo` counts the personalised answers that move toward their user's inferred poles on at least 2 of 3
dimensions. Choosing a setting on the demo's own three questions would be tuning on the test, so this script asks
other questions (training-topic prompts of `DialogueCorpus(seed)` for the given seeds, the demo's own questions
removed) with the demo's users and histories, `record=False` (the profiles stay as the histories make them) and each
`ChatPanda(strength=...)`, and prints per strength and user: answers moved (the demo's rule), answers identical to
the unguided one, and answers with a repeated word or word pair in a row (a repetition loop's sign).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from langchain_core.messages import HumanMessage

from panda_chat.chat_model import ChatPanda
from panda_chat.cli.demo import DEMO_HISTORIES, _dimensions_moved
from panda_chat.demo import demo_head_paths, demo_model_dir
from panda_chat.demo.catalog import demo_catalog
from panda_chat.demo.corpus import DIMENSIONS, DialogueCorpus
from panda_chat.demo.scoring import DemoRewardScorer
from profiles.store import ProfileStore


def repeats(text: str) -> bool:
    """A word or a word pair repeated back to back ("reaches reaches", "a stat a stat")."""
    words = text.split()
    return any(words[i] == words[i + 1] for i in range(len(words) - 1)) or any(
        words[i : i + 2] == words[i + 2 : i + 4] for i in range(len(words) - 3)
    )


def other_questions(per_seed: int, corpus_seeds: list[int]) -> list[str]:
    """``per_seed`` training-topic prompts of each ``DialogueCorpus(seed)``, the demo's own (seed 0) removed."""
    demo_questions = set(DialogueCorpus(0).prompts(3, split="train"))
    return [
        question
        for seed in corpus_seeds
        for question in [
            q for q in DialogueCorpus(seed).prompts(per_seed + 3, split="train") if q not in demo_questions
        ][:per_seed]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strengths", default="1,1.5,2")
    parser.add_argument("--questions", type=int, default=8, help="questions per corpus seed")
    parser.add_argument("--corpus-seeds", default="1,2")
    parser.add_argument("--max-tokens", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    questions = other_questions(args.questions, [int(s) for s in args.corpus_seeds.split(",")])
    model_dir = str(demo_model_dir())
    with tempfile.TemporaryDirectory() as scratch:
        store = ProfileStore(Path(scratch) / "profiles.sqlite", catalog=demo_catalog())
        inferred = {}
        for user, history in DEMO_HISTORIES.items():
            store.add_messages(user, [("user", text, None) for text in history])
            context = store.preferences(user)
            inferred[user] = {d: p.top_pole for d, p in context.dimensions.items() if p.confidence > 0 and p.top_pole}
        scorer = DemoRewardScorer(model_dir, demo_head_paths())
        plain = ChatPanda(model=model_dir, store=store, personalize=False, record=False, max_tokens=args.max_tokens)
        unguided = {q: plain.invoke([HumanMessage(q)]).text for q in questions}
        unguided_rewards = {q: scorer.score(q, a) for q, a in unguided.items()}
        for strength in (float(s) for s in args.strengths.split(",")):
            row: dict = {"strength": strength, "questions": len(questions)}
            for user in DEMO_HISTORIES:
                llm = ChatPanda(
                    model=model_dir,
                    user_id=user,
                    store=store,
                    record=False,
                    strength=strength,
                    max_tokens=args.max_tokens,
                )
                counts = {"moved": 0, "unchanged": 0, "repeats": 0}
                for question in questions:
                    answer = llm.invoke([HumanMessage(question)]).text
                    toward = _dimensions_moved(
                        scorer.score(question, answer), unguided_rewards[question], inferred[user], DIMENSIONS
                    )
                    counts["moved"] += len(toward) >= 2
                    counts["unchanged"] += answer == unguided[question]
                    counts["repeats"] += repeats(answer)
                row[user] = counts
            print(json.dumps(row), flush=True)
        store.close()


if __name__ == "__main__":
    main()
