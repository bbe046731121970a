"""The action's modes: ``gate`` (default), ``optimize``, ``comment`` and ``merge``.

``gate`` and ``optimize`` run the ``sdopt`` command line in a subprocess (the same commands a user
runs locally, so a CI result reproduces with ``docker run``), then publish: outputs, job summary,
annotations, and the PR comment. ``comment`` only publishes, from a gate run's downloaded
artifact, for the ``workflow_run`` job that comments on fork PRs; it re-renders the report from
the artifact's JSON instead of posting the artifact's markdown, which a fork could have forged.
``merge`` is a matrix's fan-in job: ``sdopt merge`` over the downloaded legs, one comment.
Exit status (sdopt.errors.ExitCode, as for the sdopt commands): 0 pass, 1 regression,
3 not comparable (each verdict only if listed in ``fail_on``, else 0), 2 bad input.

The gate fails closed: sdopt writes into a fresh directory, and only a run that finished (exit
0, 1 or 3, with its files) is published; a crash or a kill is one error annotation, no outputs
and a failing status, never a stale ``pass``. Nothing is read through a symbolic link, the
child sees no token, and its output cannot issue workflow commands.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

from sdopt.errors import ExitCode, SdoptError
from sdopt.gate.results import (MERGED_NAME, NOT_COMPARABLE, PASS, REGRESSION, REPORT_HTML_NAME,
                                REPORT_MARKDOWN_NAME, RESULTS_NAME, VERDICT_NAME, VERDICTS,
                                end_to_end_speedup, exit_code as verdict_exit_code, read_results,
                                read_verdict)
from sdopt.report import build_context, render_markdown

from . import assets
from . import checks
from . import comment as comment_mod
from . import event, workflow
from . import history_branch as hbranch
from .inputs import PHASES, ActionInputs, read_inputs

# How the sdopt command line is started (the same interpreter as the action).
SDOPT_COMMAND = (sys.executable, "-m", "sdopt.cli")
# The statuses after which sdopt has written its whole output (a verdict, or none to give);
# anything else (a crash, an OOM kill, a signal) publishes nothing and fails the step.
FINISHED = (ExitCode.PASS, ExitCode.REGRESSION, ExitCode.NOT_COMPARABLE)
# The only values the ``verdict`` output can take; anything else read from a file is refused.
VERDICT_OUTPUTS = (*VERDICTS, "none")
# What the ``sdopt`` child may see of the environment: what the tools it runs read, never a
# token (INPUT_TOKEN, GITHUB_TOKEN, ACTIONS_ID_TOKEN_REQUEST_TOKEN, HF_TOKEN) nor the runner's
# files (GITHUB_ENV, GITHUB_OUTPUT...), which would let a pull request's code set the
# environment or outputs of later steps.
CHILD_ENV = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "TZ", "TERM", "TMPDIR",
    "VIRTUAL_ENV", "PYTHONSAFEPATH", "PYTHONUNBUFFERED", "PYTHONHASHSEED", "CI",
    "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "LD_LIBRARY_PATH", "LD_PRELOAD",
    "XDG_CACHE_HOME", "TORCH_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",
    "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE",
    "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HUB_DISABLE_TELEMETRY", "HF_DATASETS_OFFLINE",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_", "GITHUB_ACTIONS", "GITHUB_SHA", "GITHUB_REF", "GITHUB_REF_NAME",
    "GITHUB_HEAD_REF", "GITHUB_BASE_REF", "GITHUB_REPOSITORY", "GITHUB_WORKSPACE",
    "GITHUB_EVENT_NAME", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_SERVER_URL",
    "RUNNER_OS", "RUNNER_ARCH"})
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "CREDENTIAL")


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of ``env`` (CHILD_ENV, and sdopt's own SDOPT_* settings unless
    their name says they hold a secret)."""
    def allowed(name: str) -> bool:
        if any(word in name for word in _SECRET_WORDS):
            return False
        return name in CHILD_ENV or name.startswith(("SDOPT_", "PYTORCH_"))
    return {k: v for k, v in env.items() if allowed(k)}


def plain_file(path: Path) -> bool:
    """Whether ``path`` is a regular file, never following a link: a symbolic link (a committed
    ``sdopt-out/report.md -> /proc/self/environ``, a forged artifact) is refused outright."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise SdoptError(f"'{path}' is a symbolic link: sdopt publishes only regular files "
                         "written by its own run, and never follows links")
    return stat.S_ISREG(mode)


def read_plain_text(path: Path) -> str:
    """A regular file's text, opened without following a link (O_NOFOLLOW)."""
    plain_file(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, encoding="utf-8") as fh:
        return fh.read()


