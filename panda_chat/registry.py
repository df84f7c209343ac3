"""One process-wide registry of loaded models, so every decoder and chat object shares one copy of the weights.

A thousand ``ChatPanda(user_id=...)`` objects on the same base model must not load it a thousand times. Models and
tokenizers are loaded here once per (kind, path, device, dtype) and handed out to everyone who asks; the registry is
thread-safe (two threads asking for the same model wait for one load). This is the only global mutable state of
panda-chat (see docs/ARCHITECTURE.md, "Layers").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

ModelKind = Literal["causal_lm", "sequence_classifier"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_AUTO_CLASSES = {"causal_lm": AutoModelForCausalLM, "sequence_classifier": AutoModelForSequenceClassification}


class ModelNotFoundError(FileNotFoundError):
    """A model path that is neither a local folder nor loadable from the hub."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was requested but CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """``"auto"`` is bfloat16 on CUDA and float32 on CPU (CPU half-precision matmuls are slow and imprecise)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device is not None and device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype '{dtype}': use one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode on its device, with the tokenizer from the same folder."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: str
    device: torch.device
    dtype: torch.dtype


def _canonical_path(path: str | Path) -> str:
    """Local folders by absolute path (so "./m" and "/abs/m" share one entry); hub names as given."""
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else str(path)


def _can_only_be_a_folder(path: str) -> bool:
    """Hub ids are 'name' or 'org/name': an absolute, relative, home or deeper path can only be a local folder, and
    so can 'dir/name' when 'dir' is a local folder (a typo inside an existing folder must not go to the hub)."""
    if path.startswith(("/", ".", "~")) or path.count("/") > 1 or "\\" in path:
        return True
    head, _, tail = path.partition("/")
    return bool(tail) and Path(head).is_dir()


def _one_line(error: BaseException) -> str:
    """A library error's whole message on one line (some span several lines and lose their point when cut)."""
    return " ".join(str(error).split()) or type(error).__name__


def check_model_path(path: str | Path, what: str = "model") -> None:
    """Refuse at once, in one line, what cannot be a model: a file, a local-looking path that does not exist (it
    must never reach the hub, where a typo costs a minute of retries offline), or a folder without config.json.
    Hub ids ('name', 'org/name') pass; so do model folders."""
    path = str(path)
    local = Path(path).expanduser()
    if local.exists() and not local.is_dir():
        raise ModelNotFoundError(f"{what} path {path} is a file, expected a model folder")
    if not local.exists() and _can_only_be_a_folder(path):
        raise ModelNotFoundError(f"{what} folder not found: {path} (give the folder that holds config.json)")
    if local.is_dir() and not (local / "config.json").is_file():
        raise ModelNotFoundError(
            f"{path} is not a {what} folder: it holds no config.json (give the folder that save_pretrained wrote)"
        )


def _load(kind: ModelKind, path: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    local = Path(path).expanduser()
    what = "model" if kind == "causal_lm" else "reward model"
    check_model_path(path, what)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = _AUTO_CLASSES[kind].from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as error:
        where = "local folder" if local.exists() else "folder (no such local folder, and not loadable from the hub)"
        raise ModelNotFoundError(f"cannot load the {what} from {where} '{path}': {_one_line(error)}") from error
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, path=path, device=device, dtype=dtype)


class ModelRegistry:
    """Loads each (kind, path, device, dtype) once and hands out the same objects afterwards. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[tuple, LoadedModel] = {}
        self._loading: dict[tuple, threading.Lock] = {}

    def get(
        self,
        path: str | Path,
        kind: ModelKind = "causal_lm",
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
    ) -> LoadedModel:
        resolved_device = resolve_device(device)
        resolved_dtype = resolve_dtype(dtype, resolved_device)
        canonical = _canonical_path(path)
        key = (kind, canonical, str(resolved_device), str(resolved_dtype))
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        # Loading happens outside the registry lock, so different models load concurrently; the per-key lock makes
        # concurrent requests for the same model wait for one load.
        with key_lock:
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            loaded = _load(kind, canonical, resolved_device, resolved_dtype)
            with self._lock:
                self._loaded[key] = loaded
                self._loading.pop(key, None)
            return loaded

    def causal_lm(
        self, path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
    ) -> LoadedModel:
        return self.get(path, "causal_lm", device, dtype)

    def sequence_classifier(
        self, path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
    ) -> LoadedModel:
        return self.get(path, "sequence_classifier", device, dtype)

    def __len__(self) -> int:
        with self._lock:
            return len(self._loaded)

    def clear(self) -> None:
        """Forget every loaded model (objects already handed out stay alive while referenced)."""
        with self._lock:
            self._loaded.clear()


_SHARED = ModelRegistry()


def shared_registry() -> ModelRegistry:
    """The process-wide registry every ``PandaDecoder.from_pretrained`` and ``ChatPanda`` uses by default."""
    return _SHARED
