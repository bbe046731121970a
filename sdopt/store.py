"""Atomic writes and the saved-model manifest.

A save that dies half way must leave what the user had before untouched: everything is written
into a temporary sibling directory and renamed into place, and an existing directory is only
replaced when the caller asked for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import SdoptError

MANIFEST_NAME = "sdopt_manifest.json"
MANIFEST_SCHEMA_VERSION = 1


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``target`` only if the block succeeds."""
    target = Path(target)
    if target.exists() and not overwrite and (target.is_file() or any(target.iterdir())):
        raise SdoptError(f"output '{target}' already exists and is not empty: choose another path "
                         "or pass overwrite=True (--overwrite)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            backup.rmdir()
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file through a temporary sibling and a rename, so readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and structurally validate a saved model's manifest, naming the file on any problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SdoptError(f"saved model '{directory}' not found: expected a directory written by "
                         "sdopt.save_model")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise SdoptError(f"'{path}' is missing: '{directory}' is not a model saved by sdopt")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SdoptError(f"'{path}' is corrupt: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SdoptError(f"'{path}' is corrupt: expected a JSON object")
    version = data.get("schema_version")
    if version != MANIFEST_SCHEMA_VERSION:
        raise SdoptError(f"'{path}': schema_version is {version!r}, this sdopt reads "
                         f"{MANIFEST_SCHEMA_VERSION}; re-run optimize_model and save again")
    for key, kind in (("components", dict), ("sdopt_version", str), ("device", dict)):
        if not isinstance(data.get(key), kind):
            raise SdoptError(f"'{path}' is corrupt: field '{key}' is missing or not a "
                             f"{kind.__name__}")
    for name, comp in data["components"].items():
        for key, kind in (("backend", str), ("backend_version", int), ("variant", str),
                          ("options", dict), ("source_hash", str)):
            if not isinstance(comp, dict) or not isinstance(comp.get(key), kind):
                raise SdoptError(f"'{path}' is corrupt: components.{name}.{key} is missing or "
                                 f"not a {kind.__name__}")
    return data


def directory_size(path: str | os.PathLike) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total