def read_outputs(directory: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The results and verdict an sdopt command left in ``directory`` (None where absent),
    checked by sdopt's own reader: an artifact may come from a fork. Links are refused."""
    if directory.is_symlink():
        raise SdoptError(f"'{directory}' is a symbolic link: expected a directory")
    results = read_results(directory) if plain_file(directory / RESULTS_NAME) else None
    verdict = read_verdict(directory / VERDICT_NAME) \
        if plain_file(directory / VERDICT_NAME) else None
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
    """Run ``sdopt ARGS`` with the allow-listed environment, streaming its output with any
    workflow command in it made inert; return the status and its error lines."""
    cmd = [*SDOPT_COMMAND, *args]
    print(workflow.neutralize(f"$ sdopt {' '.join(args)}"), flush=True)
    child_env = child_environment(env)
    if artifact_url:
        child_env["SDOPT_ARTIFACT_URL"] = artifact_url
    proc = subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", errors="replace", bufsize=1)
    errors: list[str] = []

    def pump(stream, sink, keep_errors: bool):
        for line in stream:
            sink.write(workflow.neutralize(line))
            sink.flush()
            if keep_errors and line.startswith("error:"):
                errors.append(line[len("error:"):].strip())

    readers = [threading.Thread(target=pump, args=(proc.stdout, sys.stdout, False), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, sys.stderr, True), daemon=True)]
    for reader in readers:
        reader.start()
    rc = proc.wait()
    for reader in readers:
        reader.join()
    return rc, errors


def failure_status(rc: int) -> int:
    """The step's status after an unexpected end of sdopt: never 0 (a signal -N becomes 128+N,
    as a shell reports it)."""
    if rc < 0:
        return 128 - rc
    return rc if rc > 0 else 1


def fail_unfinished(what: str, rc: int, errors: list[str], config: str | None) -> int:
    """sdopt did not finish: exit 2 is bad input (its error lines), anything else a crash. One
    error annotation each, no outputs (so no ``verdict``), and a failing status."""
    if rc == ExitCode.BAD_INPUT:
        for line in errors or [f"{what} rejected its input (exit {rc})"]:
            workflow.error(line, title="sdopt: bad input", file=config)
        return ExitCode.BAD_INPUT
    how = f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
    workflow.error(f"{what} {how} before finishing (a crash or an out-of-memory kill?): nothing "
                   "is published and the gate fails; see the log above", title="sdopt: failed",
                   file=config)
    return failure_status(rc)


@contextlib.contextmanager
def fresh_output(out: Path) -> Iterator[Path]:
    """A new, empty directory next to ``out`` for one run of sdopt to write into (what is
    published is read from there: nothing an earlier run or a commit left can be taken for this
    run's); removed afterwards, whatever happens."""
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sdopt-run-", dir=parent))
    try:
        yield staging / (out.name or "out")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def previous_output(path: Path) -> bool:
    """What the action may replace at ``out``: an earlier output of its own (a results directory
    sdopt wrote, or a merge's: sdopt's marker next to a merged.json)."""
    from sdopt.gate.outputs import made_by_sdopt
    from sdopt.store import has_marker

    return made_by_sdopt(path) or (has_marker(path) and plain_file(path / MERGED_NAME))


def check_out(inp: ActionInputs) -> list[Path]:
    """Before running: ``out`` must be something sdopt may replace (missing, empty, or an earlier
    output; never the repository, the config's folder or HOME: sdopt's own rule, store.py).
    Returns the protected directories, for the replacement to check again."""
    from sdopt.gate.outputs import protected_dirs
    from sdopt.store import check_replaceable

    protected = protected_dirs(Path(inp.config).absolute().parent)
    check_replaceable(Path(inp.out), what="input 'out'", protected=protected,
                      made_by_sdopt=previous_output)
    return protected


def install(staged: Path, out: Path, protected: list[Path]) -> None:
    """Put this run's files (sdopt's marker among them) at ``out``, replacing an earlier output
    there under sdopt's own rule for what it may replace."""
    from sdopt.store import atomic_directory

    with atomic_directory(out, overwrite=True, protected=protected,
                          made_by_sdopt=previous_output) as tmp:
        for entry in staged.iterdir():
            os.replace(entry, tmp / entry.name)


def report_markdown(results: dict, verdict: dict | None, results_dir: Path,
                    inp: ActionInputs, *, trust_files: bool, images: dict | None = None,
                    image_base_url: str | None = None) -> str:
    """The run's own report.md when we made it and there are no image links to add, else one
    rendered from the JSON documents (an artifact's markdown could be forged by a fork; its JSON
    was validated): ``images`` are the hosted thumbnails' rows, ``image_base_url`` where the
    results directory's own files are served."""
    if trust_files and images is None and image_base_url is None \
            and plain_file(results_dir / REPORT_MARKDOWN_NAME):
        return read_plain_text(results_dir / REPORT_MARKDOWN_NAME)
    context = build_context(results, results_dir, verdict=verdict, artifact_url=inp.artifact_url,
                            image_base_url=image_base_url, html=False)
    context.update(images or {})
    return render_markdown(context, templates_dir=report_templates(inp) if trust_files else None)


def report_templates(inp: ActionInputs) -> Path | None:
    """The config's ``[report] templates`` folder, so that a report this job re-renders (to add
    image links) looks like the one sdopt wrote; a fork's artifact gets the built-in ones."""
    from sdopt.gate.config import load_config

    try:
        settings = load_config(inp.config, inp.overrides)
    except SdoptError:
        return None
    return settings.resolve(settings.report.templates)


