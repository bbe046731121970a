"""Atomic writes, and the one rule for what sdopt may replace.

A save that dies half way must leave what the user had before untouched: everything is written
into a temporary sibling directory and renamed into place, and an existing directory is only
replaced when the caller asked for it AND sdopt made it (it carries :data:`MARKER_NAME`): a
hostile ``sdopt.toml`` (``output_dir = ".."``) or a mistyped ``--out`` must never turn
``--overwrite`` into deleting the user's repository or home.

Written files and directories get the modes the process umask gives ordinary files (0644/0755
under umask 022), not ``mkstemp``'s 0600/0700: a later CI step running as another user
(``actions/upload-artifact`` as the runner's uid 1001 after a root container) must read them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import DiskFullError, SdoptError

# Written into every directory atomic_directory creates: what marks it as sdopt's to replace.
# Its last line names the kind of output, so that a results directory never replaces a saved
# model or a model folder sdopt wrote (``output_dir = "model"`` in a hostile config).
MARKER_NAME = ".sdopt-output"
_MARKER_TEXT = ("This directory was written by sdopt; 'sdopt ... --overwrite' may replace it.\n"
                "Without this file sdopt refuses to replace or delete the directory.\n"
                "kind = {kind}\n")


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask sets it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _normal_mode(path: Path, *, directory: bool) -> None:
    """Give a mkdtemp/mkstemp path the mode an ordinary mkdir/open would have had."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def exists_and_not_empty(path: str | os.PathLike) -> bool:
    """Whether writing a directory at ``path`` would replace something the user has (a file, or
    a directory with anything in it): then sdopt asks for ``--overwrite`` first."""
    path = Path(path)
    return path.is_symlink() or (path.exists() and (not path.is_dir() or any(path.iterdir())))


def marker_kind(path: str | os.PathLike) -> str | None:
    """The kind of output sdopt wrote at ``path`` (its marker's), or None: not sdopt's."""
    marker = Path(path) / MARKER_NAME
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        last = marker.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
    except OSError:
        return None
    key, sep, value = (last[0] if last else "").partition("=")
    return value.strip() if sep and key.strip() == "kind" else ""


def has_marker(path: str | os.PathLike, kind: str | None = None) -> bool:
    """Whether sdopt made the directory ``path`` (its marker file), as a ``kind`` output when
    given."""
    found = marker_kind(path)
    return found is not None and (kind is None or found == kind)


def always_protected() -> list[Path]:
    """Directories no output may be, nor contain: the home directory and the working directory
    (callers add the repository root and the config's folder)."""
    out = [Path.cwd()]
    home = os.environ.get("HOME")
    if home:
        out.append(Path(home))
    with contextlib.suppress(RuntimeError, KeyError):
        out.append(Path.home())
    return out


def check_replaceable(target: str | os.PathLike, *, what: str = "output",
                      protected: Iterable[str | os.PathLike] = (),
                      made_by_sdopt: Callable[[Path], bool] | None = None) -> None:
    """Refuse, before anything is deleted, to replace ``target`` unless it is missing, an empty
    directory, or a directory sdopt made (``made_by_sdopt``: the marker, or a caller's way to
    recognise what older versions wrote) that is neither a protected directory nor an ancestor
    of one (the repository root, the config's folder, HOME, the working directory)."""
    target = Path(target)
    if target.is_symlink():
        raise SdoptError(f"{what} '{target}' is a symbolic link: sdopt does not replace links; "
                         "choose another directory")
    if not target.exists():
        return
    if not target.is_dir():
        raise SdoptError(f"{what} '{target}' is a file, not a directory sdopt wrote: choose "
                         "another directory")
    resolved = target.resolve()
    for guarded in [*always_protected(), *map(Path, protected)]:
        guarded = Path(os.path.abspath(guarded))
        with contextlib.suppress(OSError):
            guarded = guarded.resolve()
        if guarded == resolved or guarded.is_relative_to(resolved):
            raise SdoptError(f"{what} '{target}' is or contains '{guarded}' (the repository, the "
                             "config's folder, HOME or the working directory): sdopt never "
                             "replaces it; choose a directory of its own")
    if any(target.iterdir()) and not (made_by_sdopt or has_marker)(target):
        found = marker_kind(target)
        if found:
            raise SdoptError(f"{what} '{target}' holds another kind of sdopt output ({found}, "
                             "e.g. a model): sdopt does not replace it with this one; choose "
                             "another directory")
        raise SdoptError(f"{what} '{target}' was not written by sdopt (no {MARKER_NAME} in it): "
                         "sdopt replaces only its own output; choose another directory or "
                         "remove it yourself")


