"""Which two personas should `panda-chat demo` show? Every persona measured on many questions, not the demo's three.

    PYTHONPATH=. python benchmarks/demo_personas.py [--bank 2] [--demo-seeds 0,1,2] [--questions 8]
        [--corpus-seeds 1,2] [--only NAME,NAME] [--json benchmarks/results/demo_personas_bank2.json]

A persona is one pole per dimension (expertise elementary|expert, verbosity concise|detailed, tone friendly|formal);
its history is three past requests per pole, each a clear signal of that pole alone, in the order expertise,
verbosity, tone, taken from ``BANKS[--bank]`` (bank 1: the requests of the demo's earlier users, plus one written per
pole where they had two; bank 2: requests that the store reads as signalling their own pole only). All eight
personas and the demo's own two users (``demo-ana``, ``demo-ben``) are users of one run, and each is counted as the
demo counts (``_dimensions_moved``: the reward margin of the inferred pole over its opposite grew vs the unguided
answer on at least 2 of 3 dimensions):

- the demo itself (``run_demo``: ChatPanda with its defaults, every turn recorded) for each ``--demo-seeds`` seed;
- the questions of ``benchmarks/demo_strength.py`` (``--questions`` per ``--corpus-seeds`` seed, the demo's seed-0
  questions removed), ``record=False`` as that script asks them.

Per persona it prints what the store inferred, answers moved, answers identical to the unguided one, answers with a
repeated word or word pair in a row (a repetition loop's sign) and answers that flip a pole the wrong way (the
unguided answer leaned toward an inferred pole, the personalised one leans toward its opposite). A pair's count is
the sum of its two personas' (each user's answers depend only on their own profile). Greedy decoding: the counts do
not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import torch
from langchain_core.messages import HumanMessage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_strength import other_questions, repeats

from panda_chat.chat_model import ChatPanda
from panda_chat.cli.demo import DEMO_HISTORIES, _dimensions_moved, run_demo
from panda_chat.demo import demo_head_paths, demo_model_dir
from panda_chat.demo.catalog import demo_catalog
from panda_chat.demo.corpus import DIMENSIONS
from panda_chat.demo.scoring import DemoRewardScorer
from profiles.store import ProfileStore

# bank -> pole -> three past requests, each a clear signal of that pole alone
BANKS: dict[str, dict[str, tuple[str, str, str]]] = {
    "1": {
        "elementary": (
            "Can you explain photosynthesis like I'm five?",
            "Explain it to me like I'm a total newbie, no jargon please: what is a computer virus?",
            "I'm a complete beginner in cooking, please keep it simple: why does bread dough rise?",
        ),
        "expert": (
            "Skip the basics, I work in machine learning professionally. What exactly is overfitting?",
            "Give me the rigorous version of how DNS resolution works, with the relevant technical details.",
            "I'm a cardiologist, so use the proper clinical terminology: how do beta blockers work?",
        ),
        "concise": (
            "Give me the bottom line, no background: is coffee bad for you?",
            "What is a vaccine, in one line?",
            "Just give me the answer, no explanation: what is a mortgage?",
        ),
        "detailed": (
            "Please walk me through gradient descent step by step, with examples, and don't leave anything out.",
            "I want the full, thorough explanation of how vaccines work.",
            "Take your time and cover every stage in depth: how does a bill become law?",
        ),
        "friendly": (
            "hey!! thanks so much, you're awesome :) what's a black hole?",
            "omg you're the best, thank you!! :D why is the sky blue?",
            "Aww thanks, you're so helpful! what makes popcorn pop?",
        ),
        "formal": (
            "Dear assistant, I would be grateful for a formal summary of how interest rates work.",
            "Kindly provide a professional overview of the stock market.",
            "Good afternoon. I would appreciate a formal account of how the immune system functions.",
        ),
    },
    # the second bank: the first one's formal requests ask for a "summary", an "overview" or an "account", and its
    # expert ones for "technical details" or "terminology", which the store reads as asking for detail too (a
    # concise persona's history was inferred detailed); each request here signals its own pole, measured one by one
    "2": {
        "elementary": (
            "Can you explain photosynthesis like I'm five?",
            "Explain it to me like I'm a total newbie, no jargon please: what is a computer virus?",
            "I'm a total beginner, keep it simple: why does bread dough rise?",
        ),
        "expert": (
            "Skip the basics, I work in machine learning professionally. What exactly is overfitting?",
            "Use the precise technical terms, I'm a structural engineer: why do bridges have expansion joints?",
            "Assume graduate-level chemistry: what is the rate-limiting step of the Maillard reaction?",
        ),
        "concise": (
            "What is a vaccine, in one sentence?",
            "Too long last time, give me the short version: what is a mortgage?",
            "Give me the bottom line, no background: is coffee bad for you?",
        ),
        "detailed": (
            "Walk me through how a car engine works, every step, with examples.",
            "I want the full, thorough explanation of how vaccines work.",
            "Give me the long explanation with all the background: why did the Roman Empire fall?",
        ),
        "friendly": (
            "hey!! thanks so much, you're awesome :) what's a black hole?",
            "omg you're the best, thank you!! :D why is the sky blue?",
            "Aww thanks, you're so helpful! what makes popcorn pop?",
        ),
        "formal": (
            "Dear assistant, would you kindly explain what the stock market is?",
            "Good morning. Could you kindly explain what inflation is?",
            "Good afternoon. Could you please explain what a pension is? With kind regards.",
        ),
    },
}


def personas(bank: str) -> dict[str, tuple[str, ...]]:
    """persona name (its poles joined by '-') -> history from ``BANKS[bank]``; plus the demo's own two users."""
    requests = BANKS[bank]
    out = {
        "-".join(poles): tuple(text for pole in poles for text in requests[pole])
        for poles in itertools.product(*DIMENSIONS.values())
    }
    out.update({f"demo-{user}": history for user, history in DEMO_HISTORIES.items()})
    return out


