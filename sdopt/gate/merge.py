"""Fan-in for a CI matrix: several result directories (one per GPU type, model or runner pool)
become one verdict, so a pull request gets a single comment and the workflow a single pass/fail
however many machines measured it.

Each leg is a directory written by ``sdopt gate`` or ``sdopt bench`` (results.json, optionally
verdict.json), usually a downloaded artifact. The merged verdict is the worst leg's: regression >
not comparable > pass; a leg without a verdict among judged legs (its gate did not get as far
as judging) makes the whole not comparable, never a pass. Legs are downloaded artifacts, so they
are read by sdopt's validating reader and links in them are refused. This module decides (legs, merged verdict, merged.json); the markdown is
the report package's (sdopt.report.merged) and ``sdopt merge`` writes them together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import SdoptError
from ..store import atomic_directory, atomic_write_text, write_json
from ..version import __version__
from .results import (MERGED_KIND, MERGED_NAME, MERGED_SCHEMA_VERSION, NOT_COMPARABLE,
                      RESULTS_NAME, SEVERITY, VERDICT_KIND, VERDICT_NAME, VERDICT_SCHEMA_VERSION,
                      end_to_end_speedup, read_results, read_verdict, variant_median_s)


@dataclass
class Leg:
    name: str
    directory: Path
    results: dict[str, Any]
    verdict: dict[str, Any] | None

    @property
    def state(self) -> str | None:
        return (self.verdict or {}).get("verdict")

    @property
    def device(self) -> str:
        device = ((self.results.get("environment") or {}).get("device") or {})
        return str(device.get("name") or device.get("kind") or "unknown device")

    def median(self, variant: str) -> float | None:
        return variant_median_s(self.results, variant)

    @property
    def speedup(self) -> float | None:
        return end_to_end_speedup(self.results)


def _no_link(path: Path) -> Path:
    if path.is_symlink():
        raise SdoptError(f"result directory entry '{path}' is a symbolic link: expected the "
                         "files 'sdopt gate' or 'sdopt bench' wrote (links are never followed)")
    return path


def load_legs(directories: list[str | os.PathLike]) -> list[Leg]:
    if not directories:
        raise SdoptError("no result directory given: pass one directory per matrix leg")
    legs: list[Leg] = []
    for directory in directories:
        path = _no_link(Path(directory))
        if not path.is_dir():
            raise SdoptError(f"result directory '{path}' not found: expected a directory "
                             "written by 'sdopt gate' or 'sdopt bench'")
        name = path.resolve().name
        if any(leg.name == name for leg in legs):
            raise SdoptError(f"two result directories are named '{name}': each matrix leg "
                             "needs its own directory name (it labels the leg in the report)")
        verdict_file = _no_link(path / VERDICT_NAME)
        verdict = read_verdict(verdict_file) if verdict_file.exists() else None
        legs.append(Leg(name, path, read_results(_no_link(path / RESULTS_NAME)), verdict))
    return legs


def merged_verdict(legs: list[Leg]) -> dict[str, Any] | None:
    """The worst judged leg's verdict with every leg's reasons; None when no leg was judged."""
    judged = [leg for leg in legs if leg.state]
    if not judged:
        return None
    worst = max(judged, key=lambda leg: SEVERITY[leg.state]).state
    reasons = [f"{leg.name}: {reason}" for leg in judged
               for reason in (leg.verdict.get("reasons") or [])]
    unjudged = [leg.name for leg in legs if not leg.state]
    if unjudged:       # fail closed: a leg that was not judged cannot be taken for a pass
        worst = max(worst, NOT_COMPARABLE, key=SEVERITY.__getitem__)
        reasons += [f"{name}: no {VERDICT_NAME} (the job did not judge its results), while "
                    "other jobs did" for name in unjudged]
    return {"schema_version": VERDICT_SCHEMA_VERSION, "kind": VERDICT_KIND, "verdict": worst,
            "reasons": reasons, "legs": {leg.name: leg.state for leg in judged}}


def merged_document(legs: list[Leg], verdict: dict[str, Any] | None) -> dict[str, Any]:
    """merged.json: one line per leg, for dashboards that read the fan-in job's artifact."""
    return {
        "schema_version": MERGED_SCHEMA_VERSION, "kind": MERGED_KIND,
        "sdopt_version": __version__,
        "verdict": (verdict or {}).get("verdict"),
        "legs": [{"name": leg.name, "results_dir": str(leg.directory), "device": leg.device,
                  "verdict": leg.state, "speedup": leg.speedup,
                  "original_median_s": leg.median("original"),
                  "optimized_median_s": leg.median("optimized")} for leg in legs]}


def write_merged(out: str | os.PathLike, legs: list[Leg], verdict: dict[str, Any] | None, *,
                 files: Mapping[str, str] | None = None, overwrite: bool = False) -> None:
    """``out``/merged.json, verdict.json (when any leg was judged) and ``files`` (name -> text,
    e.g. the report), all or nothing."""
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_json(tmp / MERGED_NAME, merged_document(legs, verdict))
        if verdict is not None:
            write_json(tmp / VERDICT_NAME, verdict)
        for name, text in (files or {}).items():
            atomic_write_text(tmp / name, text)
