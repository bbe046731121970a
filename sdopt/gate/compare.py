"""The regression gate: is the current benchmark worse than the baseline, beyond noise?

Latency: a bare percentage on noisy timings either cries wolf or gets raised until it means
nothing (users of fixed-threshold tools end up at 200-500%), and a significance test on samples
of two different runs cries wolf too, because whole runs drift. :mod:`sdopt.gate.latency` holds
the comparisons that cancel the drift (same-job, in-run ratio, absolute against the history of
runs); the verdict lists each with its numbers and says which decided.

Quality: each image is compared with the baseline's image of the same prompt and seed (PSNR and
SSIM); a backend that silently changes numerics shows up here even when latency improves.

Machines: timings of different CPUs/GPUs say nothing about the code, so such a pair is "not
comparable" unless the config says to warn, or the caller allows another machine. That is an input error
(exit 2, one line naming what differs): the pair cannot answer the question, and a red build for
it must not read as a regression of the code (exit 3, "not comparable", distinct from bad
input).

Image quality is :mod:`sdopt.optimize.metrics`' PSNR and SSIM, the same numbers the search and
the report compute for the same pair. Identical images have an infinite PSNR, which JSON cannot
hold: the verdict records it as null ("identical").
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SdoptError
from ..optimize import metrics
from . import latency
from .config import GateConfig
from .history import runs_like
from .results import (DEVICE_KEYS, IMAGE_HASH_KEYS, NOT_COMPARABLE, PASS, REGRESSION,
                      RESULTS_NAME, VERDICT_KIND, VERDICT_SCHEMA_VERSION)



def safe_join(root: Path, rel: str, what: str) -> Path:
    """``root/rel``, refusing paths that climb out (results files are untrusted input)."""
    path = (Path(root) / rel).resolve()
    if os.path.isabs(rel) or not path.is_relative_to(Path(root).resolve()):
        raise SdoptError(f"{what} '{Path(root) / RESULTS_NAME}' names image path '{rel}' outside "
                         "its directory: expected a relative path such as images/optimized/0.png")
    return path


def _load_rgb(path: Path, what: str):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise SdoptError(f"{what} image '{path}' is missing: the results directory is incomplete")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise SdoptError(f"{what} image '{path}' cannot be read as an image: {exc}") from None


def image_quality(baseline_png: Path, current_png: Path) -> tuple[float, float]:
    """(PSNR in dB, inf when identical; SSIM) of the current image against the baseline's."""
    ref = _load_rgb(baseline_png, "baseline")
    cur = _load_rgb(current_png, "current")
    return metrics.psnr_db(ref, cur), 1.0 - metrics.ssim_drop(ref, cur)


def clip_cosine(baseline_png: Path, current_png: Path) -> float:
    """Cosine of the CLIP image embeddings of the two images (1 = the same to CLIP)."""
    return 1.0 - metrics.clip_cosine_drop(_load_rgb(baseline_png, "baseline"),
                                          _load_rgb(current_png, "current"))


def _check_clip(gate: GateConfig, clip_model: str | os.PathLike | None) -> bool:
    if gate.clip_min is None:
        return False
    from ..optimize import metrics

    if clip_model is not None:
        metrics.configure_clip(clip_model)
    reason = metrics.clip_unavailable_reason()
    if reason:
        raise SdoptError(f"gate.clip_min = {gate.clip_min:g} needs a local CLIP model: {reason}; "
                         "set gate.clip_model to a local transformers CLIP folder, or remove "
                         "gate.clip_min")
    return True


def environment_differences(baseline: dict, current: dict) -> list[str]:
    """Why two results' machines differ (empty when they count as the same machine)."""
    a = (baseline.get("environment") or {}).get("device") or {}
    b = (current.get("environment") or {}).get("device") or {}
    out = []
    for key in DEVICE_KEYS:
        if a.get(key) != b.get(key):
            out.append(f"device {key}: baseline {a.get(key)!r}, current {b.get(key)!r}")
    return out


