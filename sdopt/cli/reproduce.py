"""``sdopt reproduce``: run the CI gate's container locally (Docker or podman, via the docker SDK)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..errors import SdoptError
from ..gate.results import NOT_COMPARABLE, REGRESSION
from .options import CommaList, collect_overrides, set_option, threshold_options
from .options import baseline_option, out_option, overwrite_option


def _repo_root(start: Path) -> Path:
    """The git repository holding ``start`` (mounted whole, so git refs work inside), else it."""
    from ..gate.git import find_repo_root

    return find_repo_root(start) or start


def _build_args(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, arg = value.partition("=")
        if not sep or not name.strip():
            raise SdoptError(f"--build-arg '{value}': expected NAME=value (e.g. FLAVOR=cpu)")
        out[name.strip()] = arg
    return out


class GpuSelection(click.ParamType):
    """auto, all, none or comma-separated device numbers: checked before anything is built."""

    name = "gpus"

    def convert(self, value, param, ctx) -> str:
        from ..gate.reproduce import parse_gpus

        try:
            return parse_gpus(value)
        except SdoptError:
            self.fail(f"'{value}': expected auto, all, none or comma-separated device numbers "
                      "like 0,1", param, ctx)


def _echo(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


@click.command()
@click.option("--config", default="sdopt.toml", show_default=True,
              type=click.Path(dir_okay=False), help="The sdopt.toml the CI job used.")
@click.option("--from-artifact", default=None, type=click.Path(file_okay=False),
              help="A downloaded CI results artifact: re-run exactly its configuration "
                   "(its results.json) and compare the local result with CI's.")
@click.option("--pin-candidate", is_flag=True,
              help="With --from-artifact: build the candidate CI's search picked instead of "
                   "searching again.")
@out_option("Output directory, inside the repository (default: sdopt-reproduce-<time>).")
@overwrite_option
@click.option("--repo", default=None, type=click.Path(file_okay=False),
              help="Repository mounted as the workspace (default: the git root of the "
                   "config's folder).")
@click.option("--context", default=None, type=click.Path(file_okay=False),
              help="Folder with sdopt's Dockerfile (default: this install's source tree).")
@click.option("--image", default=None,
              help="A prebuilt sdopt image (pulled if missing) instead of building the "
                   "Dockerfile.")
@click.option("--tag", default="sdopt-reproduce:local", show_default=True,
              help="Tag of the image built from --context.")
@click.option("--build-arg", multiple=True, metavar="NAME=VALUE",
              help="Docker build argument (repeatable), e.g. FLAVOR=cpu.")
@click.option("--gpus", type=GpuSelection(), default="auto", show_default=True,
              help="auto (all GPUs when nvidia-smi sees one), all (fail without), none, or "
                   "device numbers like 0,1.")
@baseline_option
@set_option
@threshold_options
@click.option("--fail-on", type=CommaList((REGRESSION, NOT_COMPARABLE, "none")),
              default=f"{REGRESSION},{NOT_COMPARABLE}", show_default=True,
              help="Verdicts that give a non-zero exit status (none: only bad input does).")
@click.option("--docker-host", default=None,
              help="Daemon URL (default: DOCKER_HOST, then the usual Docker and podman "
                   "sockets).")
@click.option("--user", default=None,
              help="User to run the container as (default: yours on a rootful daemon).")
def reproduce(config, from_artifact, pin_candidate, out, overwrite, repo, image, context, tag,
              build_arg, gpus, baseline, set, latency_tolerance, psnr_min_db, ssim_min, fail_on,
              docker_host, user):
    """Reproduce a CI gate run on this machine, in the action's container.

    Builds the image (or uses --image), mounts the repository at its own path, requests
    GPUs when the host has them, runs the gate with the config and its overrides, streams the
    log, and leaves results, verdict and reports in the output folder it names at the end.
    Exit status: the gate's (0 pass, 1 regression, 2 bad input, 3 not comparable)."""
    from ..gate.config import load_config
    from ..gate.reproduce import Request, connect, reproduce as run
    from ..gate.outputs import protected_dirs
    from ..store import exists_and_not_empty

    if pin_candidate and not from_artifact:
        raise SdoptError("--pin-candidate needs --from-artifact (the CI run whose candidate "
                         "to pin)")
    overrides = collect_overrides(set, latency_tolerance=latency_tolerance,
                                  psnr_min_db=psnr_min_db, ssim_min=ssim_min)
    config_path = Path(config).resolve()
    if not from_artifact and config_path.is_file():
        load_config(config_path, overrides)  # a bad override fails here, not in the container
    repo_path = Path(repo).resolve() if repo else _repo_root(config_path.parent)
    out_path = Path(out).resolve() if out else \
        repo_path / time.strftime("sdopt-reproduce-%Y%m%d-%H%M%S")
    if exists_and_not_empty(out_path) and not overwrite:
        raise SdoptError(f"--out '{out_path}' already exists and is not empty: choose "
                         "another folder or pass --overwrite")
    # --overwrite: only a folder sdopt wrote, never the repository, the config's folder or HOME
    # (checked now, deleted only once the image is ready).
    protected = [repo_path, *protected_dirs(config_path.parent)]
    request = Request(
        repo=repo_path, config=config_path, out=out_path, baseline=baseline,
        overrides=[o.line for o in overrides], fail_on=",".join(fail_on), gpus=gpus, user=user)
    outcome = run(request, client=None if docker_host is None else connect(docker_host),
                  image=image, context=Path(context) if context else None,
                  build_args=_build_args(build_arg), tag=tag,
                  artifact=Path(from_artifact) if from_artifact else None,
                  pin_candidate=pin_candidate, log=_echo, overwrite=overwrite,
                  protected=protected)
    _print_outcome(outcome, compared_with_ci=bool(from_artifact))
    sys.exit(outcome.exit_code)


def _print_outcome(outcome, *, compared_with_ci: bool) -> None:
    state = (outcome.verdict or {}).get("verdict")
    click.echo("")
    click.echo(f"local verdict: {state or 'none'} (exit {outcome.exit_code}, image "
               f"{outcome.image}, {'GPU' if outcome.gpus else 'CPU'})")
    if compared_with_ci:
        ci_state = (outcome.ci_verdict or {}).get("verdict")
        same = "reproduced" if ci_state and ci_state == state else "differs"
        click.echo(f"CI verdict:    {ci_state or 'none (no verdict.json in the artifact)'}"
                   + (f" -> {same}" if ci_state and state else ""))
        cmp_ = outcome.ci_comparison
        if cmp_:
            lat = cmp_["latency"]
            q = cmp_["quality"]["images"]
            dbs = [i["psnr_db"] for i in q if i["psnr_db"] is not None]
            worst = min(dbs, default=None)
            click.echo(f"local vs CI:   latency x{lat['ratio']:.3f} of CI's"
                       + (" (different machines: indicative only)"
                          if cmp_.get("machines_differ") else " (same machine type)")
                       + f"; {len(q)} image(s)"
                       + (f", worst PSNR {worst:.1f} dB vs CI's images"
                          if worst is not None else ""))
    for path in outcome.files or ():
        click.echo(f"  {path}")
    click.echo(f"results: {outcome.out}")