def host_images(inp: ActionInputs, env: Mapping[str, str], ctx: event.PullRequestContext,
                results_dir: Path, results: dict, verdict: dict | None
                ) -> tuple[dict | None, str | None]:
    """The comment's sample images, as ``image_hosting`` says: (what report_markdown needs to
    link them, None) or (None, one line saying why there are none). With ``branch`` they are
    thumbnails made here from the results directory (a fork's artifact too: only pixels that
    decoded within the limits are published, re-encoded) and written to the assets branch."""
    from sdopt.report import thumbnails

    if inp.image_hosting == "none":
        return None, None
    if inp.image_hosting == "url":
        return {"image_base_url": inp.image_base_url}, None
    selection = thumbnails.select(results, results_dir, verdict,
                                  baseline_dir=same_job_base_dir(results, results_dir))
    for note in selection.notes:
        print(workflow.neutralize(f"comment images: {note}"))
    if not selection.files:
        return None, ("no sample image could be read from the results"
                      + (f" ({selection.notes[0]})" if selection.notes else ""))
    done, why = publish_thumbnails(inp, env, ctx, selection.files)
    if done is None:
        return None, why
    print(workflow.neutralize(_published_line(
        f"{len(selection.files)} files ({selection.total_bytes:,} bytes)", done)))
    return {"images": thumbnails.markdown_rows(selection, done.base_url)}, None


def _published_line(what: str, done) -> str:
    """The log line for images published on the assets branch."""
    return (f"comment images: {what} in {done.folder} on branch {done.branch}"
            + (f", {len(done.pruned)} older run(s) pruned" if done.pruned else ""))

def publish_thumbnails(inp: ActionInputs, env: Mapping[str, str],
                       ctx: event.PullRequestContext, files: list
                       ) -> tuple[assets.Published | None, str | None]:
    """``files`` in this run's folder of the assets branch, through ``assets_transport`` (auto:
    git when the workspace is a checkout of the repository, else the API): (what was
    published, None) or (None, one line saying why not)."""
    server_url = env.get("GITHUB_SERVER_URL") or "https://github.com"
    transport, remote = inp.assets_transport, None
    if transport in ("auto", "git"):
        remote = assets.git_remote(env.get("GITHUB_WORKSPACE"), server_url,
                                   ctx.repository)
        transport = "git" if remote or transport == "git" else "api"
    try:
        done = assets.publish_images(
            files, token=inp.token or "", repository=ctx.repository,
            folder=assets.run_folder(env.get("GITHUB_RUN_ID"), env.get("GITHUB_RUN_ATTEMPT"),
                                     inp.comment_key),
            branch=inp.assets_branch, keep_runs=inp.assets_keep_runs,
            keep_days=inp.assets_keep_days,
            api_url=env.get("GITHUB_API_URL") or comment_mod.DEFAULT_API_URL,
            server_url=server_url, transport=transport, remote=remote)
    except assets.PublishError as exc:
        return None, f"they could not be published to branch '{inp.assets_branch}': {exc}"
    except OSError as exc:     # the network (requests' errors are OSErrors too): no comment lost
        detail = " ".join(str(exc).split())[:200]
        return None, (f"they could not be published to branch '{inp.assets_branch}': "
                      f"{type(exc).__name__}: {detail or 'no message'}")
    return done, None


