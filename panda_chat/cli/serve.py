"""``panda-chat serve``: run the OpenAI-compatible server (``panda_chat.server``) with uvicorn."""

from __future__ import annotations

import logging

import click

from panda_chat.cli.errors import friendly_errors
from panda_chat.cli.options import db_option, device_option, dtype_option, embedder_option, model_option


@click.command("serve")
@model_option
@db_option
@embedder_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@device_option
@dtype_option
@click.option(
    "--max-batch",
    default=32,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows decoded together (1: one request at a time).",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "process", "thread"]),
    default="auto",
    show_default=True,
    help="Where the decode loop runs: an engine process of its own (faster under load; the weights load twice), "
    "a thread of the server process (one copy of the weights), or auto: a process on CPU, a thread on a GPU.",
)
@click.option(
    "--max-tokens",
    default=1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="The most tokens one request may ask for.",
)
@click.option("--max-prompt-tokens", default=4096, show_default=True, type=click.IntRange(min=1))
@click.option("--max-body-bytes", default=1_000_000, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--requests-per-minute",
    default=600,
    show_default=True,
    type=click.IntRange(min=1),
    help="Per API key, per server process.",
)
@click.option("--access-log", is_flag=True, help="Log every request line (paths name users: off by default).")
@friendly_errors
def serve(
    model: str | None,
    db: str | None,
    embedder: str | None,
    host: str,
    port: int,
    device: str,
    dtype: str,
    max_batch: int,
    engine: str,
    max_tokens: int,
    max_prompt_tokens: int,
    max_body_bytes: int,
    requests_per_minute: int,
    access_log: bool,
) -> None:
    """Serve /v1/chat/completions (OpenAI's API) for every user of the profile database; create API keys with
    `panda-chat key create`."""
    import uvicorn

    from panda_chat.registry import check_model_path
    from panda_chat.server import ServerSettings, WithholdErrorMessages, create_app
    from profiles.keys import ApiKeys

    # a mistyped --model or --db fails here in one line, not as a traceback from the server's startup
    if model is not None:
        check_model_path(model)
    ApiKeys(db).close()  # connects and brings the schema up to date (the server opens the database again)
    settings = ServerSettings(
        model=model,
        db=db,
        embedder=embedder,
        device=device,
        dtype=dtype,
        max_batch=max_batch,
        engine=engine,
        max_tokens=max_tokens,
        max_prompt_tokens=max_prompt_tokens,
        max_body_bytes=max_body_bytes,
        requests_per_minute=requests_per_minute,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("uvicorn.error").addFilter(WithholdErrorMessages())  # no user text in the logs
    uvicorn.run(create_app(settings), host=host, port=port, access_log=access_log, log_level="info")
