"""The action's modes: ``gate`` (default), ``optimize``, ``comment`` and ``merge``.

``gate`` and ``optimize`` run the ``sdopt`` command line in a subprocess (the same commands a user
runs locally, so a CI result reproduces with ``docker run``), then publish: outputs, job summary,
annotations, and the PR comment. ``comment`` only publishes, from a gate run's downloaded
artifact, for the ``workflow_run`` job that comments on fork PRs; it re-renders the report from
the artifact's JSON instead of posting the artifact's markdown, which a fork could have forged.
``merge`` is a matrix's fan-in job: ``sdopt merge`` over the downloaded legs, one comment.
Exit status (sdopt.errors.ExitCode, as for the sdopt commands): 0 pass, 1 regression,
3 not comparable (each verdict only if listed in ``fail_on``, else 0), 2 bad input.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Mapping

from sdopt.errors import ExitCode, SdoptError
from sdopt.gate.results import (NOT_COMPARABLE, PASS, REGRESSION, REPORT_HTML_NAME,
                                REPORT_MARKDOWN_NAME, RESULTS_NAME, VERDICT_NAME, VERDICTS,
                                end_to_end_speedup, exit_code as verdict_exit_code, read_results,
                                read_verdict)
from sdopt.report import build_context, render_markdown

from . import comment as comment_mod
from . import event, workflow
from .inputs import ActionInputs, read_inputs


def read_outputs(directory: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The results and verdict an sdopt command left in ``directory`` (None where absent),
    checked by sdopt's own reader: an artifact may come from a fork."""
    results = read_results(directory) if (directory / RESULTS_NAME).is_file() else None
    verdict = read_verdict(directory / VERDICT_NAME) \
        if (directory / VERDICT_NAME).is_file() else None
    return results, verdict


def gate_args(inp: ActionInputs) -> list[str]:
    """The user's config, and the inputs' overrides as --set (the CLI's one override rule), so
    that no temporary config is written into the user's workspace."""
    path = Path(inp.config)
    if not path.is_file():
        raise SdoptError(f"input 'config': '{path}' not found (relative to the workspace "
                         f"{os.getcwd()}): expected the path of your sdopt.toml")
    args = ["--config", str(path)]
    for override in inp.overrides:
        args += ["--set", override.line]
    return args


def run_sdopt(args: list[str], env: Mapping[str, str], *,
              artifact_url: str | None = None) -> tuple[int, list[str]]:
    """Run ``sdopt ARGS``, streaming its output; return the status and its error lines."""
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
                errors.append(line[len("error:"):].strip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    rc = proc.wait()
    reader.join()
    return rc, errors


def report_markdown(results: dict, verdict: dict | None, results_dir: Path,
                    inp: ActionInputs, *, trust_files: bool) -> str:
    """The run's own report.md when we made it, else one rendered from the JSON documents
    (an artifact's markdown could be forged by a fork; its JSON was validated)."""
    if trust_files and (results_dir / REPORT_MARKDOWN_NAME).is_file():
        return (results_dir / REPORT_MARKDOWN_NAME).read_text(encoding="utf-8")
    return render_markdown(build_context(results, results_dir, verdict=verdict,
                                         artifact_url=inp.artifact_url, html=False))


def annotate(verdict: dict | None, config: str) -> None:
    if not verdict:
        return
    state = verdict.get("verdict")
    reasons = [str(r) for r in verdict.get("reasons") or []] or [f"verdict: {state}"]
    for reason in reasons:
        if state == REGRESSION:
            workflow.error(reason, title="sdopt: performance regression", file=config)
        elif state == NOT_COMPARABLE:
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
    ratio = end_to_end_speedup(results)

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
        "results_json": existing(RESULTS_NAME),
        "verdict_json": existing(VERDICT_NAME),
        "report_html": existing(REPORT_HTML_NAME),
        "report_markdown": existing(REPORT_MARKDOWN_NAME),
        "comment_url": comment_url,
    }


def exit_code(inp: ActionInputs, verdict: dict | None, rc: int) -> int:
    """The verdict's exit status when ``fail_on`` lists it (0 when not); without a verdict,
    sdopt's own status ``rc``."""
    state = (verdict or {}).get("verdict")
    if state not in VERDICTS:
        return rc
    return verdict_exit_code(verdict) if state == PASS or state in inp.fail_on else ExitCode.PASS


def run_gate(inp: ActionInputs, env: Mapping[str, str], *, subcommand: str = "gate") -> int:
    ctx = event.from_event(env)
    out = Path(inp.out)
    args = ["--out", str(out), "--overwrite"]
    if subcommand == "gate" and inp.baseline:
        args += ["--baseline", inp.baseline]
    rc, errors = run_sdopt([subcommand, *gate_args(inp), *args], env,
                           artifact_url=inp.artifact_url)
    if rc == ExitCode.BAD_INPUT:
        for line in errors or [f"sdopt {subcommand} rejected its input (exit {rc})"]:
            workflow.error(line, title="sdopt: bad input", file=inp.config)
        return ExitCode.BAD_INPUT
    results, verdict = read_outputs(out)
    if results is None:
        workflow.error(f"sdopt {subcommand} exited with {rc} and wrote no {RESULTS_NAME} in "
                       f"'{out}'", title="sdopt")
        return rc or 1
    if subcommand == "bench" and not (out / REPORT_MARKDOWN_NAME).exists():
        run_sdopt(["report", str(out), "--html", str(out / REPORT_HTML_NAME),
                   "--markdown", str(out / REPORT_MARKDOWN_NAME)], env)
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
    results, verdict = read_outputs(artifact)
    if results is None:
        raise SdoptError(f"'{artifact / RESULTS_NAME}' is missing: artifact_dir must hold the "
                         "gate job's output directory")
    body = report_markdown(results, verdict, artifact, inp, trust_files=False)
    url = publish(inp, env, ctx, artifact, results, verdict, body,
                  expected_head_sha=ctx.head_sha if ctx.event_name == "workflow_run" else None)
    workflow.set_outputs(outputs_for(inp, artifact, results, verdict, url), env)
    return 0


def run_merge(inp: ActionInputs, env: Mapping[str, str]) -> int:
    """Fan-in job of a matrix: every downloaded leg under ``artifact_dir`` -> one report."""
    root = Path(inp.artifact_dir)
    legs = sorted(p for p in root.iterdir() if (p / RESULTS_NAME).is_file()) \
        if root.is_dir() else []
    if not legs:
        raise SdoptError(f"input 'artifact_dir': '{root}' holds no result directory (expected "
                         f"one subdirectory with a {RESULTS_NAME} per matrix job)")
    out = Path(inp.out)
    rc, errors = run_sdopt(["merge", *map(str, legs), "--out", str(out), "--overwrite"], env)
    if rc == ExitCode.BAD_INPUT:
        for line in errors or [f"sdopt merge rejected its input (exit {rc})"]:
            workflow.error(line, title="sdopt: bad input")
        return ExitCode.BAD_INPUT
    _, verdict = read_outputs(out)
    annotate(verdict, inp.config)
    body = (out / REPORT_MARKDOWN_NAME).read_text(encoding="utf-8")
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
        return exc.exit_code
