"""Reading what the report shows: results.json directories, verdict.json, history files.

The producers (``sdopt bench``, ``sdopt compare``) are separate commands, possibly of another
sdopt version, so the reader checks only what it needs (kind and schema version) and tolerates
every optional field being absent; a wrong file gives one line naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..gate.bench import RESULTS_KIND, RESULTS_NAME
from ..gate.bench import RESULTS_SCHEMA_VERSION as SCHEMA_VERSION
from ..gate.compare import VERDICT_KIND
from ..errors import SdoptError

# The contracts' names come from their producers; the checks below are deliberately looser than
# sdopt.bench.read_results (a report of a partial or foreign results file is still useful).


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise SdoptError(f"{what} '{path}' not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SdoptError(f"{what} '{path}' cannot be read: {exc}") from None


def _check(data: Any, path: Path, what: str, kind: str) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise SdoptError(f"{what} '{path}' is not an sdopt file of kind '{kind}': expected a JSON "
                         f"object with \"kind\": \"{kind}\"")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SdoptError(f"{what} '{path}': schema_version is {version!r}, this report reads "
                         f"{SCHEMA_VERSION}")
    variants = data.get("variants", {})
    if kind == RESULTS_KIND and not isinstance(variants, dict):
        raise SdoptError(f"{what} '{path}': field 'variants' must be an object")
    return data


def results_file(path: str | Path) -> Path:
    path = Path(path)
    return path / RESULTS_NAME if path.is_dir() else path


def load_results(path: str | Path, what: str = "results") -> tuple[dict[str, Any], Path]:
    """A results directory (or its results.json): the document and the directory its image
    paths are relative to."""
    file = results_file(path)
    return _check(_read_json(file, what), file, what, RESULTS_KIND), file.parent


def load_verdict(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return _check(_read_json(path, "verdict"), path, "verdict", VERDICT_KIND)


def load_history(paths) -> list[dict[str, Any]]:
    """Earlier results for the trend chart: results directories or results.json files."""
    return [load_results(p, "history results")[0] for p in paths]
