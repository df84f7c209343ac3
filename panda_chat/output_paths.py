"""Writing a command's output: never over something that exists unless asked (``force``), and never half-written.

Every CLI path that writes a file or a folder (``reward train --out``, ``lambda fit --out``, ``profile export -o``,
``eval --json-out``) goes through here, so they all refuse the same things with the same message:

- an existing file, or a folder that is not empty, is refused unless ``force`` (a trained reward must not silently
  replace a base model's ``config.json`` and ``model.safetensors``);
- the output is written to a temporary name in the same folder and renamed into place only once complete, so a
  crash or Ctrl-C leaves the old output (or nothing), never a mixture.

``check_output`` is for the start of a long command (refuse before training for ten minutes, not after);
``atomic_file`` and ``atomic_folder`` do the writing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal


class OutputExistsError(FileExistsError):
    """The output path holds a file or a non-empty folder, and ``force`` was not given."""


def check_output(
    path: str | os.PathLike[str], *, force: bool = False, kind: Literal["file", "folder"] = "file"
) -> Path:
    """Refuse ``path`` when writing it would overwrite something (see the module docstring); returns it as a Path."""
    path = Path(path).expanduser()
    if kind == "file":
        if path.is_dir():
            raise OutputExistsError(f"output {path} is a folder; give a file name")
        if path.exists() and not force:
            raise OutputExistsError(
                f"output file {path} already exists; choose another name or pass --force to replace it"
            )
    else:
        if path.exists() and not path.is_dir():
            raise OutputExistsError(f"output {path} is a file, not a folder; give a folder name")
        if path.is_dir() and any(path.iterdir()) and not force:
            raise OutputExistsError(
                f"output folder {path} is not empty; choose a new folder or pass --force to replace it"
            )
    return path


def _umask_mode(mode: int) -> int:
    """``mode`` as the process's umask would leave it for a newly created file or folder."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mode & ~mask


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, force: bool = False, private: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) to write; on success it is renamed to ``path``.

    ``private``: the file stays readable by its owner only (a user's exported profile), else the usual mode."""
    path = check_output(path, force=force, kind="file")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        if not private:
            temporary.chmod(_umask_mode(0o666))
        check_output(path, force=force, kind="file")  # created by someone else while we wrote?
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str, *, force: bool = False, private: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, refusing to overwrite unless ``force``."""
    with atomic_file(path, force=force, private=private) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path).expanduser()


@contextmanager
def atomic_folder(path: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path`` to fill; on success it replaces ``path`` (whose old content,
    allowed only with ``force``, is deleted after the new folder is in place)."""
    path = check_output(path, force=force, kind="folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old: Path | None = None
    try:
        yield temporary
        temporary.chmod(_umask_mode(0o777))
        check_output(path, force=force, kind="folder")
        if not path.exists():
            os.replace(temporary, path)
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            try:
                os.replace(temporary, path)
            except BaseException:
                os.replace(old / path.name, path)  # put the old folder back rather than lose it
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
