"""The action's inputs, read from ``INPUT_<NAME>`` variables and validated.

GitHub passes each ``with:`` value as ``INPUT_<NAME upper-cased>`` and keeps dashes, which no
shell can read, so every input name uses underscores. An empty value means "not given" (that is
what the runner passes for an omitted input without a default). Bad values raise SdoptError
naming the input, which the entrypoint turns into one ``::error`` line and exit status 2.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Mapping

from sdopt.errors import SdoptError

MODES = ("gate", "optimize", "comment", "merge")
GPU_CHOICES = ("auto", "all", "none")

# Named threshold inputs and the sdopt.toml keys they override (issue #5 owns the config schema;
# `config_overrides` reaches any other key).
THRESHOLD_KEYS = {
    "latency_tolerance": "gate.latency_tolerance",
    "psnr_min_db": "gate.psnr_min_db",
    "ssim_min": "gate.ssim_min",
}


@dataclass
class ActionInputs:
    config: str = "sdopt.toml"
    mode: str = "gate"
    baseline: str | None = None
    out: str = "sdopt-out"
    thresholds: dict[str, float] = field(default_factory=dict)
    config_overrides: list[tuple[str, str]] = field(default_factory=list)
    token: str | None = None
    comment: bool = True
    comment_key: str = "default"
    comment_author: str | None = None
    artifact_dir: str | None = None
    artifact_url: str | None = None
    gpus: str = "auto"
    fail_on: tuple[str, ...] = ("regression", "not_comparable")


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(f"INPUT_{name.upper()}")
    if value is None or not value.strip():
        return None
    return value.strip()


def _bool(env, name: str, default: bool) -> bool:
    value = _get(env, name)
    if value is None:
        return default
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise SdoptError(f"input '{name}' is '{value}': expected true or false")


def _positive_float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise SdoptError(f"input '{name}' is '{value}': expected a non-negative number")
    return number


def parse_overrides(text: str) -> list[tuple[str, str]]:
    """``section.key = <TOML value>`` lines; the value is parsed later with the TOML parser."""
    out = []
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        parts = key.split(".")
        if not sep or not value or not all(p and (p.replace("_", "").replace("-", "").isalnum())
                                           for p in parts):
            raise SdoptError(f"input 'config_overrides' line {i} is '{line}': expected "
                             "'section.key = value' with a TOML value, e.g. gate.psnr_min_db = 30")
        out.append((key, value))
    return out


def read_inputs(env: Mapping[str, str] | None = None) -> ActionInputs:
    env = os.environ if env is None else env
    inp = ActionInputs()
    inp.config = _get(env, "config") or inp.config
    inp.mode = (_get(env, "mode") or inp.mode).lower()
    if inp.mode not in MODES:
        raise SdoptError(f"input 'mode' is '{inp.mode}': expected one of {', '.join(MODES)}")
    inp.baseline = _get(env, "baseline")
    inp.out = _get(env, "out") or inp.out
    for name, key in THRESHOLD_KEYS.items():
        value = _get(env, name)
        if value is not None:
            inp.thresholds[key] = _positive_float(name, value)
    inp.config_overrides = parse_overrides(_get(env, "config_overrides") or "")
    inp.token = _get(env, "token")
    inp.comment = _bool(env, "comment", True)
    inp.comment_key = _get(env, "comment_key") or inp.comment_key
    if not all(c.isalnum() or c in "-_." for c in inp.comment_key):
        raise SdoptError(f"input 'comment_key' is '{inp.comment_key}': expected letters, digits, "
                         "'-', '_' or '.'")
    inp.comment_author = _get(env, "comment_author")
    inp.artifact_dir = _get(env, "artifact_dir")
    inp.artifact_url = _get(env, "artifact_url")
    inp.gpus = (_get(env, "gpus") or inp.gpus).lower()
    if inp.gpus not in GPU_CHOICES and not all(c.isdigit() or c == "," for c in inp.gpus):
        raise SdoptError(f"input 'gpus' is '{inp.gpus}': expected auto, all, none or a list of "
                         "device numbers such as 0,1")
    fail_on = _get(env, "fail_on")
    if fail_on is not None:
        items = tuple(x.strip() for x in fail_on.replace("\n", ",").split(",") if x.strip())
        bad = [x for x in items if x not in ("regression", "not_comparable", "none")]
        if bad:
            raise SdoptError(f"input 'fail_on' has '{bad[0]}': expected a comma-separated list of "
                             "regression, not_comparable (or none)")
        inp.fail_on = tuple(x for x in items if x != "none")
    if inp.mode in ("comment", "merge") and not inp.artifact_dir:
        raise SdoptError(f"input 'artifact_dir' is required in mode '{inp.mode}': the directory "
                         "where the gate job's artifact(s) were downloaded")
    return inp
