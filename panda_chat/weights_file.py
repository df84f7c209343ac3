"""One safetensors file per small learned module: its weights, plus its pydantic config as JSON in the metadata.

Reward heads and learned lambda models are a few KB each. Keeping the config inside the weights file means one file
to copy, store in a database blob or ship, and nothing to get out of sync.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import torch
from pydantic import BaseModel
from safetensors import safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from safetensors.torch import save_file
from torch import nn

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}


def save_module(module: nn.Module, config: BaseModel, key: str, path: str | Path) -> Path:
    """Write ``module``'s weights (float32) and ``config`` (under metadata ``key``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(module), str(path), metadata={key: config.model_dump_json()})
    return path


def module_to_bytes(module: nn.Module, config: BaseModel, key: str) -> bytes:
    """The bytes ``save_module`` would write."""
    return save_bytes(_tensors(module), metadata={key: config.model_dump_json()})


def _metadata_of_bytes(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a serialised safetensors blob (8-byte little-endian header size, then JSON)."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a safetensors blob") from exc
    return header.get("__metadata__", {}) if isinstance(header, dict) else {}


def read_module(
    source: str | Path | bytes,
    key: str,
    config_class: type[ConfigT],
    what: str,
    format_version: int,
) -> tuple[ConfigT, dict[str, torch.Tensor]]:
    """Read (config, state dict) from a file path or bytes, with one-line errors naming ``what`` was expected.

    A file written by a newer panda-chat (``config.format_version`` above ``format_version``) is refused rather than
    misread.
    """
    if isinstance(source, bytes):
        name, metadata = "<bytes>", _metadata_of_bytes(source)
        state = load_bytes(source) if key in metadata else {}
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {path}")
        name = str(path)
        try:
            with safe_open(name, framework="pt") as f:
                metadata = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()} if key in metadata else {}  # noqa: SIM118 - not iterable
        except Exception as error:  # safetensors raises its own error types for a truncated or corrupt file
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ValueError(
                f"{name} is not a readable {what} file (corrupt or truncated safetensors: {reason}); re-create it"
            ) from error
    if key not in metadata:
        raise ValueError(f"{name} is not a panda-chat {what} (no {what} config in its metadata)")
    config = config_class.model_validate(json.loads(metadata[key]))
    version = getattr(config, "format_version", 0)
    if version > format_version:
        raise ValueError(f"{name} uses {what} format {version}; upgrade panda-chat to read it")
    return config, state
