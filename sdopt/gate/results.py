"""The gate's files: their names, kinds and schema versions, the verdicts and their exit codes,
and the one reader that checks a results or verdict document against its shipped JSON Schema.

Every producer (bench, compare, merge) and every consumer (compare, baseline, report, merge, the
Action) goes through here, so a file name, a kind or a version is spelt once. Results files are
untrusted (a pull request can edit a committed baseline, an artifact can be forged): a document
that does not follow its schema is refused with one line naming the file and the field, never
half-read.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import ExitCode, SdoptError
from ..version import __version__

RESULTS_NAME = "results.json"
PYTEST_BENCHMARK_NAME = "results.pytest-benchmark.json"
VERDICT_NAME = "verdict.json"
MERGED_NAME = "merged.json"
HISTORY_NAME = "history.json"
REPORT_HTML_NAME = "report.html"
REPORT_MARKDOWN_NAME = "report.md"
IMAGES_DIR = "images"

RESULTS_KIND = "sdopt-bench-results"
RESULTS_SCHEMA_VERSION = 1
VERDICT_KIND = "sdopt-verdict"
VERDICT_SCHEMA_VERSION = 1
MERGED_KIND = "sdopt-merged-results"
MERGED_SCHEMA_VERSION = 1
HISTORY_KIND = "sdopt-baseline-history"
HISTORY_SCHEMA_VERSION = 1
# One run in a results history directory (sdopt history; gate/results_history.py).
RUN_ENTRY_KIND = "sdopt-run-history-entry"
RUN_ENTRY_SCHEMA_VERSION = 1

# Device fields that must agree for two results' timings to be comparable (compare refuses other
# machines; a baseline's history keeps only runs of the same machine).
DEVICE_KEYS = ("kind", "name", "cores", "cuda_capability")

# The config keys of a results document that identify its start images and masks (a sha256 of
# each prompt's pixels; sdopt.optimize.inputs.input_image_hashes, whose names these are), with the
# sdopt.toml field each comes from. Absent in text-to-image results. Results whose hashes differ
# are not comparable, and are not one workload in the histories (gate/history.py run_summary).
IMAGE_HASH_KEYS = {"start_image_sha256": "start_image", "mask_image_sha256": "mask_image"}

PASS, REGRESSION, NOT_COMPARABLE = "pass", "regression", "not_comparable"
VERDICTS = (PASS, REGRESSION, NOT_COMPARABLE)
EXIT_FOR_VERDICT = {PASS: ExitCode.PASS, REGRESSION: ExitCode.REGRESSION,
                    NOT_COMPARABLE: ExitCode.NOT_COMPARABLE}
# Which verdict wins when several jobs are merged: a regression anywhere fails the whole.
SEVERITY = {PASS: 0, NOT_COMPARABLE: 1, REGRESSION: 2}
VERDICT_TITLE = {PASS: "pass", NOT_COMPARABLE: "not comparable", REGRESSION: "regression"}

_SCHEMAS = {RESULTS_KIND: ("results", RESULTS_SCHEMA_VERSION),
            VERDICT_KIND: ("verdict", VERDICT_SCHEMA_VERSION),
            HISTORY_KIND: ("history", HISTORY_SCHEMA_VERSION),
            RUN_ENTRY_KIND: ("run-history", RUN_ENTRY_SCHEMA_VERSION)}


def exit_code(verdict: dict[str, Any] | None) -> ExitCode:
    """The exit status of a verdict document (no verdict: pass, there was nothing to judge)."""
    return EXIT_FOR_VERDICT[(verdict or {}).get("verdict") or PASS]


@functools.lru_cache(maxsize=None)
def schema(name: str) -> dict[str, Any]:
    """A shipped JSON Schema (``results``, ``verdict``, ``history`` or ``run-history``)."""
    from importlib import resources

    return json.loads(resources.files("sdopt").joinpath(f"schemas/{name}.schema.json")
                      .read_text(encoding="utf-8"))


def results_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or the results.json inside the directory ``path``."""
    path = Path(path)
    return path / RESULTS_NAME if path.is_dir() else path