def input_image_differences(baseline_config: dict, current_config: dict) -> list[str]:
    """Why two results' start images or masks differ (empty when the same, or when neither
    records any: text-to-image). Like another image size, other start images make other
    pictures, which the quality check would read as a regression of the code: such a pair is
    not comparable. A baseline that records no hashes (saved before sdopt recorded them) against
    results with a configured image: not comparable either, as nothing says its images are the
    same. No hashes and a list of defaults only are the same (sdopt's fixed default images)."""
    prompts = current_config.get("prompts") or []
    out = []
    for key, bench_field in IMAGE_HASH_KEYS.items():
        a, b = _hashes_of(baseline_config, key), _hashes_of(current_config, key)
        if a == b:
            continue
        which = ""
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            changed = [repr(prompts[i]) if i < len(prompts) else f"#{i + 1}"
                       for i, (x, y) in enumerate(zip(a, b)) if x != y]
            which = f" for prompt{'s' if len(changed) > 1 else ''} {', '.join(changed)}"
        same = "not known to be the same" if a is None or b is None else "not the same"
        out.append(f"config {key} differs{which}: baseline {_hashes_text(a)}, current "
                   f"{_hashes_text(b)} (the bench.{bench_field} pixels are {same}, so the images "
                   "cannot be compared: save a new baseline made with these images)")
    return out


def _hashes_of(config: dict, key: str) -> list | None:
    """``config[key]``; None for none recorded or only default images (the same pictures)."""
    hashes = config.get(key)
    return hashes if isinstance(hashes, list) and any(h is not None for h in hashes) else None


def _hashes_text(hashes) -> str:
    if not isinstance(hashes, list):
        return "none (default images, or saved before sdopt recorded them)"
    return "[" + ", ".join("default" if h is None else str(h)[:12] for h in hashes) + "]"


def _library_changes(baseline: dict, current: dict) -> list[str]:
    a = (baseline.get("environment") or {}).get("libraries") or {}
    b = (current.get("environment") or {}).get("libraries") or {}
    return [f"{name} {a.get(name)} -> {b.get(name)}" for name in sorted(set(a) | set(b))
            if a.get(name) != b.get(name)]


def _pick_variant(baseline: dict, current: dict, wanted: str) -> tuple[str, list[str]]:
    base, cur = baseline.get("variants", {}), current.get("variants", {})
    if wanted in base and wanted in cur:
        return wanted, []
    common = [n for n in ("optimized", "original") if n in base and n in cur]
    if not common:
        common = sorted(set(base) & set(cur))
    if not common:
        raise SdoptError(f"baseline has variants {sorted(base)} and current has {sorted(cur)}: "
                         "no variant to compare (gate.variant = "
                         f"'{wanted}'); bench the same variants as the baseline")
    return common[0], [f"note: gate.variant '{wanted}' is not in both results; compared "
                       f"'{common[0]}' instead"]


@dataclass
class Inputs:
    """Both sides of a comparison: results documents and the directories their images are in,
    and the baseline's history of runs (:mod:`sdopt.gate.history`)."""

    baseline: dict
    baseline_dir: Path
    current: dict
    current_dir: Path
    source: str = ""
    history: list[dict] = field(default_factory=list)


def _latency(baseline: dict, current: dict, variant: str, history: list[dict],
             gate: GateConfig) -> tuple[dict[str, Any], list[str]]:
    """The verdict's latency block (every check, the deciding ones named) and its reasons."""
    checks = latency.judge(baseline, current, variant, history=runs_like(history, current),
                           s=latency.Settings.of(gate))
    regressed = [c for c in checks if c.regressed]
    lead = (regressed or checks)[0]
    reasons = [f"latency regression by {latency.describe(c)}" for c in regressed]
    for c in checks:
        if not c.regressed:
            reasons.append(f"note: {latency.describe(c)}" + (f"; {c.note}" if c.note else ""))
        if c.test == latency.RATIO_ONLY:
            reasons.append(f"warning: fewer than gate.min_samples = {gate.min_samples} latency "
                           "samples: decided on the ratio alone, without a significance test; "
                           "raise bench.runs")
    bv, cv = baseline["variants"][variant], current["variants"][variant]
    base_med = statistics.median(bv["latency_s"]["samples"])
    cur_med = statistics.median(cv["latency_s"]["samples"])
    ratio = cur_med / base_med if base_med > 0 else math.inf
    block = {"baseline_median_s": base_med, "current_median_s": cur_med,
             "ratio": ratio if math.isfinite(ratio) else None, "tolerance": gate.latency_tolerance,
             "p_value": lead.p_value, "test": lead.test, "regressed": bool(regressed),
             "decided_by": [c.name for c in checks], "checks": [c.to_dict() for c in checks]}
    return block, reasons


