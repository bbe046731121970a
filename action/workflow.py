"""GitHub Actions workflow commands: outputs, job summary, annotations, masks.

The runner reads these through files and stdout lines whose formats are documented but easy to get
subtly wrong: a multiline output needs the heredoc-delimiter syntax, a summary over 1 MiB makes
the runner drop the whole summary (not only the excess), and an annotation message containing a
newline or ``::`` ends the command early. Everything that writes to the runner goes through here.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path
from typing import Mapping, TextIO

from sdopt.report.markdown import cap

SUMMARY_LIMIT_BYTES = 1024 * 1024
TRUNCATION_NOTE = "\n\n> The report was truncated to fit the job summary's 1 MiB limit.\n"


def escape_data(value: str) -> str:
    """Escape a workflow command's message (the runner's own escaping rules)."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """Escape a workflow command property value, where ``:`` and ``,`` are separators."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def neutralize(text: str) -> str:
    """Text that the runner will print but never execute.

    The runner reads its log line by line (``\\r`` ends a line too) and treats a line starting
    with ``::name`` (after leading blanks) as a workflow command, and ``##[`` anywhere as an
    old-style one; text read from files (a baseline's fields, a prompt, a leg's name) could
    otherwise set outputs, add masks or forge annotations once it reaches stdout. A blank goes
    between the colons (``: :``) and the hashes (``# #[``) of each line."""
    parts = re.split(r"(\r\n|\r|\n)", text)
    for i in range(0, len(parts), 2):
        line = parts[i]
        head = len(line) - len(line.lstrip())
        if line.startswith("::", head):
            line = f"{line[:head]}: :{line[head + 2:]}"
        parts[i] = line.replace("##[", "# #[")
    return "".join(parts)


def command(name: str, message: str = "", stream: TextIO | None = None, **properties: str | None) -> None:
    props = ",".join(f"{key}={escape_property(str(val))}"
                     for key, val in properties.items() if val is not None)
    line = f"::{name}{' ' + props if props else ''}::{escape_data(message)}"
    out = stream or sys.stdout
    out.write(line + "\n")
    out.flush()


def error(message: str, *, title: str | None = None, file: str | None = None,
          stream: TextIO | None = None) -> None:
    command("error", message, stream, title=title, file=file)


def warning(message: str, *, title: str | None = None, file: str | None = None,
            stream: TextIO | None = None) -> None:
    command("warning", message, stream, title=title, file=file)


def notice(message: str, *, title: str | None = None, stream: TextIO | None = None) -> None:
    command("notice", message, stream, title=title)


def mask(secret: str, stream: TextIO | None = None) -> None:
    """Ask the runner to replace ``secret`` with *** in every later log line."""
    if secret:
        for line in secret.splitlines():
            if line.strip():
                command("add-mask", line, stream)


def _delimiter(values: Mapping[str, str]) -> str:
    while True:
        delim = f"ghadelimiter_{uuid.uuid4()}"
        if not any(delim in v for v in values.values()):
            return delim


def format_outputs(values: Mapping[str, str]) -> str:
    """``name<<DELIM`` blocks, valid for single- and multi-line values alike."""
    chunks = []
    for name, value in values.items():
        if not name or any(c in name for c in "\r\n=<"):
            raise ValueError(f"invalid output name {name!r}")
        value = "" if value is None else str(value)
        delim = _delimiter({name: value})
        chunks.append(f"{name}<<{delim}\n{value}\n{delim}\n")
    return "".join(chunks)


def set_outputs(values: Mapping[str, str], env: Mapping[str, str] | None = None) -> Path | None:
    """Append to $GITHUB_OUTPUT; without it (a local ``docker run``) print them instead."""
    env = os.environ if env is None else env
    text = format_outputs(values)
    path = env.get("GITHUB_OUTPUT")
    if not path:
        for name, value in values.items():
            print(f"output {name}: {value}")
        return None
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def write_summary(markdown: str, env: Mapping[str, str] | None = None) -> Path | None:
    """Append to $GITHUB_STEP_SUMMARY, keeping the whole file under the runner's 1 MiB cap."""
    env = os.environ if env is None else env
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return None
    target = Path(path)
    used = target.stat().st_size if target.exists() else 0
    room = SUMMARY_LIMIT_BYTES - used
    if room <= len(TRUNCATION_NOTE.encode()):
        warning("the job summary is already full; the sdopt report is not added to it")
        return target
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(cap(markdown if markdown.endswith("\n") else markdown + "\n", room,
                     note=TRUNCATION_NOTE, encoding="utf-8"))
    return target
