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
from sdopt.gate.config import THRESHOLD_SHORTCUTS, Override, make_override, parse_override
from sdopt.gate.results import NOT_COMPARABLE, REGRESSION

MODES = ("gate", "optimize", "comment", "merge")
GPU_CHOICES = ("auto", "all", "none")
SAME_JOB_CHOICES = ("auto", "true", "false")
# When the PR comment is created or updated (docs/action.md, "Comment policy"); true and false
# are kept as always and never.
COMMENT_POLICIES = ("always", "on-change", "on-regression", "never")
COMMENT_ALIASES = {"true": "always", "false": "never"}
# SDOPT_PHASE, set by action.yml's steps: "run" measures and writes the job summary but leaves
# the PR comment to "publish", which runs after the composite action uploaded the results (so
# the comment can link the artifact). Unset (a container run by hand): both at once.
PHASES = ("run", "publish", "all")
# Where the comment's sample images are hosted (docs/action.md, "Sample images"): branch (an
# orphan branch of the repository, written with the token), url (the output directory is served
# at image_base_url by the workflow), none.
IMAGE_HOSTING = ("branch", "url", "none")



@dataclass
class ActionInputs:
    config: str = "sdopt.toml"
    mode: str = "gate"
    baseline: str | None = None
    # auto: a pull request's base commit, when checked out, is measured beside the head in this
    # job (run drift cancels) unless an explicit baseline is given; true: required; false: never.
    same_job: str = "auto"
    out: str = "sdopt-out"
    # The threshold inputs first, then config_overrides: passed to sdopt as --set, in order.
    overrides: list[Override] = field(default_factory=list)
    token: str | None = None
    comment: str = "always"
    comment_key: str = "default"
    comment_author: str | None = None
    # A check run with the verdict (action/checks.py): on by default; where the token cannot
    # create one (no checks: write, a fork's read-only token) one line says why and the verdict
    # stays in the annotations and the job summary.
    check_run: bool = True
    artifact_dir: str | None = None
    artifact_url: str | None = None
    gpus: str = "auto"
    fail_on: tuple[str, ...] = (REGRESSION, NOT_COMPARABLE)
    # A results history directory (sdopt history): read for the report's trend chart on every
    # run, added to only on pushes to the default branch (action/main.py history_refusal).
    history: str | None = None
    # The same history kept on an orphan branch of the repository (action/history_branch.py):
    # fetched for the chart on every run, pushed to only where ``history`` would be added to.
    history_branch: str | None = None
    history_max_runs: int = 500         # both kinds: the oldest entries beyond it are deleted
    image_hosting: str = "branch"
    image_base_url: str | None = None
    assets_branch: str = "sdopt-assets"
    assets_keep_runs: int = 20
    assets_keep_days: int = 0           # 0: no age limit
    # How the assets branch is written (action/assets.py): api, git, or auto (git when the
    # workspace is a checkout of the repository and git is installed, else api).
    assets_transport: str = "auto"


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


def parse_overrides(text: str) -> list[Override]:
    """``config_overrides``: one ``section.key = TOML value`` per line (blank lines and # comments
    skipped), parsed by the CLI's own ``--set`` parser."""
    out = []
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(parse_override(line, source=f"input 'config_overrides' line {i} "
                                                   f"('{line}')"))
    return out


def read_inputs(env: Mapping[str, str] | None = None) -> ActionInputs:
    env = os.environ if env is None else env
    inp = ActionInputs()
    inp.config = _get(env, "config") or inp.config
    inp.mode = (_get(env, "mode") or inp.mode).lower()
    if inp.mode not in MODES:
        raise SdoptError(f"input 'mode' is '{inp.mode}': expected one of {', '.join(MODES)}")
    inp.baseline = _get(env, "baseline")
    inp.same_job = (_get(env, "same_job") or inp.same_job).lower()
    if inp.same_job not in SAME_JOB_CHOICES:
        raise SdoptError(f"input 'same_job' is '{inp.same_job}': expected auto, true or false")
    inp.out = _get(env, "out") or inp.out
    for name in THRESHOLD_SHORTCUTS:
        value = _get(env, name)
        if value is not None:
            inp.overrides.append(make_override(f"gate.{name}", _positive_float(name, value),
                                               source=f"input '{name}'"))
    inp.overrides += parse_overrides(_get(env, "config_overrides") or "")
    inp.token = _get(env, "token")
    comment = (_get(env, "comment") or inp.comment).lower()
    comment = COMMENT_ALIASES.get(comment, comment)
    if comment not in COMMENT_POLICIES:
        raise SdoptError(f"input 'comment' is '{comment}': expected always, on-change, "
                         "on-regression or never (true and false mean always and never)")
    inp.comment = comment
    inp.comment_key = _get(env, "comment_key") or inp.comment_key
    if not all(c.isalnum() or c in "-_." for c in inp.comment_key):
        raise SdoptError(f"input 'comment_key' is '{inp.comment_key}': expected letters, digits, "
                         "'-', '_' or '.'")
    inp.comment_author = _get(env, "comment_author")
    inp.check_run = _bool(env, "check_run", inp.check_run)
    inp.artifact_dir = _get(env, "artifact_dir")
    inp.artifact_url = _get(env, "artifact_url")
    inp.gpus = (_get(env, "gpus") or inp.gpus).lower()
    if inp.gpus not in GPU_CHOICES and not all(c.isdigit() or c == "," for c in inp.gpus):
        raise SdoptError(f"input 'gpus' is '{inp.gpus}': expected auto, all, none or a list of "
                         "device numbers such as 0,1")
    fail_on = _get(env, "fail_on")
    if fail_on is not None:
        items = tuple(x.strip() for x in fail_on.replace("\n", ",").split(",") if x.strip())
        bad = [x for x in items if x not in (REGRESSION, NOT_COMPARABLE, "none")]
        if bad:
            raise SdoptError(f"input 'fail_on' has '{bad[0]}': expected a comma-separated list of "
                             f"{REGRESSION}, {NOT_COMPARABLE} (or none)")
        inp.fail_on = tuple(x for x in items if x != "none")
    read_history_inputs(env, inp)
    read_image_inputs(env, inp)
    if inp.history_branch and inp.image_hosting == "branch" \
            and inp.history_branch == inp.assets_branch:
        raise SdoptError(f"input 'history_branch' is '{inp.history_branch}', the branch of the "
                         "comment's images (assets_branch): choose another (sdopt-history)")
    if inp.mode in ("comment", "merge") and not inp.artifact_dir:
        raise SdoptError(f"input 'artifact_dir' is required in mode '{inp.mode}': the directory "
                         "where the gate job's artifact(s) were downloaded")
    return inp


