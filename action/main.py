"""The action's modes: ``gate`` (default), ``optimize``, ``comment`` and ``merge``.

``gate`` and ``optimize`` run the ``sdopt`` command line in a subprocess (the same commands a user
runs locally, so a CI result reproduces with ``docker run``), then publish: outputs, job summary,
annotations, and the PR comment. ``comment`` only publishes, from a gate run's downloaded
artifact, for the ``workflow_run`` job that comments on fork PRs; it re-renders the report from
the artifact's JSON instead of posting the artifact's markdown, which a fork could have forged.
``merge`` is a matrix's fan-in job: ``sdopt merge`` over the downloaded legs, one comment.
Exit status: 0 pass, 1 regression, 2 not comparable (each only if listed in ``fail_on``),
2 bad input.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from sdopt.errors import SdoptError

from . import comment as comment_mod
from . import event, markdown, workflow
from .inputs import ActionInputs, read_inputs

EXIT_FOR_VERDICT = {"pass": 0, "regression": 1, "not_comparable": 2}


def _read_json(path: Path, what: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SdoptError(f"{what} '{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SdoptError(f"{what} '{path}': expected a JSON object")
    return data


@contextlib.contextmanager
def effective_config(inp: ActionInputs):
    """The config path to run with: the user's, or a sibling copy with the inputs' overrides.

    The copy sits next to the original so that relative paths inside it keep their meaning.
    """
    path = Path(inp.config)
    if not path.is_file():
        raise SdoptError(f"input 'config': '{path}' not found (relative to the workspace "
                         f"{os.getcwd()}): expected the path of your sdopt.toml")
    overrides = [(k, repr(v)) for k, v in inp.thresholds.items()] + list(inp.config_overrides)
    if not overrides:
        yield path
        return
    import tomllib

    import tomli_w

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SdoptError(f"config '{path}' is not valid TOML: {exc}") from None
    for key, raw in overrides:
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            raise SdoptError(f"override '{key} = {raw}': the value is not a TOML value (quote "
                             "strings)") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SdoptError(f"override '{key}': '{part}' in '{path}' is not a table")
        node[parts[-1]] = value
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.action-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            tomli_w.dump(data, fh)
        yield Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def run_sdopt(args: list[str], env: Mapping[str, str], *, artifact_url: str | None = None,
              rename: tuple[str, str] | None = None) -> tuple[int, list[str]]:
    """Run ``sdopt ARGS``, streaming its output; return the status and its error lines.

    ``rename`` = (temporary config path, the user's): error lines name the user's file.
    """
    cmd = [sys.executable, "-m", "sdopt.cli", *args]
    print(f"$ sdopt {' '.join(args)}", flush=True)
    child_env = {k: v for k, v in env.items() if not k.startswith("INPUT_")}  # no token leaks
    if artifact_url:
        child_env["SDOPT_ARTIFACT_URL"] = artifact_url
    proc = subprocess.Popen(cmd, env=child_env, stderr=subprocess.PIPE, text=True, bufsize=1)
    errors: list[str] = []

    def pump():
        for line in proc.stderr:
            sys.stderr.write(line)
            if line.startswith("error:"):
                text = line[len("error:"):].strip()
                if rename:
                    text = text.replace(rename[0], rename[1]).replace(
                        os.path.basename(rename[0]), os.path.basename(rename[1]))
                errors.append(text)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    rc = proc.wait()
    reader.join()
    return rc, errors


def report_markdown(results: dict | None, verdict: dict | None, results_dir: Path,
                    inp: ActionInputs, *, trust_files: bool) -> str:
    """The full report (sdopt.report) when installed, else the compact one."""
    if trust_files and (results_dir / "report.md").is_file():
        return (results_dir / "report.md").read_text(encoding="utf-8")
    try:
        from sdopt.report import render_reports
    except ImportError:
        render_reports = None
    if render_reports is not None and results is not None:
        with tempfile.TemporaryDirectory() as tmp:
            md = Path(tmp) / "report.md"
            render_reports(results, results_dir, baseline=None, baseline_dir=None,
                           verdict=verdict, html_path=None, markdown_path=md,
                           artifact_url=inp.artifact_url)
            return md.read_text(encoding="utf-8")
    return markdown.render(results, verdict, artifact_url=inp.artifact_url)


def annotate(verdict: dict | None, config: str) -> None:
    if not verdict:
        return
    state = verdict.get("verdict")
    reasons = [str(r) for r in verdict.get("reasons") or []] or [f"verdict: {state}"]
    for reason in reasons:
        if state == "regression":
            workflow.error(reason, title="sdopt: performance regression", file=config)
        elif state == "not_comparable":
            workflow.warning(reason, title="sdopt: not comparable with the baseline", file=config)


def publish(inp: ActionInputs, env: Mapping[str, str], ctx: event.PullRequestContext,
            results_dir: Path, results: dict | None, verdict: dict | None, body: str,
            expected_head_sha: str | None = None) -> str:
    """Job summary, and the PR comment where allowed; returns the comment URL ('' if none)."""
    workflow.write_summary(body, env)
    if not inp.comment:
        return ""
    if ctx.number is None:
        print("not a pull request: no comment (the report is in the job summary)")
        return ""
    if ctx.is_fork and ctx.event_name in ("pull_request", ""):
        workflow.warning("pull request from a fork: its token is read-only, so the report is "
                         "in the job summary only; add the workflow_run commenter "
                         "(examples/workflows/sdopt-comment.yml) to comment", title="sdopt")
        return ""
    if not inp.token:
        workflow.warning("no token: the report is in the job summary only", title="sdopt")
        return ""
    result = comment_mod.upsert_comment(
        token=inp.token, repository=ctx.repository, number=ctx.number, body=body,
        key=inp.comment_key, api_url=env.get("GITHUB_API_URL") or comment_mod.DEFAULT_API_URL,
        author=inp.comment_author, expected_head_sha=expected_head_sha,
        artifact_url=inp.artifact_url)
    if result.action == "skipped":
        workflow.warning(f"no PR comment: {result.reason}; the report is in the job summary",
                         title="sdopt")
        return ""
    print(f"PR comment {result.action}: {result.url}")
    return result.url or ""


def outputs_for(inp: ActionInputs, results_dir: Path, results: dict | None,
                verdict: dict | None, comment_url: str) -> dict[str, str]:
    ratio = markdown.speedup(results)

    # Absolute paths: in the container the workspace is mounted at its own path, so they are
    # valid in the workflow's later steps too.
    results_dir = results_dir.resolve()

    def existing(name: str) -> str:
        path = results_dir / name
        return str(path) if path.is_file() else ""

    return {
        "verdict": (verdict or {}).get("verdict") or "none",
        "speedup": f"{ratio:.4f}" if ratio is not None else "",
        "results_dir": str(results_dir),
        "results_json": existing("results.json"),
        "verdict_json": existing("verdict.json"),
        "report_html": existing("report.html"),
        "report_markdown": existing("report.md"),
        "comment_url": comment_url,
    }


def exit_code(inp: ActionInputs, verdict: dict | None, rc: int) -> int:
    state = (verdict or {}).get("verdict")
    if state in EXIT_FOR_VERDICT:
        return EXIT_FOR_VERDICT[state] if state == "pass" or state in inp.fail_on else 0
    return rc


def _fresh_not_comparable(path: Path, since: float) -> bool:
    """sdopt exits 2 for a pair it cannot compare too; this run's verdict tells it from bad input,
    and is still published (the PR should say why the gate did not judge)."""
    try:
        if path.stat().st_mtime < since - 1:
            return False
        return json.loads(path.read_text()).get("verdict") == "not_comparable"
    except (OSError, ValueError):
        return False


def run_gate(inp: ActionInputs, env: Mapping[str, str], *, subcommand: str = "gate") -> int:
    ctx = event.from_event(env)
    out = Path(inp.out)
    args = ["--out", str(out), "--overwrite"]
    if subcommand == "gate" and inp.baseline:
        args += ["--baseline", inp.baseline]
    started = time.time()
    with effective_config(inp) as config:
        rc, errors = run_sdopt([subcommand, "--config", str(config), *args], env,
                               artifact_url=inp.artifact_url, rename=(str(config), inp.config))
    if rc == 2 and not _fresh_not_comparable(out / "verdict.json", started):
        for line in errors or [f"sdopt {subcommand} rejected its input (exit 2)"]:
            workflow.error(line, title="sdopt: bad input", file=inp.config)
        return 2
    results = _read_json(out / "results.json", "results")
    verdict = _read_json(out / "verdict.json", "verdict")
    if results is None:
        workflow.error(f"sdopt {subcommand} exited with {rc} and wrote no results.json in "
                       f"'{out}'", title="sdopt")
        return rc or 1
    if subcommand == "bench" and not (out / "report.md").exists():
        run_sdopt(["report", str(out), "--html", str(out / "report.html"),
                   "--markdown", str(out / "report.md")], env)
    if out.is_dir():
        event.save_context(ctx, out)
    annotate(verdict, inp.config)
    body = report_markdown(results, verdict, out, inp, trust_files=True)
    url = publish(inp, env, ctx, out, results, verdict, body)
    workflow.set_outputs(outputs_for(inp, out, results, verdict, url), env)
    return exit_code(inp, verdict, rc)


def run_comment(inp: ActionInputs, env: Mapping[str, str]) -> int:
    artifact = Path(inp.artifact_dir)
    ctx = event.context_for_comment(artifact, env)
    results = _read_json(artifact / "results.json", "results")
    verdict = _read_json(artifact / "verdict.json", "verdict")
    if results is None:
        raise SdoptError(f"'{artifact / 'results.json'}' is missing: artifact_dir must hold the "
                         "gate job's output directory")
    body = report_markdown(results, verdict, artifact, inp, trust_files=False)
    url = publish(inp, env, ctx, artifact, results, verdict, body,
                  expected_head_sha=ctx.head_sha if ctx.event_name == "workflow_run" else None)
    workflow.set_outputs(outputs_for(inp, artifact, results, verdict, url), env)
    return 0


def run_merge(inp: ActionInputs, env: Mapping[str, str]) -> int:
    """Fan-in job of a matrix: every downloaded leg under ``artifact_dir`` -> one report."""
    root = Path(inp.artifact_dir)
    legs = sorted(p for p in root.iterdir() if (p / "results.json").is_file()) \
        if root.is_dir() else []
    if not legs:
        raise SdoptError(f"input 'artifact_dir': '{root}' holds no result directory (expected "
                         "one subdirectory with a results.json per matrix job)")
    out = Path(inp.out)
    rc, errors = run_sdopt(["merge", *map(str, legs), "--out", str(out), "--overwrite"], env)
    if rc == 2:
        for line in errors or ["sdopt merge rejected its input (exit 2)"]:
            workflow.error(line, title="sdopt: bad input")
        return 2
    verdict = _read_json(out / "verdict.json", "verdict")
    annotate(verdict, inp.config)
    body = (out / "report.md").read_text(encoding="utf-8")
    url = publish(inp, env, event.from_event(env), out, None, verdict, body)
    outputs = outputs_for(inp, out, None, verdict, url)
    outputs["speedup"] = ""
    workflow.set_outputs(outputs, env)
    return exit_code(inp, verdict, rc)


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    try:
        if env.get("INPUT_TOKEN"):
            workflow.mask(env["INPUT_TOKEN"])
        inp = read_inputs(env)
        if inp.mode == "comment":
            return run_comment(inp, env)
        if inp.mode == "merge":
            return run_merge(inp, env)
        return run_gate(inp, env, subcommand="gate" if inp.mode == "gate" else "bench")
    except SdoptError as exc:
        workflow.error(str(exc), title="sdopt: bad input")
        return 2
