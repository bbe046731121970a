"""On-disk cache of exports and built engines, so a second run on the same machine skips them.

Converting the SD 1.5 UNet to OpenVINO takes about 22 s here, exporting it to ONNX about 21 s,
calibrating int8 minutes: a CI runner that keeps ``SDOPT_CACHE`` between jobs should pay that once.
An entry is a directory named by the hash of everything that changes the artifact (weights hash,
UNet config, input shapes, precision, opset, library versions, GPU for engines); the builder
writes into a temporary directory that is renamed into place only when it succeeded, so a build
killed half way never leaves an entry that looks complete. Entries never hold pickles: only the
artifact formats the backends load (ONNX, OpenVINO IR, TensorRT plans) and a JSON description.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import SdoptError
from .store import atomic_directory, directory_size, write_json

log = logging.getLogger(__name__)

CACHE_ENV = "SDOPT_CACHE"
ENTRY_FILE = "sdopt_cache_entry.json"
ENTRY_SCHEMA = 1


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit``, else ``$SDOPT_CACHE``, else the user's cache directory (XDG on Linux)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "sdopt"


def make_key(parts: dict[str, Any]) -> str:
    """Stable hash of the key parts (JSON with sorted keys: dict order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


@dataclass
class CacheEntry:
    kind: str
    key: str
    path: Path
    hit: bool
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def built(self) -> dict[str, Any]:
        """What the builder returned when the entry was made (e.g. which exporter worked)."""
        return self.meta.get("built") or {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Two processes asking for the same missing entry: the second waits and then hits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_entry(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / ENTRY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == ENTRY_SCHEMA else None


def _check_kind(kind: str) -> None:
    if not kind or not all(c.isalnum() or c in "-_" for c in kind):
        raise ValueError(f"cache kind {kind!r} must be letters, digits, '-' or '_'")


# Whether a complete entry may be served: (its directory, its description) -> True, or False to
# build it again under the same key. It may add to the description's "built" (kept with the hit).
Validator = Callable[[Path, dict], bool]


def fetch_or_build(kind: str, parts: dict[str, Any], build: Callable[[Path], dict | None], *,
                   root: str | os.PathLike | None = None,
                   valid: Validator | None = None) -> CacheEntry:
    """The entry for ``parts``; on a miss ``build(tmpdir)`` writes the artifact files into
    ``tmpdir`` (returning a JSON-safe description) and the directory becomes the entry.
    ``valid``: checked on a hit; an entry it refuses is built again (an artifact a fixed builder
    would no longer write, under a key that did not change: see :func:`made_after`)."""
    _check_kind(kind)
    base = cache_root(root)
    key = make_key({"kind": kind, **parts})
    target = base / kind / key
    with _locked(base / kind / f".{key}.lock"):
        meta = _read_entry(target)
        if meta is not None and valid is not None and not valid(target, meta):
            log.warning("sdopt: cached %s %s is not valid any more: building it again", kind, key)
            meta = None
        if meta is not None:
            meta["last_used_unix"] = time.time()
            with contextlib.suppress(OSError):  # a read-only cache still serves hits
                write_json(target / ENTRY_FILE, meta)
            return CacheEntry(kind, key, target, True, meta)
        started = time.perf_counter()
        with atomic_directory(target, overwrite=True) as tmp:
            built = build(tmp) or {}
            now = time.time()
            meta = {"schema": ENTRY_SCHEMA, "kind": kind, "key": key, "parts": parts,
                    "built": built, "build_s": round(time.perf_counter() - started, 3),
                    "created_unix": now, "last_used_unix": now, "size_bytes": directory_size(tmp)}
            write_json(tmp / ENTRY_FILE, meta)
    with contextlib.suppress(OSError):
        (base / kind / f".{key}.lock").unlink()
    return CacheEntry(kind, key, target, False, meta)


def made_after(source: CacheEntry) -> Validator:
    """The validity of an entry derived from ``source`` and keyed by ``source.key`` (a
    quantization of an export, an engine built from it): made after ``source`` was. A source
    rebuilt under its key (refused by its own check) makes what was derived from the old one
    stale, though the derived key is the same."""
    made = source.meta.get("created_unix") or 0
    return lambda path, meta: (meta.get("created_unix") or 0) >= made


def peek(kind: str, parts: dict[str, Any], *,
         root: str | os.PathLike | None = None) -> CacheEntry | None:
    """The entry for ``parts`` if it is complete, else None (nothing is built)."""
    _check_kind(kind)
    base = cache_root(root)
    key = make_key({"kind": kind, **parts})
    target = base / kind / key
    meta = _read_entry(target)
    if meta is None:
        return None
    meta["last_used_unix"] = time.time()
    with contextlib.suppress(OSError):
        write_json(target / ENTRY_FILE, meta)
    return CacheEntry(kind, key, target, True, meta)


def persistent_dir(kind: str, parts: dict[str, Any], *,
                   root: str | os.PathLike | None = None) -> Path:
    """A directory a library fills by itself (ONNX Runtime's TensorRT engine and timing caches):
    keyed like an entry, created empty, and shown by ``sdopt cache info`` like the others."""
    entry = fetch_or_build(kind, parts, lambda tmp: {"managed_by": "library"}, root=root)
    return entry.path


@dataclass
class EntryInfo:
    kind: str
    key: str
    path: Path
    size_bytes: int
    last_used_unix: float
    created_unix: float
    complete: bool

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "path": str(self.path),
                "size_bytes": self.size_bytes, "last_used_unix": self.last_used_unix,
                "created_unix": self.created_unix, "complete": self.complete}


def list_entries(root: str | os.PathLike | None = None) -> list[EntryInfo]:
    """Every entry, and every leftover of a build that died (``complete`` False)."""
    base = cache_root(root)
    out: list[EntryInfo] = []
    if not base.is_dir():
        return out
    for kind_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for item in sorted(p for p in kind_dir.iterdir() if p.is_dir()):
            meta = _read_entry(item)
            mtime = item.stat().st_mtime
            out.append(EntryInfo(
                kind=kind_dir.name, key=item.name, path=item, size_bytes=directory_size(item),
                last_used_unix=float(meta.get("last_used_unix", mtime)) if meta else mtime,
                created_unix=float(meta.get("created_unix", mtime)) if meta else mtime,
                complete=meta is not None and not item.name.startswith(".")))
    return out


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5GB', '0', '12345' -> bytes (for ``--max-size``)."""
    raw = str(text).strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    factor = units.get(raw[-1:], 1) if raw else 1
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        value = float(number)
    except ValueError:
        raise SdoptError(f"size '{text}' is not understood: expected a number of bytes with an "
                         "optional K, M, G or T suffix (e.g. 2G)") from None
    if value < 0:
        raise SdoptError(f"size '{text}' is negative: expected 0 or more bytes")
    return int(value * factor)


def prune(root: str | os.PathLike | None = None, *, max_bytes: int | None = None,
          older_than_s: float | None = None, everything: bool = False,
          dry_run: bool = False) -> list[EntryInfo]:
    """Remove leftovers of dead builds, entries unused for ``older_than_s``, then the least
    recently used ones until the cache fits in ``max_bytes``. Returns what was (or would be)
    removed."""
    entries = list_entries(root)
    now = time.time()
    doomed: list[EntryInfo] = []
    keep: list[EntryInfo] = []
    for entry in entries:
        stale_tmp = not entry.complete and now - entry.last_used_unix > 3600
        old = older_than_s is not None and now - entry.last_used_unix > older_than_s
        (doomed if everything or stale_tmp or old else keep).append(entry)
    if max_bytes is not None:
        keep.sort(key=lambda e: e.last_used_unix)
        total = sum(e.size_bytes for e in keep)
        while keep and total > max_bytes:
            entry = keep.pop(0)
            total -= entry.size_bytes
            doomed.append(entry)
    if not dry_run:
        for entry in doomed:
            shutil.rmtree(entry.path, ignore_errors=True)
    return doomed


