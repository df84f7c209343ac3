"""An assistant with tools (LangChain's ``create_agent``) answering two users, each in their own style.

    python examples/agent_loop.py                 # the embedded demo model, a throw-away profile database

ChatPanda calls tools like any LangChain chat model: ``bind_tools`` offers them, a call's arguments are decoded under
the tool's JSON schema (so they always validate), and ``AIMessage.tool_calls`` carries them to the agent, which runs
the tool and hands the result back. Whether the model calls or answers is its own likelihood; ``call_bias`` nudges a
small model that rarely calls, and ``max_tool_rounds`` bounds the loop. The final answer is steered by each user's
profile: carol asked for concise answers, dan for detailed ones.
"""

from __future__ import annotations

import argparse
import ast
import operator
import os
import tempfile
from pathlib import Path

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from panda_chat import ChatPanda
from profiles import ProfileStore

_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


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


@tool
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression such as '(17 + 4) * 2'."""
    return calculator(expression)


def main(model: str | None, db: str, embedder: str | None, max_tokens: int) -> None:
    store = ProfileStore(db, embedder=embedder)
    store.set_preference("carol", "verbosity", "concise")
    store.set_preference("dan", "verbosity", "detailed")
    # a small demo model: made to call the tool once (call_bias) and to copy the expression the user quoted
    llm = ChatPanda(model=model, store=store, max_tokens=max_tokens, call_bias=100.0, max_tool_rounds=1, copy_bias=30.0)
    agent = create_agent(llm, [calculate], system_prompt="You are a helpful assistant. Use the calculator.")
    print("calculator check:", calculator("(17 + 4) * 2"))
    for user in ("carol", "dan"):
        print(f"--- {user} ---")
        question = "What is '(17 + 4) * 2'?"
        state = agent.invoke(
            {"messages": [("user", question)]}, config={"configurable": {"user_id": user, "thread_id": f"{user}-math"}}
        )
        for number, message in enumerate(state["messages"][1:], start=1):
            if isinstance(message, AIMessage) and message.tool_calls:
                call = message.tool_calls[0]
                print(f"step {number}: {call['name']}({call['args']})")
            elif isinstance(message, ToolMessage):
                print(f"        -> {message.content}")
        final = state["messages"][-1]
        steering = final.response_metadata["personalization"]["dimensions"]["verbosity"]
        print(f"answer: {final.content!r} (verbosity: {steering['top_pole']}, {steering['source']})")
    store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=os.environ.get("PANDA_CHAT_EXAMPLE_MODEL"),
        help="chat model folder [default: the embedded demo model]",
    )
    parser.add_argument("--db", default=None, help="profile database [default: a temporary file]")
    parser.add_argument(
        "--embedder",
        default=os.environ.get("PANDA_CHAT_EMBEDDER"),
        help="'hashing' or a sentence-transformers path [default: all-MiniLM-L6-v2, packaged]",
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        main(args.model, args.db or str(Path(scratch) / "profiles.db"), args.embedder, args.max_tokens)
