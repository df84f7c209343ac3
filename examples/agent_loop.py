"""A plain-loop agent on ChatPanda: the model picks a tool as structured output, the loop runs it, then it answers.

    python examples/agent_loop.py                 # the embedded demo model, a throw-away profile database

ChatPanda has no tool-calling API (small local models have no tool-call format), so the agent asks for its next
step as a small JSON object through ``with_structured_output``: schema-guided decoding makes the step always
parse, with a tool name from the allowed list. The loop runs the tool, appends the result to the conversation and
asks again, until the model chooses to answer or the step budget runs out; the final answer is personalised for
the user like any other.
"""

from __future__ import annotations

import argparse
import ast
import operator
import os
import tempfile
from datetime import date
from pathlib import Path
from typing import Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from panda_chat import ChatPanda
from profiles import ProfileStore

MAX_STEPS = 3
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.Pow: operator.pow, ast.USub: operator.neg}


def calculator(expression: str) -> str:
    """Evaluate arithmetic (numbers, + - * / ** and parentheses) without eval."""

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.operand))
        raise ValueError("only arithmetic is supported")

    try:
        return str(value(ast.parse(expression, mode="eval").body))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as error:
        return f"cannot compute {expression!r}: {error}"


def today(_: str) -> str:
    """Today's date."""
    return date.today().isoformat()


TOOLS = {"calculator": calculator, "today": today}


class Step(BaseModel):
    """The agent's next step: call a tool with an input, or answer the user."""

    action: Literal["calculator", "today", "answer"] = Field(description="a tool to call, or 'answer'")
    input: str = Field(description="the tool's input (an arithmetic expression for the calculator)")


def run_agent(llm: ChatPanda, user: str, question: str) -> str:
    config = {"configurable": {"user_id": user}}
    planner = llm.with_structured_output(Step)
    messages: list[BaseMessage] = [
        SystemMessage("You can use tools: calculator (arithmetic) and today (the date). "
                      "Choose 'answer' when you know enough."),
        HumanMessage(question),
    ]
    for number in range(1, MAX_STEPS + 1):
        step = planner.invoke(messages, config=config)
        print(f"step {number}: {step.action}({step.input!r})")
        if step.action == "answer":
            break
        result = TOOLS[step.action](step.input)
        print(f"        -> {result}")
        messages += [AIMessage(f"I used {step.action} on {step.input!r}."),
                     HumanMessage(f"The {step.action} tool says: {result}. Continue.")]
    messages.append(HumanMessage(f"Now answer my question: {question}"))
    return llm.invoke(messages, config=config).content


def main(model: str | None, db: str, embedder: str | None, max_tokens: int) -> None:
    store = ProfileStore(db, embedder=embedder)
    store.set_preference("carol", "verbosity", "concise")
    llm = ChatPanda(model=model, store=store, max_tokens=max_tokens)
    print("calculator check:", calculator("(17 + 4) * 2"))
    answer = run_agent(llm, "carol", "What is 17 plus 4, times 2?")
    print(f"answer: {answer}")
    store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("PANDA_CHAT_EXAMPLE_MODEL"),
                        help="chat model folder [default: the embedded demo model]")
    parser.add_argument("--db", default=None, help="profile database [default: a temporary file]")
    parser.add_argument("--embedder", default=os.environ.get("PANDA_CHAT_EMBEDDER"),
                        help="'hashing' or a sentence-transformers path [default: all-MiniLM-L6-v2, packaged]")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        main(args.model, args.db or str(Path(scratch) / "profiles.db"), args.embedder, args.max_tokens)
