"""``panda-chat reward train``: Bradley-Terry reward heads and reward models from preference pairs.

The pairs come from a JSONL file (``--data``) or from one user's feedback in the profile store
(``--from-feedback USER``). A head is written to ``--out`` (a ``.safetensors`` file) and, for ``--from-feedback``,
also saved into the store as that user's reward head; ``--kind model`` writes a reward-model folder to ``--out``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from panda_chat.cli.errors import friendly_errors
from panda_chat.cli.model_loading import quiet_transformers, set_threads
from panda_chat.cli.options import (
    base_option,
    catalog_option,
    db_option,
    force_option,
    json_option,
    threads_option,
    user_id_callback,
)
from panda_chat.output_paths import atomic_file, atomic_folder, check_output

if TYPE_CHECKING:
    from panda_chat.rewards.training import RewardTrainingReport


@click.group()
def reward() -> None:
    """Train reward models (Bradley-Terry heads or full models)."""


@reward.command("train")
@base_option
@click.option(
    "--data",
    "data_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help='JSONL preference pairs: {"prompt", "chosen", "rejected"} or HH-RLHF {"chosen", "rejected"}.',
)
@click.option(
    "--from-feedback",
    "user_id",
    callback=user_id_callback,
    help="Train on this user's feedback pairs from the profile store.",
)
@db_option
@click.option("--store", "store_alias", hidden=True, help="Deprecated: use --db.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Head file (.safetensors) or reward-model folder (--kind model). Optional with --from-feedback. "
    "An existing file or non-empty folder is refused unless --force.",
)
@force_option
@click.option(
    "--kind",
    type=click.Choice(["head", "model"]),
    default="head",
    show_default=True,
    help="A head on the frozen base model's hidden states, or a fine-tuned sequence classifier.",
)
@click.option("--name", default=None, help="Reward name (default: the output file's stem, or 'feedback').")
@click.option("--description", default="", help="What the reward prefers, in words (stored with it).")
@click.option("--head-type", type=click.Choice(["linear", "mlp"]), default="linear", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default: 20 for a head, 3 for a model.")
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Default: 1e-2 for a head, 2e-5 for a model.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Default: 64 for a head, 8 for a model.")
@click.option("--val-split", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Epochs without better validation accuracy.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep head features on disk here (keyed by data and base model).",
)
@threads_option
@json_option("Print one JSON object (the training report) and nothing else.")
@friendly_errors
def train(
    base,
    data_path,
    user_id,
    db,
    store_alias,
    out,
    force,
    kind,
    name,
    description,
    head_type,
    epochs,
    lr,
    batch_size,
    val_split,
    patience,
    seed,
    cache_dir,
    threads,
    as_json,
) -> None:
    """Train a reward with the Bradley-Terry loss -log sigmoid(r(x, y_w) - r(x, y_l))."""
    from panda_chat.rewards.data import load_pairs  # torch: imported when the command runs, never for --help
    from panda_chat.rewards.training import (
        RewardTrainingConfig,
        train_reward_head,
        train_reward_model,
        train_user_reward_head,
    )

    if (data_path is None) == (user_id is None):
        raise click.UsageError("give exactly one of --data FILE or --from-feedback USER")
    if out is None and user_id is None:
        raise click.UsageError("--out is required with --data")
    if kind == "model" and (out is None or user_id is not None):
        raise click.UsageError("--kind model trains from --data into an --out folder")
    from panda_chat.registry import check_model_path

    check_model_path(base, "base model")  # a typo fails now, not after a minute of hub retries
    if out is not None:  # refuse before training, not after
        check_output(out, force=force, kind="folder" if kind == "model" else "file")
    config = RewardTrainingConfig(
        epochs=epochs or (20 if kind == "head" else 3),
        lr=lr,
        batch_size=batch_size or (64 if kind == "head" else 8),
        val_split=val_split,
        patience=patience,
        seed=seed,
        head_kind=head_type,
    )
    progress = not as_json and sys.stderr.isatty()
    set_threads(threads)
    quiet_transformers()
    if user_id is not None:
        from profiles.store import ProfileStore

        with ProfileStore(_database(db, store_alias)) as store:
            trained = train_user_reward_head(
                store, user_id, base, name=name or "feedback", description=description, config=config, progress=progress
            )
        report = trained.report
        if out is not None:
            report.out = _save_head(trained.head, out, force)
    elif kind == "head":
        pairs = load_pairs(data_path)
        trained = train_reward_head(
            base,
            pairs,
            name=name or out.stem,
            description=description,
            config=config,
            cache_dir=cache_dir,
            progress=progress,
        )
        report = trained.report
        report.out = _save_head(trained.head, out, force)
    else:
        pairs = load_pairs(data_path)
        with atomic_folder(out, force=force) as folder:
            report = train_reward_model(
                base, pairs, folder, name=name or out.name, description=description, config=config, progress=progress
            )
        report.out = str(out)
    _print_report(report, as_json, user_id)


def _database(db: str | None, store_alias: str | None) -> str | None:
    """``--db``, or the deprecated ``--store`` when ``--db`` was not given on the command line (a ``--store`` typed
    by the user wins over ``PANDA_CHAT_DB``, as any flag wins over its environment variable)."""
    typed_db = click.get_current_context().get_parameter_source("db") is ParameterSource.COMMANDLINE
    return store_alias if store_alias is not None and not typed_db else db


def _save_head(head, out: Path, force: bool) -> str:
    with atomic_file(out, force=force) as temporary:
        head.save(temporary)
    return str(out)


def _print_report(report: RewardTrainingReport, as_json: bool, user_id: str | None) -> None:
    if as_json:
        click.echo(json.dumps(report.model_dump(mode="json") | {"user_id": user_id}))
        return
    acc = "n/a (no held-out pairs)" if report.val_accuracy is None else f"{report.val_accuracy:.3f}"
    click.echo(
        f"trained {report.kind} '{report.name}' on {report.train_pairs} pairs "
        f"({report.val_pairs} held out) in {report.seconds:.1f}s"
    )
    click.echo(
        f"validation accuracy: {acc}  (train {report.train_accuracy:.3f}; best epoch {report.best_epoch} "
        f"of {report.epochs_run})"
    )
    click.echo(f"calibration: mean {report.calibration.mean:.4f}, std {report.calibration.std:.4f}")
    if user_id is not None:
        click.echo(f"saved to the profile store as user '{user_id}' reward head '{report.name}'")
    if report.out:
        click.echo(f"saved: {report.out}")


@reward.command("bootstrap")
@base_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the heads and their manifest (default: the model folder when it is a local folder, "
    "else the user data directory keyed by the model's identity: where ChatPanda looks).",
)
@catalog_option
@click.option(
    "--pairs",
    type=click.IntRange(min=10),
    default=400,
    show_default=True,
    help="Style-corpus pairs per pole (and a quarter as many on held-out topics).",
)
@click.option(
    "--self-pairs",
    type=click.IntRange(min=0),
    default=None,
    help="Pairs per pole the model writes itself when asked for each pole (default: 16 for a model "
    "with a chat template, else 0; kept only where the corpus head agrees the model followed).",
)
@click.option(
    "--features",
    type=click.Choice(["prefix+token", "last+mean"]),  # rewards.heads.HeadFeatures (not imported: the CLI starts fast)
    default="prefix+token",
    show_default=True,
    help="What the heads read: the state before a token, the answer's mean before it and the token's embedding "
    "(steering runs no forward of the candidates), or the token's own state and the answer's mean (one forward of "
    "the k candidates per step).",
)
@force_option
@threads_option
@click.option("--seed", type=int, default=0, show_default=True)
@json_option("Print one JSON object (the bootstrap report) and nothing else.")
@friendly_errors
def bootstrap(base, out, catalog, pairs, self_pairs, features, force, threads, seed, as_json) -> None:
    """Reward heads for every catalog pole on BASE's own hidden states, calibrated, with a manifest ChatPanda reads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from panda_chat.demo.corpus import style_pair_source
    from panda_chat.registry import check_model_path
    from panda_chat.rewards.bootstrap import HEADS_FOLDER, bootstrap_heads, default_head_config
    from panda_chat.rewards.heads import BaseModelSignature
    from panda_chat.rewards.manifest import MANIFEST_FILE, user_heads_dir
    from profiles.catalog import PreferenceCatalog

    set_threads(threads)
    quiet_transformers()
    preferences = PreferenceCatalog.from_file(catalog) if catalog else PreferenceCatalog.default()
    check_model_path(base, "base model")  # a typo or an empty folder fails now, in one line
    local = Path(base).expanduser()
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    name = str(local.resolve()) if local.is_dir() else str(base)
    # where ChatPanda(model=...) looks for a manifest (``find_manifest``): the model folder, then the user data dir
    read_by_chat_panda = [local] if local.is_dir() else []
    read_by_chat_panda.append(user_heads_dir(name, BaseModelSignature.of(model).model_dump_json()))
    out = out or read_by_chat_panda[0]
    found_there = out.resolve() in [folder.resolve() for folder in read_by_chat_panda]
    existing = (out / MANIFEST_FILE).exists() if found_there else out.exists() and any(out.iterdir())
    if existing and not force:
        raise click.UsageError(
            f"{out} already holds {'a heads manifest' if found_there else 'files'}; pass --force to replace them"
        )
    if self_pairs is None:
        self_pairs = 16 if getattr(tokenizer, "chat_template", None) else 0
    progress = not as_json and sys.stderr.isatty()
    report = bootstrap_heads(
        model,
        tokenizer,
        out,
        catalog=preferences,
        base_model=name,
        self_pairs=self_pairs,
        progress=progress,
        pair_source=style_pair_source(seed, pairs_per_pole=pairs, heldout_per_pole=max(pairs // 4, 10)),
        config=default_head_config(seed),
        log=(lambda line: None) if as_json else click.echo,
        features=features,
    )
    if not found_there:
        click.echo(
            f"note: ChatPanda(model={base!r}) reads heads from "
            + " or ".join(str(folder) for folder in read_by_chat_panda)
            + f", not from {out}: copy {MANIFEST_FILE} and {HEADS_FOLDER}/ there to use these",
            err=True,
        )
    if as_json:
        click.echo(report.model_dump_json())
        return
    click.echo(f"{len(report.poles)} heads in {report.seconds:.1f}s; manifest: {report.manifest}")