def read_history_inputs(env: Mapping[str, str], inp: ActionInputs) -> None:
    """history (a directory) or history_branch (an orphan branch), and history_max_runs."""
    from sdopt.gate.results_history import DEFAULT_MAX_RUNS, MAX_RUNS_LIMIT

    from .assets import check_branch

    inp.history = _get(env, "history")
    branch = _get(env, "history_branch")
    if inp.history is not None and branch is not None:
        raise SdoptError(f"input 'history_branch' is '{branch}' and input 'history' is "
                         f"'{inp.history}': set one of them (a branch, or a directory)")
    inp.history_branch = check_branch(branch, what="input 'history_branch'") if branch else None
    for name in ("history", "history_branch"):
        if _get(env, name) is not None and inp.mode not in ("gate", "optimize"):
            raise SdoptError(f"input '{name}' is set in mode '{inp.mode}': only modes gate and "
                             "optimize measure a run to add to it")
    keep = _get(env, "history_max_runs")
    if keep is not None and (not keep.isdigit() or not 1 <= int(keep) <= MAX_RUNS_LIMIT):
        raise SdoptError(f"input 'history_max_runs' is '{keep}': expected a whole number from 1 "
                         f"to {MAX_RUNS_LIMIT}")
    inp.history_max_runs = int(keep) if keep is not None else DEFAULT_MAX_RUNS


def read_image_inputs(env: Mapping[str, str], inp: ActionInputs) -> None:
    """image_hosting, image_base_url, assets_branch, assets_keep_runs/days, assets_transport:
    each input given wins over the config's ``[report]`` key of the same name (with
    config_overrides applied), which wins over the default; checked here, before anything runs,
    so that a typo is one error line and not a comment without images."""
    from sdopt.gate.config import image_base_url_problem

    from .assets import MAX_KEEP_DAYS, MAX_KEEP_RUNS, TRANSPORTS, check_branch

    report = config_report(inp)
    hosting = (_get(env, "image_hosting") or report.image_hosting).lower()
    if hosting not in IMAGE_HOSTING:
        raise SdoptError(f"input 'image_hosting' is '{hosting}': expected branch, url or none")
    inp.image_hosting = hosting
    url = _get(env, "image_base_url")
    if url is not None and image_base_url_problem(url):
        raise SdoptError(f"input 'image_base_url' is '{url}': {image_base_url_problem(url)}")
    inp.image_base_url = url or report.image_base_url
    if hosting == "url" and not inp.image_base_url:
        raise SdoptError("input 'image_hosting' is url but 'image_base_url' is empty: set it to "
                         "where the output directory's files are served")
    inp.assets_branch = check_branch(_get(env, "assets_branch") or report.assets_branch)
    keep = _get(env, "assets_keep_runs")
    if keep is not None and (not keep.isdigit() or not 1 <= int(keep) <= MAX_KEEP_RUNS):
        raise SdoptError(f"input 'assets_keep_runs' is '{keep}': expected a whole number "
                         f"from 1 to {MAX_KEEP_RUNS}")
    inp.assets_keep_runs = int(keep) if keep is not None else report.assets_keep_runs
    days = _get(env, "assets_keep_days")
    if days is not None and (not days.isdigit() or int(days) > MAX_KEEP_DAYS):
        raise SdoptError(f"input 'assets_keep_days' is '{days}': expected a whole number "
                         f"from 0 (no age limit) to {MAX_KEEP_DAYS}")
    inp.assets_keep_days = int(days) if days is not None else report.assets_keep_days
    transport = (_get(env, "assets_transport") or inp.assets_transport).lower()
    if transport not in TRANSPORTS:
        raise SdoptError(f"input 'assets_transport' is '{transport}': expected auto, api or git")
    inp.assets_transport = transport


def config_report(inp: ActionInputs):
    """The config's ``[report]`` settings (with config_overrides) when the config file exists;
    else the defaults with the ``report.*`` overrides (a commenter job without a checkout).
    A config that exists but is wrong is an error naming the file and the field (exit 2)."""
    from pathlib import Path

    from sdopt.gate.config import DEFAULT_CONFIG_NAME, load_config, parse_config

    path = Path(inp.config)
    if path.is_dir():
        path = path / DEFAULT_CONFIG_NAME
    if path.exists():
        return load_config(path, inp.overrides).report
    return parse_config({"model": "unused"}, source="input 'config_overrides'",
                        overrides=[o for o in inp.overrides
                                   if o.key.startswith("report.")]).report