# A full disk (ENOSPC) and an exhausted quota (EDQUOT) read the same to the user: no room to write.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the disk or quota filling up. Writers in other
    languages wrap the OS error in their own type and keep only its text (safetensors raises
    ``SafetensorError: ... No space left on device (os error 28)``), so the text counts too."""
    texts = [os.strerror(code) for code in _NO_ROOM]
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            return True
        if any(text in str(exc) for text in texts):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# Free space under which a failed write counts as a full disk whatever its message: OpenVINO's
# IR writer says only "basic_ios::clear: iostream error" and torch.save "unexpected pos 576 vs
# 534" when the disk fills (measured on a full tmpfs), and a write that failed for want of
# room leaves less than a block free.
NEARLY_FULL_BYTES = 4 << 20


def free_bytes(path: Path) -> int | None:
    """The room this process may still write on ``path``'s filesystem (root may use the blocks
    reserved for it); None when it cannot be read."""
    try:
        st = os.statvfs(_existing_parent(path))
    except OSError:
        return None
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def failed_for_room(exc: BaseException, path: Path) -> bool:
    """Whether a write to ``path`` that raised ``exc`` failed because the disk filled: its error
    says so, or the disk is (nearly) full now, before anything written is removed."""
    if isinstance(exc, DiskFullError):
        return False  # already reported, by a nested write
    if is_disk_full(exc):
        return True
    free = free_bytes(path)
    return free is not None and free < NEARLY_FULL_BYTES


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def disk_full_error(target: Path, written_bytes: int | None) -> DiskFullError:
    """One line instead of a traceback from deep inside a copy: where, how much had been written
    when the disk filled (so at least that much more is needed), and how much is free now."""
    free_now = free_bytes(target)
    free = "unknown" if free_now is None else human_size(free_now)
    wrote = f"{human_size(written_bytes)} written before it filled, " \
        if written_bytes is not None else ""
    return DiskFullError(
        f"no space left on the disk of '{target}': {wrote}{free} free "
        "now; free space there ('sdopt cache prune' removes old build-cache entries) or write "
        "to another disk (--out; SDOPT_CACHE for the build cache)")


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, *, overwrite: bool = False, kind: str = "output",
                     protected: Iterable[str | os.PathLike] = (),
                     made_by_sdopt: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary directory (holding sdopt's marker for ``kind``) that becomes ``target``
    only if the block succeeds. With ``overwrite`` an existing ``target`` is replaced only when
    :func:`check_replaceable` allows it (by default: a ``kind`` output sdopt wrote), checked
    before the block runs and again before the rename."""
    target = Path(target)
    made_by_sdopt = made_by_sdopt or (lambda path: has_marker(path, kind))
    if not overwrite and exists_and_not_empty(target):
        raise SdoptError(f"output '{target}' already exists and is not empty: choose another path "
                         "or pass overwrite=True (--overwrite)")
    protected = list(protected)
    check_replaceable(target, protected=protected, made_by_sdopt=made_by_sdopt)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _normal_mode(tmp, directory=True)
        (tmp / MARKER_NAME).write_text(_MARKER_TEXT.format(kind=kind), encoding="utf-8")
        yield tmp
        if target.exists() or target.is_symlink():
            check_replaceable(target, protected=protected, made_by_sdopt=made_by_sdopt)
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            backup.rmdir()
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException as exc:
        full = isinstance(exc, Exception) and failed_for_room(exc, tmp)
        written = directory_size(tmp) if full else None
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise disk_full_error(target, written) from exc
        raise


def remove_output(target: str | os.PathLike, *, what: str = "output",
                  protected: Iterable[str | os.PathLike] = (),
                  made_by_sdopt: Callable[[Path], bool] | None = None) -> None:
    """Delete an output directory sdopt made (``--overwrite`` for a command that writes into
    the directory itself); anything else is refused by :func:`check_replaceable` first."""
    target = Path(target)
    check_replaceable(target, what=what, protected=protected, made_by_sdopt=made_by_sdopt)
    if target.exists():
        shutil.rmtree(target)


def check_plain_directory(path: str | os.PathLike, what: str, expected: str) -> Path:
    """Refuse, in one line, a path sdopt is to write a directory at that is a link or a file
    (before minutes of work, and never writing through a link)."""
    path = Path(path)
    if path.is_symlink():
        raise SdoptError(f"{what} '{path}' is a symbolic link: sdopt does not write through "
                         "links; choose a plain directory")
    if path.exists() and not path.is_dir():
        raise SdoptError(f"{what} '{path}' is a file: expected {expected}")
    return path


def _write_then(path: Path, text: str, place: Callable[[str, Path], None]) -> None:
    """Write ``text`` to a temporary sibling of ``path`` (synced, the umask's mode), then
    ``place(tmp, path)`` it; the temporary file never outlives the call."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        place(tmp, path)
    except OSError as exc:
        if failed_for_room(exc, path):
            raise disk_full_error(path, None) from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file through a temporary sibling and a rename, so readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_then(path, text, os.replace)


def create_new_text(path: str | os.PathLike, text: str) -> None:
    """Write a file that must not exist yet (append-only stores: a history entry, a
    pytest-benchmark storage file): written through a temporary sibling and linked into place, so
    readers never see half of it and an existing file is never replaced (FileExistsError)."""
    _write_then(Path(path), text, os.link)


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def directory_size(path: str | os.PathLike) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total