def host_merged_images(inp: ActionInputs, env: Mapping[str, str],
                       ctx: event.PullRequestContext, leg_dirs: list[Path], verdict: dict | None
                       ) -> tuple[str | None, str | None]:
    """A matrix's merged comment with each job's sample images: (the merged markdown rendered
    again with them, None) or (None, one line saying why there are none). With ``branch``
    every job's thumbnails (a share of the budget each, names prefixed ``j01-``...) go in one
    commit, this run's one folder; with ``url`` each job's images are linked under
    ``image_base_url/<job directory>/`` (the downloaded legs, served as they are)."""
    from urllib.parse import quote

    from sdopt.gate.merge import load_legs
    from sdopt.report import thumbnails
    from sdopt.report.merged import merged_markdown

    if inp.image_hosting == "none":
        return None, None
    legs = load_legs(leg_dirs)
    extra: dict[str, dict] = {}
    if inp.image_hosting == "url":
        extra = {leg.name: {"image_base_url": f"{inp.image_base_url.rstrip('/')}/"
                                              f"{quote(leg.name)}"} for leg in legs}
    else:
        selections, files = {}, []
        for i, leg in enumerate(legs, 1):
            selection = thumbnails.prefixed(thumbnails.select(
                leg.results, leg.directory, leg.verdict,
                baseline_dir=same_job_base_dir(leg.results, leg.directory),
                budget=thumbnails.DEFAULT_BUDGET // len(legs),
                max_prompts=max(1, thumbnails.MAX_PROMPTS // len(legs))), f"j{i:02d}-")
            for note in selection.notes:
                print(workflow.neutralize(f"comment images of {leg.name}: {note}"))
            selections[leg.name] = selection
            files += selection.files
        if not files:
            return None, "no sample image could be read from the jobs' results"
        done, why = publish_thumbnails(inp, env, ctx, files)
        if done is None:
            return None, why
        print(workflow.neutralize(_published_line(f"{len(files)} files of {len(legs)} jobs",
                                                  done)))
        extra = {name: thumbnails.markdown_rows(sel, done.base_url)
                 for name, sel in selections.items() if sel.files}
    return merged_markdown(legs, verdict, templates_dir=report_templates(inp),
                           leg_contexts=extra), None


def same_job_base_dir(results: dict, results_dir: Path) -> Path | None:
    """Where a same-job run keeps the base commit's results (``base/`` beside the head's, as
    sdopt/gate/same_job.py writes them): the baseline images the verdict judged. A link there is
    not followed."""
    same_job = ((results.get("config") or {}).get("same_job") or {}) \
        if isinstance(results.get("config"), dict) else {}
    base = results_dir / "base"
    if not isinstance(same_job, dict) or same_job.get("side") != "head" or base.is_symlink() \
            or not base.is_dir():
        return None
    return base


def images_unavailable(body: str, why: str, artifact_url: str | None) -> str:
    """The report with one line saying why it shows no images, linking where they are."""
    from sdopt.report.markdown import escape, safe_url

    where = f"[the results artifact]({safe_url(artifact_url)})" if artifact_url else \
        "the results artifact (report.html)"
    return f"{body.rstrip()}\n\nSample images not shown: {escape(why)}; they are in {where}.\n"


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


def phase_of(env: Mapping[str, str]) -> str:
    """SDOPT_PHASE (action/inputs.py PHASES): which part of the job this container run does."""
    phase = (env.get("SDOPT_PHASE") or "all").strip().lower()
    if phase not in PHASES:
        raise SdoptError(f"SDOPT_PHASE is '{phase}': expected run, publish or all")
    return phase


def artifact_link(body: str, url: str | None) -> str:
    """The report with a line linking the uploaded results (once)."""
    if not url or url in body:
        return body
    return (f"{body.rstrip()}\n\n[Download the results]({url}) (HTML report, results.json, "
            "verdict.json, images) from this run's artifact.\n")


def publish(inp: ActionInputs, env: Mapping[str, str], ctx: event.PullRequestContext,
            results_dir: Path, results: dict | None, verdict: dict | None, body: str,
            expected_head_sha: str | None = None, *, phase: str = "all",
            trusted: bool = True) -> str:
    """Job summary (phases run and all), and the PR comment where allowed and the ``comment``
    policy asks for it (phases publish and all); returns the comment URL ('' if none).
    ``trusted``: the results are this job's own run, not a downloaded (maybe a fork's) artifact.
    In mode merge the comment shows each job's images, from ``artifact_dir``."""
    if phase != "publish":
        workflow.write_summary(body, env)
    if inp.comment == "never" or phase == "run":
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
    legs = merge_legs(Path(inp.artifact_dir)) if inp.mode == "merge" and results is None \
        else None

    def comment_body() -> str:
        """The comment with its sample images: called only when the policy writes the comment,
        so a comment left as it is (or refused) adds no folder to the assets branch."""
        text = body
        if results is not None or legs:
            if results is not None:
                update, why = host_images(inp, env, ctx, results_dir, results, verdict)
                if update is not None:
                    text = report_markdown(results, verdict, results_dir, inp,
                                           trust_files=trusted, **update)
            else:
                merged, why = host_merged_images(inp, env, ctx, legs, verdict)
                text = merged or text
            if why:
                print(workflow.neutralize(f"no sample images in the PR comment: {why}"))
                text = images_unavailable(artifact_link(text, inp.artifact_url), why,
                                          inp.artifact_url)
        return artifact_link(text, inp.artifact_url)

    state = (verdict or {}).get("verdict") or "none"
    result = comment_mod.upsert_comment(
        token=inp.token, repository=ctx.repository, number=ctx.number,
        body=comment_body, key=inp.comment_key,
        api_url=env.get("GITHUB_API_URL") or comment_mod.DEFAULT_API_URL,
        author=inp.comment_author, expected_head_sha=expected_head_sha,
        artifact_url=inp.artifact_url, policy=inp.comment, verdict=state)
    if result.action == "skipped":
        workflow.warning(f"no PR comment: {result.reason}; the report is in the job summary",
                         title="sdopt")
        return ""
    if result.action == "kept":
        print(workflow.neutralize(f"PR comment left as it is: {result.reason}"))
        return result.url or ""
    print(workflow.neutralize(f"PR comment {result.action}: {result.url}"))
    return result.url or ""


def run_url(env: Mapping[str, str]) -> str | None:
    """This workflow run's page (the check run's details link when no artifact is linked)."""
    server, repo, run_id = (env.get("GITHUB_SERVER_URL") or "https://github.com",
                            env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID"))
    return f"{server.rstrip('/')}/{repo}/actions/runs/{run_id}" \
        if repo and run_id and run_id.isdigit() else None


def triggered_by_fork(env: Mapping[str, str]) -> bool | None:
    """For a workflow_run event: whether the triggering run was a fork's (its head repository is
    not this one), from the event payload (not the artifact); None when the payload cannot say."""
    payload = event.load_payload(env)
    run = payload.get("workflow_run")
    head = run.get("head_repository") if isinstance(run, dict) else None
    name = head.get("full_name") if isinstance(head, dict) else None
    repository = env.get("GITHUB_REPOSITORY") or \
        ((payload.get("repository") or {}).get("full_name")
         if isinstance(payload.get("repository"), dict) else None)
    if not isinstance(name, str) or not repository:
        return None
    return name != repository


def publish_check(inp: ActionInputs, env: Mapping[str, str], ctx: event.PullRequestContext,
                  results: dict | None, verdict: dict | None, body: str, *,
                  annotated: bool, trusted: bool = True) -> str:
    """The check run with the verdict and the report (action/checks.py), when ``check_run`` is
    on; returns its URL ('' if none). Where it cannot be created, ``check_fallback``.
    ``annotated``: this job already made the verdict's annotations (modes gate, optimize, merge);
    ``trusted``: the results are this job's own run, not a downloaded (maybe a fork's) artifact."""
    if not inp.check_run:
        return ""
    state = (verdict or {}).get("verdict") or "none"
    reasons = [" ".join(str(r).split()) for r in (verdict or {}).get("reasons") or []]
    if not trusted and triggered_by_fork(env) is False:
        print("no check run from the artifact: the pull request is not from a fork, so its "
              "gate job made the check run itself")
        return ""
    why = None
    if ctx.is_fork and ctx.event_name in ("pull_request", ""):
        why = ("pull request from a fork: its token is read-only; the workflow_run commenter "
               "(examples/workflows/sdopt-comment.yml) creates the check run from the artifact")
    elif not inp.token:
        why = "no token"
    elif not ctx.head_sha:
        why = f"the {ctx.event_name or 'unknown'} event names no commit to put it on"
    if why is None:
        result = checks.create_check_run(
            token=inp.token, repository=ctx.repository, head_sha=ctx.head_sha,
            name=checks.check_name(inp.comment_key),
            conclusion=checks.conclusion(state, inp.fail_on, trusted=trusted),
            title=checks.title(state, end_to_end_speedup(results) if results else None,
                               reasons, trusted=trusted),
            summary=checks.summary(state, reasons, body, trusted=trusted,
                                   artifact_url=inp.artifact_url),
            text=checks.details(config=inp.config, key=inp.comment_key, run_url=run_url(env),
                                artifact_url=inp.artifact_url, head_sha=ctx.head_sha),
            details_url=inp.artifact_url or run_url(env),
            api_url=env.get("GITHUB_API_URL") or comment_mod.DEFAULT_API_URL)
        if result.created:
            print(workflow.neutralize(f"check run created: {result.url}"))
            return result.url or ""
        why = result.reason
    check_fallback(state, reasons, why, annotated=annotated, env=env)
    return ""


def check_fallback(state: str, reasons: list[str], why: str, *, annotated: bool,
                   env: Mapping[str, str]) -> None:
    """No check run: one line saying why (in the log and the job summary), and the verdict as
    annotations (a regression's and a "not comparable"'s were made already where ``annotated``;
    a pass gets a notice, so every verdict shows on the run's page)."""
    from sdopt.report.markdown import escape

    print(workflow.neutralize(f"no check run: {why}; the verdict is in the annotations and "
                              "the job summary"))
    workflow.write_summary(f"\n> sdopt: no check run ({escape(why, limit=500)}); the verdict is "
                           "in this summary and the annotations.\n", env)
    if state == REGRESSION and not annotated:
        for reason in reasons or ["verdict: regression"]:
            workflow.error(reason, title="sdopt: performance regression")
    elif state == NOT_COMPARABLE and not annotated:
        for reason in reasons or ["verdict: not comparable"]:
            workflow.warning(reason, title="sdopt: not comparable with the baseline")
    elif state not in (REGRESSION, NOT_COMPARABLE):
        words = PASS if state == PASS else "no verdict (no baseline compared)"
        workflow.notice(f"verdict: {words}; the report is in the job summary",
                        title=f"sdopt: {words}")


def run_publish(inp: ActionInputs, env: Mapping[str, str]) -> int:
    """Phase publish (action.yml's last step, after the upload): the PR comment and the check
    run for the output directory the run phase installed, linking the artifact; sets
    ``comment_url`` and ``check_url``."""
    out = Path(inp.out)
    results, verdict = read_outputs(out)
    if inp.mode == "merge" or results is None:
        if not plain_file(out / REPORT_MARKDOWN_NAME):
            raise SdoptError(f"input 'out': '{out}' holds no {REPORT_MARKDOWN_NAME}: the run "
                             "step published nothing")
        body = read_plain_text(out / REPORT_MARKDOWN_NAME)
    else:
        body = report_markdown(results, verdict, out, inp, trust_files=True)
    ctx = event.from_event(env)
    url = publish(inp, env, ctx, out, results, verdict, body, phase="publish")
    check_url = publish_check(inp, env, ctx, results, verdict, artifact_link(body, inp.artifact_url),
                              annotated=True)
    workflow.set_outputs({"comment_url": url, "check_url": check_url}, env)
    return 0


def wants_publish(inp: ActionInputs, phase: str) -> str:
    """The ``publish`` output of the run phase: whether action.yml's publish step has a
    comment or a check run to consider."""
    return "true" if phase == "run" and (inp.comment != "never" or inp.check_run) else "false"


def outputs_for(inp: ActionInputs, results_dir: Path, results: dict | None,
                verdict: dict | None, comment_url: str, check_url: str = "") -> dict[str, str]:
    ratio = end_to_end_speedup(results)

    # Absolute paths: in the container the workspace is mounted at its own path, so they are
    # valid in the workflow's later steps too.
    results_dir = results_dir.resolve()

    def existing(name: str) -> str:
        path = results_dir / name
        return str(path) if path.is_file() else ""

    state = (verdict or {}).get("verdict") or "none"
    if state not in VERDICT_OUTPUTS:      # the reader validated it; this keeps it so
        raise SdoptError(f"verdict '{state!r}' is not one of {', '.join(VERDICT_OUTPUTS)}")
    return {
        "verdict": state,
        "speedup": f"{ratio:.4f}" if ratio is not None else "",
        "results_dir": str(results_dir),
        "results_json": existing(RESULTS_NAME),
        "verdict_json": existing(VERDICT_NAME),
        "report_html": existing(REPORT_HTML_NAME),
        "report_markdown": existing(REPORT_MARKDOWN_NAME),
        "comment_url": comment_url,
        "check_url": check_url,
    }


def exit_code(inp: ActionInputs, verdict: dict | None, rc: int) -> int:
    """The verdict's exit status when ``fail_on`` lists it (0 when not); without a verdict,
    sdopt's own status ``rc``."""
    state = (verdict or {}).get("verdict")
    if state not in VERDICTS:
        return rc
    return verdict_exit_code(verdict) if state == PASS or state in inp.fail_on else ExitCode.PASS


def same_job_base(inp: ActionInputs, ctx: event.PullRequestContext) -> str | None:
    """The base commit to measure beside the head in this job, or None for the stored baseline.

    Runs of one machine drift as a whole (sdopt/gate/latency.py); base and head interleaved in one
    job cancel that and also catch slowdowns that hit original and optimized alike. So a pull
    request uses it whenever its base commit is in the checkout (actions/checkout with
    fetch-depth: 0), unless the workflow names a baseline or says ``same_job: false``."""
    if inp.same_job == "false" or (inp.same_job == "auto" and inp.baseline):
        return None
    if inp.same_job == "true" and inp.baseline:
        raise SdoptError("inputs 'same_job: true' and 'baseline' both set: same-job mode "
                         "measures the base commit itself; drop one of them")
    if ctx.base_sha is None:
        if inp.same_job == "true":
            raise SdoptError("input 'same_job' is true but this event is not a pull request with "
                             "a base commit: use it on pull_request events, or set it to auto")
        return None
    from sdopt.gate.git import run_git

    present = run_git(["cat-file", "-e", f"{ctx.base_sha}^{{commit}}"],
                      Path(inp.config).resolve().parent, check=False).returncode == 0
    if present:
        return ctx.base_sha
    why = (f"the pull request's base commit {ctx.base_sha[:12]} is not in the checkout: fetch it "
           "(actions/checkout with fetch-depth: 0) for same-job mode")
    if inp.same_job == "true":
        raise SdoptError(f"input 'same_job' is true but {why}")
    workflow.warning(f"{why}; compared with the stored baseline instead, where run-to-run drift "
                     "is only allowed for", title="sdopt: same-job mode unavailable",
                     file=inp.config)
    return None


def history_dir(inp: ActionInputs) -> Path | None:
    """The ``history`` input's directory, checked before the run (a link, a file or a directory
    sdopt did not write is refused: sdopt writes only its own)."""
    if not inp.history:
        return None
    from sdopt.gate.results_history import entry_files

    path = Path(inp.history)
    out = Path(inp.out).absolute()
    if path.absolute() == out or path.absolute().is_relative_to(out):
        raise SdoptError(f"input 'history' ('{inp.history}') is inside input 'out' "
                         f"('{inp.out}'), which every run replaces: keep it beside it")
    entry_files(path)
    return path


def history_args(history: Path | None) -> list[str]:
    """What gives the report its trend chart: the history, once it exists (read on every event;
    reading cannot change it)."""
    return ["--history", str(history)] if history is not None and history.is_dir() else []


def history_remote(env: Mapping[str, str]) -> tuple[str, str]:
    """(the repository's git URL, the server's URL) for ``history_branch``: this workflow's own
    repository (a fork's pull request reads the base repository's history)."""
    from .gitbranch import repository_remote

    repository = env.get("GITHUB_REPOSITORY") or ""
    if not repository or "/" not in repository:
        raise SdoptError("input 'history_branch' is set but GITHUB_REPOSITORY names no "
                         "repository to keep it in")
    server_url = env.get("GITHUB_SERVER_URL") or "https://github.com"
    return repository_remote(server_url, repository), server_url


def fetch_history_branch(inp: ActionInputs, env: Mapping[str, str], directory: Path
                         ) -> Path | None:
    """The ``history_branch``'s runs copied into ``directory`` for the report's trend chart
    (None when there are none yet). A branch that cannot be fetched is a warning, not a failed
    gate: the report then has no trend (a push still tries again when it adds its run); an
    entry on it that does not follow the schema is bad input (exit 2), as in a directory."""
    remote, server_url = history_remote(env)
    try:
        with hbranch.open_branch(remote, inp.history_branch, inp.token, server_url) as repo:
            got = hbranch.read_history(repo, directory)
    except hbranch.BranchError as exc:
        workflow.warning(f"history: branch '{inp.history_branch}' could not be read, so the "
                         f"report has no trend: {exc}", title="sdopt: history unavailable",
                         file=inp.config)
        return None
    for name in got.skipped:
        print(workflow.neutralize(f"history: '{hbranch.RUNS_FOLDER}/{name}' on branch "
                                  f"'{inp.history_branch}' is not an entry sdopt writes: "
                                  "not read"))
    if got.head is None:
        print(workflow.neutralize(f"history: branch '{inp.history_branch}' does not exist yet "
                                  "(the first push to the default branch creates it)"))
    else:
        print(workflow.neutralize(f"history: {len(got.runs)} run(s) read from branch "
                                  f"'{inp.history_branch}' at {got.head[:12]}"))
    return directory if got.runs else None


@contextlib.contextmanager
def history_source(inp: ActionInputs, env: Mapping[str, str]) -> Iterator[Path | None]:
    """The history directory the report draws: the ``history`` input's, or a copy of the
    ``history_branch``'s runs in a temporary directory removed after the run."""
    if not inp.history_branch:
        yield history_dir(inp)
        return
    with tempfile.TemporaryDirectory(prefix="sdopt-history-") as tmp:
        yield fetch_history_branch(inp, env, Path(tmp) / "runs")


def record_history(inp: ActionInputs, env: Mapping[str, str], out: Path) -> int:
    """Add the published run to the results history when this event may write it
    (event.history_refusal: pushes to the default branch only); 0, or the failing status."""
    if not inp.history and not inp.history_branch:
        return 0
    why = event.history_refusal(env)
    if why:
        print(workflow.neutralize(f"history: this run is not added ({why})"))
        return 0
    repo_dir = str(Path(inp.config).absolute().parent)
    if not inp.history_branch:
        rc, errors = run_sdopt(["history", "add", str(out), "--to", inp.history, "--repo",
                                repo_dir, "--max-runs", str(inp.history_max_runs)], env)
        if rc != ExitCode.PASS:
            return fail_unfinished("sdopt history add", rc, errors, inp.config)
        return 0
    # The entry is made by the same command into an empty directory of its own (the child sees
    # no token), then pushed as it is: names, schema and bound are sdopt's (results_history.py).
    from sdopt.gate.results_history import entry_files

    with tempfile.TemporaryDirectory(prefix="sdopt-history-entry-") as tmp:
        rc, errors = run_sdopt(["history", "add", str(out), "--to", str(Path(tmp) / "new"),
                                "--repo", repo_dir], env)
        if rc != ExitCode.PASS:
            return fail_unfinished("sdopt history add", rc, errors, inp.config)
        (entry,) = entry_files(Path(tmp) / "new")
        remote, server_url = history_remote(env)
        try:
            with hbranch.open_branch(remote, inp.history_branch, inp.token, server_url) as repo:
                done = hbranch.append_entry(repo, entry.name, entry.read_bytes(),
                                            max_runs=inp.history_max_runs)
        except hbranch.BranchError as exc:
            workflow.error(f"history: this run could not be added to branch "
                           f"'{inp.history_branch}': {exc}", title="sdopt: history not written",
                           file=inp.config)
            return 1
    print(workflow.neutralize(
        f"history: added {hbranch.RUNS_FOLDER}/{done.name} to branch '{inp.history_branch}' "
        f"({done.commit[:12]}" + (f", {len(done.pruned)} older run(s) pruned" if done.pruned
                                  else "")
        + (f", after {done.attempts} attempts" if done.attempts > 1 else "") + ")"))
    return 0


def run_gate(inp: ActionInputs, env: Mapping[str, str], *, subcommand: str = "gate") -> int:
    """One run of ``sdopt gate`` (or ``bench``) into a fresh directory; published only when sdopt
    finished (exit 0, 1 or 3), then moved to ``out``."""
    ctx = event.from_event(env)
    config_args = gate_args(inp)
    protected = check_out(inp)
    with history_source(inp, env) as history:
        return _run_gate(inp, env, ctx, config_args, protected, history, subcommand=subcommand)


def _run_gate(inp: ActionInputs, env: Mapping[str, str], ctx: event.PullRequestContext,
              config_args: list[str], protected: list[Path], history: Path | None, *,
              subcommand: str) -> int:
    out = Path(inp.out)
    with fresh_output(out) as staged:
        args = ["--out", str(staged), *(history_args(history) if subcommand == "gate" else [])]
        base_ref = same_job_base(inp, ctx) if subcommand == "gate" else None
        if base_ref:
            args += ["--same-job-base", base_ref]
        elif subcommand == "gate" and inp.baseline:
            args += ["--baseline", inp.baseline]
        rc, errors = run_sdopt([subcommand, *config_args, *args], env,
                               artifact_url=inp.artifact_url)
        if rc not in FINISHED:
            return fail_unfinished(f"sdopt {subcommand}", rc, errors, inp.config)
        results, verdict = read_outputs(staged)
        if results is None:
            workflow.error(f"sdopt {subcommand} exited with {rc} but wrote no {RESULTS_NAME}: "
                           "nothing is published and the gate fails", title="sdopt: failed",
                           file=inp.config)
            return failure_status(rc)
        if subcommand == "gate" and (verdict is None or verdict_exit_code(verdict) != rc):
            state = (verdict or {}).get("verdict")
            workflow.error(f"sdopt gate exited with {rc} but its {VERDICT_NAME} says "
                           f"{state or 'nothing'}: nothing is published and the gate fails",
                           title="sdopt: failed", file=inp.config)
            return failure_status(rc)
        if subcommand == "bench" and not plain_file(staged / REPORT_MARKDOWN_NAME):
            rc_report, errors = run_sdopt(["report", str(staged), "--html",
                                           str(staged / REPORT_HTML_NAME), "--markdown",
                                           str(staged / REPORT_MARKDOWN_NAME),
                                           *history_args(history)], env)
            if rc_report != ExitCode.PASS:
                return fail_unfinished("sdopt report", rc_report, errors, inp.config)
        event.save_context(ctx, staged)
        body = report_markdown(results, verdict, staged, inp, trust_files=True)
        install(staged, out, protected)
    annotate(verdict, inp.config)
    history_status = record_history(inp, env, out)
    phase = phase_of(env)
    url = publish(inp, env, ctx, out, results, verdict, body, phase=phase)
    check_url = publish_check(inp, env, ctx, results, verdict,
                              artifact_link(body, inp.artifact_url), annotated=True) \
        if phase != "run" else ""
    outputs = outputs_for(inp, out, results, verdict, url, check_url)
    outputs["publish"] = wants_publish(inp, phase)
    workflow.set_outputs(outputs, env)
    return history_status or exit_code(inp, verdict, rc)


def run_comment(inp: ActionInputs, env: Mapping[str, str]) -> int:
    artifact = Path(inp.artifact_dir)
    plain_file(artifact / event.CONTEXT_FILE)          # a link is refused, never followed
    ctx = event.context_for_comment(artifact, env)
    results, verdict = read_outputs(artifact)
    if results is None:
        raise SdoptError(f"'{artifact / RESULTS_NAME}' is missing: artifact_dir must hold the "
                         "gate job's output directory")
    body = report_markdown(results, verdict, artifact, inp, trust_files=False)
    url = publish(inp, env, ctx, artifact, results, verdict, body,
                  expected_head_sha=ctx.head_sha if ctx.event_name == "workflow_run" else None,
                  trusted=False)
    check_url = publish_check(inp, env, ctx, results, verdict,
                              artifact_link(body, inp.artifact_url), annotated=False,
                              trusted=False)
    workflow.set_outputs(outputs_for(inp, artifact, results, verdict, url, check_url), env)
    return 0


def merge_legs(root: Path) -> list[Path]:
    """The leg directories under ``artifact_dir``: every subdirectory (a leg without its
    results is bad input, not silently left out of the verdict); links are refused."""
    if root.is_symlink() or not root.is_dir():
        raise SdoptError(f"input 'artifact_dir': '{root}' is not a directory (expected one "
                         f"subdirectory with a {RESULTS_NAME} per matrix job)")
    legs = sorted(p for p in root.iterdir() if p.is_dir() or p.is_symlink())
    if not legs:
        raise SdoptError(f"input 'artifact_dir': '{root}' holds no result directory (expected "
                         f"one subdirectory with a {RESULTS_NAME} per matrix job)")
    for leg in legs:
        if leg.is_symlink() or not plain_file(leg / RESULTS_NAME):
            raise SdoptError(f"input 'artifact_dir': '{leg}' holds no {RESULTS_NAME} (or is a "
                             "link): each subdirectory must be one matrix job's downloaded "
                             "results")
    return legs


def run_merge(inp: ActionInputs, env: Mapping[str, str]) -> int:
    """Fan-in job of a matrix: every downloaded leg under ``artifact_dir`` -> one report,
    published for a pass, a regression and a "not comparable" alike (exit 0, 1, 3)."""
    legs = merge_legs(Path(inp.artifact_dir))
    out = Path(inp.out)
    protected = check_out(inp)
    with fresh_output(out) as staged:
        rc, errors = run_sdopt(["merge", *map(str, legs), "--out", str(staged)], env)
        if rc not in FINISHED:
            return fail_unfinished("sdopt merge", rc, errors, None)
        _, verdict = read_outputs(staged)
        if not plain_file(staged / REPORT_MARKDOWN_NAME):
            workflow.error(f"sdopt merge exited with {rc} but wrote no {REPORT_MARKDOWN_NAME}",
                           title="sdopt: failed")
            return failure_status(rc)
        body = read_plain_text(staged / REPORT_MARKDOWN_NAME)
        install(staged, out, protected)
    annotate(verdict, inp.config)
    phase = phase_of(env)
    ctx = event.from_event(env)
    url = publish(inp, env, ctx, out, None, verdict, body, phase=phase)
    check_url = publish_check(inp, env, ctx, None, verdict, artifact_link(body, inp.artifact_url),
                              annotated=True) if phase != "run" else ""
    outputs = outputs_for(inp, out, None, verdict, url, check_url)
    outputs["speedup"] = ""
    outputs["publish"] = wants_publish(inp, phase)
    workflow.set_outputs(outputs, env)
    return exit_code(inp, verdict, rc)


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    try:
        if env.get("INPUT_TOKEN"):
            workflow.mask(env["INPUT_TOKEN"])
        inp = read_inputs(env)
        if phase_of(env) == "publish":
            # mode comment commented in its run step already: nothing was uploaded to link.
            return 0 if inp.mode == "comment" else run_publish(inp, env)
        if inp.mode == "comment":
            return run_comment(inp, env)
        if inp.mode == "merge":
            return run_merge(inp, env)
        return run_gate(inp, env, subcommand="gate" if inp.mode == "gate" else "bench")
    except SdoptError as exc:
        workflow.error(str(exc), title="sdopt: bad input")
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - a bug must still fail the step, never pass it
        import traceback

        sys.stderr.write(workflow.neutralize(traceback.format_exc()))
        workflow.error(f"the sdopt action failed: {type(exc).__name__}: {exc}",
                       title="sdopt: failed")
        return 1