def wrong_way(own: dict[str, float], unguided: dict[str, float], inferred: dict[str, str]) -> list[str]:
    """Inferred poles the unguided answer leaned toward and this answer leans away from."""
    flipped = []
    for dimension, pole in inferred.items():
        other = next(p for p in DIMENSIONS[dimension] if p != pole)
        if unguided[pole] > unguided[other] and own[pole] < own[other]:
            flipped.append(pole)
    return flipped


def tally(
    counts: dict,
    flagged: list,
    question: str,
    own_text: str,
    unguided_text: str,
    own: dict,
    unguided: dict,
    inferred: dict,
) -> None:
    """Count one personalised answer; a repetition or a wrong-way flip is also listed in ``flagged`` to be read."""
    flipped = wrong_way(own, unguided, inferred)
    counts["answers"] += 1
    counts["moved"] += len(_dimensions_moved(own, unguided, inferred, DIMENSIONS)) >= 2
    counts["unchanged"] += own_text == unguided_text
    counts["repeats"] += repeats(own_text)
    counts["wrong_way"] += bool(flipped)
    if flipped or repeats(own_text):
        flagged.append({"question": question, "text": own_text, "wrong_way": flipped, "repeats": repeats(own_text)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-seeds", default="0,1,2")
    parser.add_argument("--questions", type=int, default=8, help="demo_strength questions per corpus seed")
    parser.add_argument("--corpus-seeds", default="1,2")
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--bank", default="2", choices=sorted(BANKS), help="which requests make the histories")
    parser.add_argument("--only", default="", help="comma-separated persona names (default: all)")
    parser.add_argument("--json", dest="json_path", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    users = personas(args.bank)
    if args.only:
        users = {name: users[name] for name in args.only.split(",")}
    fresh = {"answers": 0, "moved": 0, "unchanged": 0, "repeats": 0, "wrong_way": 0}
    report: dict = {name: {"inferred": None, "demo": {}, "other": dict(fresh), "flagged": []} for name in users}
    leaning = dict.fromkeys((poles[0] for poles in DIMENSIONS.values()), 0)  # unguided answers leaning there
    asked = 0

    def lean(rewards: dict[str, float]) -> None:
        for a, b in DIMENSIONS.values():
            leaning[a] += rewards[a] > rewards[b]

    for seed in (int(s) for s in args.demo_seeds.split(",")):
        result = run_demo(3, args.max_tokens, seed, False, None, lambda *a, **k: None, histories=users)
        inferred = {entry["user_id"]: entry["inferred"] for entry in result["users"]}
        for question in result["questions"]:
            answers = {a["who"]: a for a in question["answers"]}
            base = answers["unguided"]
            lean(base["rewards"])
            asked += 1
            for name in users:
                report[name]["inferred"] = inferred[name]
                counts = report[name]["demo"].setdefault(str(seed), dict(fresh))
                own = answers[name]
                tally(
                    counts,
                    report[name]["flagged"],
                    question["question"],
                    own["text"],
                    base["text"],
                    own["rewards"],
                    base["rewards"],
                    inferred[name],
                )
        print(f"demo seed {seed}: " + ", ".join(f"{n} {report[n]['demo'][str(seed)]['moved']}" for n in users))

    questions = other_questions(args.questions, [int(s) for s in args.corpus_seeds.split(",")])
    model_dir = str(demo_model_dir())
    scorer = DemoRewardScorer(model_dir, demo_head_paths())
    with tempfile.TemporaryDirectory() as scratch:
        store = ProfileStore(Path(scratch) / "profiles.sqlite", catalog=demo_catalog())
        plain = ChatPanda(model=model_dir, store=store, personalize=False, record=False, max_tokens=args.max_tokens)
        unguided = {q: plain.invoke([HumanMessage(q)]).text for q in questions}
        unguided_rewards = {q: scorer.score(q, a) for q, a in unguided.items()}
        for rewards in unguided_rewards.values():
            lean(rewards)
        asked += len(questions)
        for name, history in users.items():
            store.add_messages(name, [("user", text, None) for text in history])
            llm = ChatPanda(model=model_dir, user_id=name, store=store, record=False, max_tokens=args.max_tokens)
            for question in questions:
                answer = llm.invoke([HumanMessage(question)]).text
                own = scorer.score(question, answer)
                tally(
                    report[name]["other"],
                    report[name]["flagged"],
                    question,
                    answer,
                    unguided[question],
                    own,
                    unguided_rewards[question],
                    report[name]["inferred"],
                )
            print(f"other questions: {name} {report[name]['other']}", flush=True)
        store.close()

    print("\n| persona | inferred | demo moved per seed | other moved | unchanged | repeats | wrong way |")
    for name, row in report.items():
        demo_moved = "/".join(str(c["moved"]) for c in row["demo"].values())
        every = [*row["demo"].values(), row["other"]]
        total = {key: sum(c[key] for c in every) for key in fresh}
        row["total"] = total
        print(
            f"| {name} | {', '.join(row['inferred'].values())} | {demo_moved} | {row['other']['moved']} of "
            f"{row['other']['answers']} | {total['unchanged']} | {total['repeats']} | {total['wrong_way']} |"
        )
    print(f"\nunguided answers leaning toward each first pole, of {asked}: {leaning}")
    if args.json_path:
        out = {"personas": report, "unguided_leaning": leaning, "unguided_answers": asked, "histories": users}
        Path(args.json_path).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