def compare_results(inputs: Inputs, gate: GateConfig | None = None, *,
                    allow_other_machine: bool = False,
                    clip_model: str | os.PathLike | None = None) -> dict[str, Any]:
    """The verdict document (contract: sdopt-verdict v1). ``clip_model``: the resolved path of
    ``gate.clip_model`` (relative paths are the config's business)."""
    gate = gate or GateConfig()
    use_clip = _check_clip(gate, clip_model)
    baseline, current = inputs.baseline, inputs.current
    variant, reasons = _pick_variant(baseline, current, gate.variant)
    env_diff = environment_differences(baseline, current)
    not_comparable: list[str] = []
    if env_diff:
        text = "results from another machine: " + "; ".join(env_diff)
        if allow_other_machine or gate.on_environment_mismatch == "warn":
            why = "--allow-other-machine" if allow_other_machine \
                else "gate.on_environment_mismatch = warn"
            reasons.append(f"warning: {text} (compared anyway: {why})")
        else:
            not_comparable.append(text + " (set gate.on_environment_mismatch = \"warn\" or pass "
                                  "--allow-other-machine to compare anyway)")
    bc, cc = baseline.get("config") or {}, current.get("config") or {}
    for key in ("height", "width"):
        if bc.get(key) != cc.get(key):
            not_comparable.append(f"config {key} differs: baseline {bc.get(key)}, current "
                                  f"{cc.get(key)}")
    inputs_differ = input_image_differences(bc, cc)
    not_comparable += inputs_differ
    for key in ("model", "steps", "guidance_scale", "batch"):
        if bc.get(key) != cc.get(key):
            reasons.append(f"note: config {key} changed: baseline {bc.get(key)!r}, current "
                           f"{cc.get(key)!r}")
    libs = _library_changes(baseline, current)
    if libs:
        reasons.append("note: library versions changed: " + ", ".join(libs))

    bv, cv = baseline["variants"][variant], current["variants"][variant]
    latency_block, lat_reasons = _latency(baseline, current, variant, inputs.history, gate)

    images, quality_regressed = [], False
    base_images = {(r["prompt"], int(r["seed"])): r for r in bv.get("images", [])}
    matched = 0
    # Images made from other start images or masks are other pictures: not judged.
    for rec in [] if inputs_differ else cv.get("images", []):
        key = (rec["prompt"], int(rec["seed"]))
        ref = base_images.get(key)
        if ref is None:
            continue
        matched += 1
        try:
            psnr, ssim = image_quality(safe_join(inputs.baseline_dir, ref["path"], "baseline"),
                                       safe_join(inputs.current_dir, rec["path"], "current"))
        except ValueError as exc:
            not_comparable.append(f"image for prompt {key[0]!r} seed {key[1]}: {exc}")
            continue
        clip = None
        if use_clip:
            clip = clip_cosine(safe_join(inputs.baseline_dir, ref["path"], "baseline"),
                               safe_join(inputs.current_dir, rec["path"], "current"))
        bad = psnr < gate.psnr_min_db or ssim < gate.ssim_min or \
            (clip is not None and clip < gate.clip_min)
        quality_regressed |= bad
        entry = {"prompt": key[0], "seed": key[1], "psnr_db": _json_db(psnr), "ssim": ssim,
                 "baseline_path": ref["path"], "current_path": rec["path"], "regressed": bad}
        if clip is not None:
            entry["clip_cosine"] = clip
        images.append(entry)
        if bad:
            clip_text = f", CLIP cosine {clip:.4f} (min {gate.clip_min:g})" if clip is not None \
                else ""
            reasons.append(f"quality regression: prompt {key[0]!r} seed {key[1]}: PSNR "
                           f"{_db_text(psnr)} (min {gate.psnr_min_db:g}), SSIM {ssim:.3f} "
                           f"(min {gate.ssim_min:g}){clip_text} vs the baseline image")
    if inputs_differ:
        reasons.append("note: image quality not compared: the baseline's images were made from "
                       "other start images or masks")
    elif not matched and cv.get("images") and base_images:
        reasons.append("warning: no image shares a prompt and seed with the baseline: quality "
                       "not compared")

    if not_comparable:
        verdict = NOT_COMPARABLE
        reasons = ["not comparable: " + r for r in not_comparable] + reasons
    elif latency_block["regressed"] or quality_regressed:
        verdict = REGRESSION
    else:
        verdict = PASS
    reasons = [r for r in lat_reasons if r.startswith("latency regression")] + reasons + \
        [r for r in lat_reasons if not r.startswith("latency regression")]
    if verdict == PASS:
        decided = ", ".join(f"{c['name']} x{c['change']:.3f} (allowed x{c['allowed']:.3f})"
                            for c in latency_block["checks"] if c["change"] is not None)
        reasons.insert(0, f"pass: {variant} latency by {decided or 'no check'}; {len(images)} "
                          f"image(s) within PSNR >= {gate.psnr_min_db:g} dB and SSIM >= "
                          f"{gate.ssim_min:g}")
    return {
        "schema_version": VERDICT_SCHEMA_VERSION, "kind": VERDICT_KIND, "verdict": verdict,
        "reasons": reasons, "variant": variant, "latency": latency_block,
        "quality": {"metric": "psnr+ssim" + ("+clip" if use_clip else ""),
                    "threshold": gate.psnr_min_db,
                    "psnr_min_db": gate.psnr_min_db, "ssim_min": gate.ssim_min,
                    **({"clip_min": gate.clip_min} if use_clip else {}),
                    "regressed": bool(quality_regressed), "images": images},
        "baseline": {"source": inputs.source or str(inputs.baseline_dir),
                     "environment_match": not env_diff},
    }


