"""``sdopt reproduce``: run the CI gate's container locally (Docker or podman, via the docker SDK)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from ..errors import SdoptError


def _repo_root(start: Path) -> Path:
    """The git repository holding ``start`` (mounted whole, so git refs work inside), else it."""
    try:
        proc = subprocess.run(["git", "-C", str(start), "rev-parse", "--show-toplevel"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return start
    return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else start


def _build_args(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, arg = value.partition("=")
        if not sep or not name.strip():
            raise SdoptError(f"--build-arg '{value}': expected NAME=value (e.g. FLAVOR=cpu)")
        out[name.strip()] = arg
    return out


def _override(value: str) -> str:
    key, sep, toml_value = value.partition("=")
    if not sep or not key.strip() or "." not in key or not toml_value.strip() or "\n" in value:
        raise SdoptError(f"--set '{value}': expected SECTION.KEY=VALUE with a TOML value, e.g. "
                         "'bench.runs = 5' or 'gate.variant = \"optimized\"'")
    return f"{key.strip()} = {toml_value.strip()}"


def _echo(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--config", "config_path", default="sdopt.toml", show_default=True,
                  type=click.Path(dir_okay=False), help="The sdopt.toml the CI job used.")
    @click.option("--from-artifact", "artifact", default=None,
                  type=click.Path(file_okay=False),
                  help="A downloaded CI results artifact: re-run exactly its configuration "
                       "(its results.json) and compare the local result with CI's.")
    @click.option("--pin-candidate", is_flag=True,
                  help="With --from-artifact: build the candidate CI's search picked instead of "
                       "searching again.")
    @click.option("--out", default=None, type=click.Path(file_okay=False),
                  help="Output folder, inside the repository (default: "
                       "sdopt-reproduce-<time>).")
    @click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
    @click.option("--repo", default=None, type=click.Path(file_okay=False),
                  help="Repository mounted as the workspace (default: the git root of the "
                       "config's folder).")
    @click.option("--image", default=None,
                  help="A prebuilt sdopt image (pulled if missing) instead of building the "
                       "Dockerfile.")
    @click.option("--context", default=None, type=click.Path(file_okay=False),
                  help="Folder with sdopt's Dockerfile (default: this install's source tree).")
    @click.option("--tag", default="sdopt-reproduce:local", show_default=True,
                  help="Tag of the image built from --context.")
    @click.option("--build-arg", "build_args", multiple=True, metavar="NAME=VALUE",
                  help="Docker build argument (repeatable), e.g. FLAVOR=cpu.")
    @click.option("--gpus", default="auto", show_default=True,
                  help="auto (all GPUs when nvidia-smi sees one), all (fail without), none, or "
                       "device numbers like 0,1.")
    @click.option("--baseline", default=None,
                  help="Baseline instead of the config's (directory, artifact, git:REF:PATH).")
    @click.option("--latency-tolerance", type=float, default=None,
                  help="Override gate.latency_tolerance.")
    @click.option("--psnr-min-db", type=float, default=None, help="Override gate.psnr_min_db.")
    @click.option("--ssim-min", type=float, default=None, help="Override gate.ssim_min.")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                  help="Config override (repeatable), e.g. 'bench.runs = 5'.")
    @click.option("--fail-on", default="regression,not_comparable", show_default=True,
                  help="Verdicts that give a non-zero exit status.")
    @click.option("--docker-host", default=None,
                  help="Daemon URL (default: DOCKER_HOST, then the usual Docker and podman "
                       "sockets).")
    @click.option("--user", default=None,
                  help="User to run the container as (default: yours on a rootful daemon).")
    def reproduce(config_path, artifact, pin_candidate, out, overwrite, repo, image, context,
                  tag, build_args, gpus, baseline, latency_tolerance, psnr_min_db, ssim_min,
                  overrides, fail_on, docker_host, user):
        """Reproduce a CI gate run on this machine, in the action's container.

        Builds the image (or uses --image), mounts the repository at its own path, requests
        GPUs when the host has them, runs the gate with the config and thresholds, streams the
        log, and leaves results, verdict and reports in the output folder it names at the end.
        Exit status: the gate's (0 pass, 1 regression, 2 not comparable or bad input)."""
        from ..gate.reproduce import Request, connect, parse_gpus, reproduce as run

        if pin_candidate and not artifact:
            raise SdoptError("--pin-candidate needs --from-artifact (the CI run whose candidate "
                             "to pin)")
        config = Path(config_path).resolve()
        repo_path = Path(repo).resolve() if repo else _repo_root(config.parent)
        out_path = Path(out).resolve() if out else \
            repo_path / time.strftime("sdopt-reproduce-%Y%m%d-%H%M%S")
        if out_path.exists() and (out_path.is_file() or any(out_path.iterdir())):
            if not overwrite:
                raise SdoptError(f"--out '{out_path}' already exists and is not empty: choose "
                                 "another folder or pass --overwrite")
            if out_path.is_file():
                raise SdoptError(f"--out '{out_path}' is a file: expected a folder")
            shutil.rmtree(out_path)
        request = Request(
            repo=repo_path, config=config, out=out_path, baseline=baseline,
            thresholds={"latency_tolerance": latency_tolerance, "psnr_min_db": psnr_min_db,
                        "ssim_min": ssim_min},
            overrides=[_override(o) for o in overrides],
            fail_on=fail_on, gpus=parse_gpus(gpus), user=user)
        outcome = run(request, client=None if docker_host is None else connect(docker_host),
                      image=image, context=Path(context) if context else None,
                      build_args=_build_args(build_args), tag=tag,
                      artifact=Path(artifact) if artifact else None,
                      pin_candidate=pin_candidate, log=_echo)

        state = (outcome.verdict or {}).get("verdict")
        click.echo("")
        click.echo(f"local verdict: {state or 'none'} (exit {outcome.exit_code}, image "
                   f"{outcome.image}, {'GPU' if outcome.gpus else 'CPU'})")
        if artifact:
            ci_state = (outcome.ci_verdict or {}).get("verdict")
            same = "reproduced" if ci_state and ci_state == state else "differs"
            click.echo(f"CI verdict:    {ci_state or 'none (no verdict.json in the artifact)'}"
                       + (f" -> {same}" if ci_state and state else ""))
            cmp_ = outcome.ci_comparison
            if cmp_:
                lat = cmp_["latency"]
                q = cmp_["quality"]["images"]
                worst = min((i["psnr_db"] for i in q), default=None)
                click.echo(f"local vs CI:   latency x{lat['ratio']:.3f} of CI's"
                           + (" (different machines: indicative only)"
                              if cmp_.get("machines_differ") else " (same machine type)")
                           + f"; {len(q)} image(s)"
                           + (f", worst PSNR {worst:.1f} dB vs CI's images"
                              if worst is not None else ""))
        if outcome.files:
            for path in outcome.files:
                click.echo(f"  {path}")
        click.echo(f"results: {outcome.out}")
        sys.exit(outcome.exit_code)
