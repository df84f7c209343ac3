"""The heads manifest: which reward heads (and lambda) belong to a base model, read the same way for every model.

A model folder may carry ``panda_heads.json``; for a hub id (no folder of ours to write into), or a folder we may not
write to, the manifest lives in the user data directory under a folder keyed by the model's identity (its name and
a hash of its ``BaseModelSignature``, so two checkpoints never share heads). ``panda-chat reward bootstrap`` writes
one; ``ChatPanda(model=...)`` reads it (``find_manifest``), and the embedded demo model ships one.

Paths inside a manifest are relative to the manifest's folder, so a model folder can be moved or copied as a whole.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import platformdirs
from pydantic import BaseModel, Field

MANIFEST_FILE = "panda_heads.json"
MANIFEST_FORMAT = "panda-chat/heads"
HEADS_DIR_ENV = "PANDA_CHAT_HEADS_DIR"  # where bootstrapped heads of hub models go (default: the user data dir)


class HeadEntry(BaseModel):
    """One pole's head: where it is and how well it did on held-out pairs."""

    dimension: str = ""
    path: str  # relative to the manifest's folder
    source: str = ""  # "corpus", "corpus+self", "words", ... (what its pairs came from)
    accuracy: float | None = None  # held-out complete answers
    partial_accuracy: float | None = None  # held-out partial answers


class LambdaEntry(BaseModel):
    """The lambda fitted for this model's heads: a file (a ``LearnedLambda``) or a constant."""

    path: str | None = None
    value: float | None = None


class HeadsManifest(BaseModel):
    """``panda_heads.json``: pole name -> head, and the model's lambda (see the module docstring)."""

    format: str = MANIFEST_FORMAT
    version: int = 1
    base_model: str = ""
    heads: dict[str, HeadEntry] = Field(default_factory=dict)
    lam: LambdaEntry | None = Field(default=None, alias="lambda")
    seconds: float | None = None  # how long the bootstrap took

    model_config = {"populate_by_name": True}

    def head_paths(self, folder: Path) -> dict[str, Path]:
        """Reward name (``dimension.pole``) -> head file. A key is the pole's name, or ``dimension.pole`` for a pole
        name two dimensions share; an entry with no dimension (an older manifest) keeps its bare pole name."""
        return {
            key if "." in key or not entry.dimension else f"{entry.dimension}.{key}": (folder / entry.path).resolve()
            for key, entry in self.heads.items()
        }

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2, by_alias=True, exclude_none=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> HeadsManifest | None:
        """The manifest in ``folder``, or None when it has none. A malformed one is an error naming the file."""
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            return None
        try:
            manifest = cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(
                f"{path} is not a panda-chat heads manifest ({str(error).splitlines()[0]}); "
                "re-create it with `panda-chat reward bootstrap --force`"
            ) from error
        if manifest.format != MANIFEST_FORMAT:
            raise ValueError(f"{path}: unknown manifest format {manifest.format!r}")
        return manifest


def model_identity(model_name: str, signature_json: str) -> str:
    """A folder name for a model's heads: a readable slug of its name plus a hash of its weights' signature."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model_name).name or model_name).strip("_")[:60] or "model"
    digest = hashlib.sha256(signature_json.encode()).hexdigest()[:12]
    return f"{slug}-{digest}"


def user_heads_dir(model_name: str, signature_json: str) -> Path:
    """Where bootstrapped heads of a model go when its folder is not ours (``$PANDA_CHAT_HEADS_DIR`` or the user
    data directory, then the model's identity)."""
    root = os.environ.get(HEADS_DIR_ENV) or str(Path(platformdirs.user_data_dir("panda-chat")) / "heads")
    return Path(root) / model_identity(model_name, signature_json)


def find_manifest(model_path: str, signature_json: str) -> tuple[Path, HeadsManifest] | None:
    """(folder, manifest) for a model: its own folder's manifest first, then the user data directory's."""
    for folder in (Path(model_path).expanduser(), user_heads_dir(model_path, signature_json)):
        if folder.is_dir():
            manifest = HeadsManifest.load(folder)
            if manifest is not None:
                return folder, manifest
    return None