def _json_db(db: float) -> float | None:
    return None if math.isinf(db) else db


def _db_text(db: float | None) -> str:
    return "identical" if db is None or math.isinf(db) else f"{db:.1f} dB"


def not_comparable_line(verdict: dict, baseline: str, current: str) -> str:
    """The one error line for a pair that cannot be compared (exit 3)."""
    why = [r.removeprefix("not comparable: ") for r in verdict["reasons"]
           if r.startswith("not comparable: ")]
    return f"error: baseline '{baseline}' and results '{current}' are not comparable: " + \
        "; ".join(why)


def summary_text(verdict: dict) -> str:
    """A few lines for the terminal and CI logs."""
    lat = verdict["latency"]
    ratio = f"x{lat['ratio']:.3f}" if lat.get("ratio") is not None else "n/a"
    decided = ", ".join(lat.get("decided_by") or []) or lat["test"]
    q = verdict["quality"]
    dbs = [math.inf if i["psnr_db"] is None else i["psnr_db"] for i in q["images"]]
    worst = min(dbs, default=None)
    lines = [f"sdopt gate: {verdict['verdict'].upper().replace('_', ' ')}",
             f"  latency ({verdict.get('variant', '')}): {lat['current_median_s'] * 1e3:.1f} ms vs "
             f"baseline {lat['baseline_median_s'] * 1e3:.1f} ms per image ({ratio}); decided by "
             f"{decided}" + (" - REGRESSED" if lat["regressed"] else ""),
             f"  quality: {len(q['images'])} image(s)"
             + (f", worst PSNR {_db_text(worst)}" if worst is not None else "")
             + (" - REGRESSED" if q["regressed"] else ""),
             f"  baseline: {verdict['baseline']['source']}"]
    lines += [f"  - {r}" for r in verdict["reasons"]]
    return "\n".join(lines)