def finite(value):
    """JSON has no NaN/Infinity: a non-finite number becomes null rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise SdoptError(f"{what} '{path}' not found: expected a {path.name} written by sdopt")
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SdoptError(f"{what} '{path}' is corrupt: not valid JSON ({exc})") from None
    except ValueError as exc:
        raise SdoptError(f"{what} '{path}' is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> float:
    """Python's JSON reader takes NaN, which compares false with every schema bound: refused.
    Infinity (older versions wrote it for identical images' PSNR) is left to the schema's
    bounds."""
    if name == "NaN":
        raise ValueError("it holds NaN, which JSON does not allow (sdopt writes null)")
    return float(name.replace("Infinity", "inf"))


def validate(data: Any, kind: str, path: Path | str, what: str) -> dict[str, Any]:
    """``data`` if it is a document of ``kind`` in the version this sdopt reads and follows its
    schema; else one error line naming the file and the first offending field."""
    name, version = _SCHEMAS[kind]
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise SdoptError(f"{what} '{path}' is not an sdopt {name} file: expected a JSON object "
                         f"with \"kind\": \"{kind}\"")
    if data.get("schema_version") != version:
        raise SdoptError(
            f"{what} '{path}': schema_version is {data.get('schema_version')!r}, this sdopt "
            f"({__version__}) reads {name} schema version {version}: re-run 'sdopt bench' (and "
            "'sdopt baseline save --update-baseline') with this version")
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema(name))
    error = next(iter(sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))),
                 None)
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise SdoptError(f"{what} '{path}' does not follow the {name} schema v{version}: field "
                         f"'{where}': {error.message[:200]}")
    return data


def read_results(path: str | os.PathLike, *, what: str = "results") -> dict[str, Any]:
    """A results.json (or the directory holding it), validated."""
    file = results_file(path)
    return validate(_read_json(file, what), RESULTS_KIND, file, what)


def read_verdict(path: str | os.PathLike, *, what: str = "verdict") -> dict[str, Any]:
    """A verdict.json (or the directory holding it), validated (merged verdicts included)."""
    file = Path(path)
    if file.is_dir():
        file = file / VERDICT_NAME
    return validate(_read_json(file, what), VERDICT_KIND, file, what)


def read_history_file(path: str | os.PathLike) -> dict[str, Any]:
    """A baseline's history.json, validated (it sits in a committed, PR-editable folder)."""
    return validate(_read_json(Path(path), "baseline history"), HISTORY_KIND, path,
                    "baseline history")


def read_run_entry(path: str | os.PathLike) -> dict[str, Any]:
    """One run of a results history (a directory a cache or a branch brings back), validated."""
    return validate(_read_json(Path(path), "results history entry"), RUN_ENTRY_KIND, path,
                    "results history entry")


def find_results_dir(path: str | os.PathLike, *, what: str = "baseline") -> Path:
    """A results directory, or a downloaded artifact with one inside (at most two levels down)."""
    path = Path(path)
    if (path / RESULTS_NAME).is_file():
        return path
    found = sorted(p.parent for p in list(path.glob(f"*/{RESULTS_NAME}"))
                   + list(path.glob(f"*/*/{RESULTS_NAME}")))
    if len(found) == 1:
        return found[0]
    if not found:
        raise SdoptError(f"{what} '{path}' holds no {RESULTS_NAME}: expected a directory written "
                         "by 'sdopt baseline save' or a downloaded sdopt results artifact")
    raise SdoptError(f"{what} '{path}' holds {len(found)} results ({', '.join(map(str, found))}):"
                     " pass the one to use")


def variant_median_s(results: dict[str, Any] | None, variant: str) -> float | None:
    """The median end-to-end latency (s/image) of ``variant``; None when it was not timed."""
    variants = (results or {}).get("variants")
    entry = variants.get(variant) if isinstance(variants, dict) else None
    latency = entry.get("latency_s") if isinstance(entry, dict) else None
    value = latency.get("median") if isinstance(latency, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def end_to_end_speedup(results: dict[str, Any] | None) -> float | None:
    """Original over optimized median latency, when both pipelines were benchmarked."""
    original, optimized = variant_median_s(results, "original"), \
        variant_median_s(results, "optimized")
    return original / optimized if original and optimized else None
