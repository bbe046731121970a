"""Reproduce a CI gate run on your own machine: the action's container, through the docker SDK.

A CI failure is only useful if the developer can get the same answer at their desk. So this does
what ``action/run-container.sh`` does on the runner, with the same image, entrypoint and
``INPUT_*`` variables: build the image from sdopt's Dockerfile (or pull a given one), mount the
repository at its own path, ask for GPUs when the host has them, and stream the container's log.
It talks to whatever the docker SDK reaches: Docker, or podman's Docker-compatible socket through
``DOCKER_HOST``.

From a downloaded CI artifact it rebuilds the exact configuration the CI job ran (the ``config``
block of its ``results.json``, which records overrides too), runs it, and compares the local
result with CI's through :mod:`sdopt.gate.compare`. Timings of two different machines say nothing
about the code, so that comparison is made anyway but labelled: the images (same prompts and
seeds) are the comparable part, and the CI and local verdicts are set side by side.

No CLI here (``sdopt/commands/reproduce.py`` is the command); progress goes through a ``log``
callable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..deps import require
from ..errors import SdoptError
from ..store import check_replaceable, exists_and_not_empty, remove_output, write_json
from .compare import Inputs, compare_results, environment_differences
from .config import load_config, parse_config
from .outputs import made_by_sdopt
from .results import (REPORT_HTML_NAME, REPORT_MARKDOWN_NAME, RESULTS_NAME, VERDICT_NAME,
                      find_results_dir, read_results, read_verdict)
from .scaffold import dumps_toml

Log = Callable[[str], None]

DEFAULT_TAG = "sdopt-reproduce:local"
GPU_MODES = ("auto", "all", "none")
# Sockets tried, in order, when DOCKER_HOST is not set (Docker, rootful podman, rootless podman).
_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")
# Variables of the host worth passing on: the hub's, for private or offline models.
_PASS_ENV = ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HUGGING_FACE_HUB_TOKEN")
_STEP = re.compile(r"^(?:STEP|Step) (\d+)/(\d+)\s*:\s*(.*)$")
RECONSTRUCTED_CONFIG = "reproduce-config.toml"
CI_COMPARISON = "ci-comparison.json"


def _docker():
    return require("docker", "sdopt reproduce")


# --- the daemon ------------------------------------------------------------------------------

def candidate_sockets() -> list[str]:
    """Where a Docker-compatible daemon may listen, DOCKER_HOST first."""
    found = []
    if os.environ.get("DOCKER_HOST"):
        found.append(os.environ["DOCKER_HOST"])
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    for path in (*_SOCKETS, f"{runtime}/podman/podman.sock", f"{runtime}/docker.sock"):
        if Path(path).exists():
            found.append(f"unix://{path}")
    return list(dict.fromkeys(found))


def connect(base_url: str | None = None):
    """A docker client that answered a ping; one line naming what was tried otherwise."""
    docker = _docker()
    tried = [base_url] if base_url else candidate_sockets()
    errors = []
    for url in tried:
        try:
            client = docker.DockerClient(base_url=url, timeout=600)
            client.ping()
            return client
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            errors.append(f"{url}: {_first_line(exc)}")
    if not tried:
        raise SdoptError("no Docker or podman socket reachable: DOCKER_HOST is not set and none of "
                         f"{', '.join(_SOCKETS)} exists; start Docker, or run 'podman system "
                         "service --time=0 unix:///tmp/podman.sock' and set "
                         "DOCKER_HOST=unix:///tmp/podman.sock")
    raise SdoptError("no Docker or podman socket reachable (" + "; ".join(errors) + "): start "
                     "the daemon, or point DOCKER_HOST (or --docker-host) at a running one")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def is_rootless(client) -> bool:
    """Rootless daemons map the container's root to the calling user."""
    try:
        options = client.info().get("SecurityOptions") or []
    except Exception:  # noqa: BLE001 - an info failure is not worth stopping for
        return False
    return any("rootless" in str(opt) for opt in options)


# --- the image -------------------------------------------------------------------------------

def find_context() -> Path | None:
    """sdopt's own source tree, when this install has one (an editable or source checkout)."""
    root = Path(__file__).resolve().parents[1]
    if (root / "Dockerfile").is_file() and (root / "action").is_dir():
        return root
    return None


def build_image(client, context: Path, *, tag: str = DEFAULT_TAG,
                build_args: dict[str, str] | None = None, dockerfile: str = "Dockerfile",
                log: Log = print) -> str:
    """Build ``context/dockerfile``, streaming the builder's log; a failure names its step."""
    if not (context / dockerfile).is_file():
        raise SdoptError(f"--context '{context}': no {dockerfile} in it: expected a checkout of "
                         "sdopt (its Dockerfile builds the action's image), or pass --image")
    step, last_lines = None, []
    log(f"building {tag} from {context / dockerfile}")
    try:
        stream = client.api.build(path=str(context), dockerfile=dockerfile, tag=tag,
                                  buildargs=build_args or {}, rm=True, forcerm=True, decode=True)
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error")
                raise _build_error(step, message, last_lines)
            text = chunk.get("stream") or chunk.get("status") or ""
            for line in text.splitlines():
                line = line.rstrip()
                if not line:
                    continue
                match = _STEP.match(line)
                if match:
                    step = (int(match[1]), int(match[2]), match[3].strip())
                    log(f"[build {step[0]}/{step[1]}] {step[2][:160]}")
                else:
                    log(f"  {line}")
                    last_lines = (last_lines + [line])[-5:]
    except SdoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - the SDK raises BuildError/APIError variously
        raise _build_error(step, _first_line(exc), last_lines) from None
    try:
        client.images.get(tag)
    except Exception:  # noqa: BLE001
        raise _build_error(step, "the builder finished without producing the image",
                           last_lines) from None
    return tag


def _build_error(step, message, last_lines) -> SdoptError:
    where = f"step {step[0]}/{step[1]} ({step[2][:120]})" if step else "before its first step"
    detail = " ".join(str(message or "").split()) or (last_lines[-1] if last_lines else "no log")
    return SdoptError(f"image build failed at {where}: {detail[:400]}")


def ensure_image(client, image: str, log: Log = print) -> str:
    """Use ``image`` if the daemon has it, else pull it."""
    try:
        client.images.get(image)
        return image
    except Exception:  # noqa: BLE001 - not found locally: pull
        pass
    log(f"pulling {image}")
    try:
        client.images.pull(image)
    except Exception as exc:  # noqa: BLE001
        raise SdoptError(f"--image '{image}': not on this machine and cannot be pulled: "
                         f"{_first_line(exc)}") from None
    return image


# --- GPUs ------------------------------------------------------------------------------------

def host_gpus() -> list[str]:
    """NVIDIA GPUs this host can see (``nvidia-smi -L``); empty without a driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.startswith("GPU ")]


def parse_gpus(value: str) -> str:
    value = (value or "auto").strip().lower()
    if value in GPU_MODES or re.fullmatch(r"\d+(,\d+)*", value):
        return value
    raise SdoptError(f"--gpus '{value}': expected auto, all, none or device numbers like 0,1")


def device_requests(mode: str, gpus: list[str], log: Log = print) -> list:
    """The container's GPU request: all GPUs (or the listed ones) when there are any."""
    docker = _docker()
    mode = parse_gpus(mode)
    if mode == "none":
        log("GPUs: none requested (--gpus none): the container runs on CPU backends")
        return []
    if not gpus:
        if mode == "auto":
            log("GPUs: none visible on this host (nvidia-smi): the container runs on CPU backends")
            return []
        raise SdoptError(f"--gpus {mode}: no NVIDIA GPU is visible on this host (nvidia-smi -L "
                         "found none or is not installed); install the driver and the NVIDIA "
                         "container toolkit, or pass --gpus auto to run on CPU")
    if mode in ("auto", "all"):
        log(f"GPUs: all of them ({'; '.join(gpus)})")
        return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    wanted = mode.split(",")
    missing = [i for i in wanted if int(i) >= len(gpus)]
    if missing:
        raise SdoptError(f"--gpus {mode}: this host has {len(gpus)} GPU(s) (0-{len(gpus) - 1}); "
                         f"no device {', '.join(missing)}")
    log(f"GPUs: devices {mode}")
    return [docker.types.DeviceRequest(device_ids=wanted, capabilities=[["gpu"]])]


# --- a run -----------------------------------------------------------------------------------

@dataclass
class Request:
    """What to run: the gate of ``config`` with the repository mounted at its own path."""

    repo: Path
    config: Path
    out: Path
    baseline: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    fail_on: str = "regression,not_comparable"
    gpus: str = "auto"
    user: str | None = None

    def environment(self) -> dict[str, str]:
        """The action's inputs, as the runner would pass them (comments off: nothing to post)."""
        env = {"INPUT_MODE": "gate", "INPUT_CONFIG": str(self.config), "INPUT_OUT": str(self.out),
               "INPUT_COMMENT": "false", "INPUT_FAIL_ON": self.fail_on,
               "INPUT_BASELINE": self.baseline or "",
               "INPUT_CONFIG_OVERRIDES": "\n".join(self.overrides)}
        for key, value in self.thresholds.items():
            if value is not None:
                env[f"INPUT_{key.upper()}"] = repr(float(value))
        env.update({k: os.environ[k] for k in _PASS_ENV if k in os.environ})
        return env


def check_request(req: Request) -> None:
    """Paths the container will see must be inside the mounted repository."""
    repo = req.repo.resolve()
    for what, path in (("--config", req.config), ("--out", req.out)):
        if not path.resolve().is_relative_to(repo):
            raise SdoptError(f"{what} '{path}' is outside the repository '{repo}' that is mounted "
                             "into the container: expected a path inside it")
    if not req.config.is_file():
        raise SdoptError(f"--config '{req.config}' not found: expected your sdopt.toml (create "
                         "one with 'sdopt init --model ...')")


def container_user(client, user: str | None) -> str | None:
    """Run as the calling user on a rootful daemon, so results are not owned by root; a
    rootless daemon already maps its root to the calling user."""
    if user:
        return user
    if os.getuid() == 0 or is_rootless(client):
        return None
    return f"{os.getuid()}:{os.getgid()}"


class _Ticker:
    """Says the run is alive when the container has been quiet for a while."""

    def __init__(self, log: Log, every_s: float = 30.0):
        self.log, self.every_s = log, every_s
        self.started = self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def touch(self) -> None:
        self.last = time.monotonic()

    def elapsed(self) -> str:
        s = int(time.monotonic() - self.started)
        return f"{s // 60}m{s % 60:02d}s"

    def _run(self):
        while not self._stop.wait(1.0):
            if time.monotonic() - self.last >= self.every_s:
                self.log(f"[reproduce] still running ({self.elapsed()} elapsed)")
                self.touch()


def run_container(client, image: str, req: Request, *, log: Log = print,
                  requests: list | None = None) -> int:
    """Run the image's entrypoint (the action) on ``req``; stream its log; return its status."""
    repo = str(req.repo.resolve())
    name = f"sdopt-reproduce-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    user = container_user(client, req.user)
    env = req.environment()
    if user:
        env["HOME"] = "/tmp"  # an unknown uid has no home; caches go to /tmp
    kwargs: dict[str, Any] = dict(
        name=name, environment=env, working_dir=repo, detach=True,
        volumes={repo: {"bind": repo, "mode": "rw"}}, user=user or "")
    if requests:
        kwargs["device_requests"] = requests
    docker = _docker()
    try:
        container = client.containers.create(image, **kwargs)
    except docker.errors.APIError as exc:
        raise _run_error(exc, requests) from None
    try:
        try:
            container.start()
        except docker.errors.APIError as exc:
            raise _run_error(exc, requests) from None
        log(f"container {name} started from {image}; log follows")
        with _Ticker(log) as ticker:
            _stream_log(container, log, ticker)
            status = container.wait()
        code = int(status.get("StatusCode", 1)) if isinstance(status, dict) else int(status)
        log(f"[reproduce] container exited with status {code} after {ticker.elapsed()}")
        return code
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


def _stream_log(container, log: Log, ticker: _Ticker) -> None:
    pending = ""
    for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
        ticker.touch()
        pending += chunk.decode("utf-8", errors="replace").replace("\r", "\n")
        *lines, pending = pending.split("\n")
        for line in lines:
            if line.strip():
                log(f"  | {line}")
    if pending.strip():
        log(f"  | {pending}")


def _run_error(exc, requests) -> SdoptError:
    text = _first_line(exc)
    if requests and re.search(r"gpu|nvidia|device driver|capabilit|cdi", text, re.I):
        return SdoptError(f"the container cannot get the GPUs it asked for: {text}; install the "
                          "NVIDIA container toolkit for your daemon, or pass --gpus none")
    return SdoptError(f"the container cannot run: {text}")


# --- a CI artifact ---------------------------------------------------------------------------

def read_artifact(directory: str | os.PathLike) -> tuple[dict, Path, dict | None]:
    """(results, their directory, verdict or None) of a downloaded CI results artifact."""
    path = Path(directory)
    if not path.is_dir():
        raise SdoptError(f"--from-artifact '{path}' is not a directory: expected the downloaded "
                         "CI results artifact (the folder holding results.json)")
    try:
        found = find_results_dir(path, what="--from-artifact")
    except SdoptError:
        raise SdoptError(f"--from-artifact '{path}': no results.json in it or one level below: "
                         "expected the gate job's uploaded output directory") from None
    results = read_results(found, what="CI results")
    verdict = None
    if (found / VERDICT_NAME).is_file():
        try:
            verdict = read_verdict(found, what="CI verdict")
        except SdoptError:
            verdict = None  # the comparison is what matters; CI's own verdict is informative
    return results, found, verdict


# start_image/mask_image are relative to the config's folder, where the reconstructed config is
# written (reconstructed_config), so they name the same files as in CI.
_BENCH_KEYS = ("prompts", "seeds", "height", "width", "steps", "guidance_scale", "batch", "runs",
               "warmup", "variants", "device", "threads", "start_image", "mask_image",
               "allow_outside_paths")


def config_from_results(results: dict, *, source: str = RESULTS_NAME,
                        pin_candidate: bool = False) -> dict[str, Any]:
    """The sdopt.toml table a results document was produced with (its ``config`` block).

    ``pin_candidate``: build the candidate CI's search picked instead of searching again (on
    another machine a search may pick another backend).
    """
    block = results.get("config")
    if not isinstance(block, dict) or not block.get("model"):
        raise SdoptError(f"{source}: no 'config' block with a model: expected results written by "
                         "'sdopt gate' or 'sdopt bench' of this version")
    table: dict[str, Any] = {"model": block["model"]}
    for key in ("revision", "single_file_config"):
        if block.get(key):
            table[key] = block[key]
    bench = {k: block[k] for k in _BENCH_KEYS if block.get(k) is not None}
    sections = {"bench": bench}
    for name in ("optimize", "gate", "baseline"):
        section = block.get(name)
        if isinstance(section, dict):
            sections[name] = {k: v for k, v in section.items() if v is not None}
    if pin_candidate:
        selected = (results.get("optimization") or {}).get("selected") or {}
        label = selected.get("id") or \
            ((results.get("variants") or {}).get("optimized") or {}).get("label")
        if not label:
            raise SdoptError(f"{source}: --pin-candidate: the results have no 'optimized' "
                             "variant whose candidate could be pinned")
        if selected.get("pipeline_techniques"):
            # optimize.candidate builds a backend variant only; the techniques would be lost.
            names = ", ".join(str(t.get("name")) for t in selected["pipeline_techniques"])
            raise SdoptError(f"{source}: --pin-candidate: CI's pick {label} also used the "
                             f"techniques {names}, which a pinned candidate cannot carry: re-run "
                             "without --pin-candidate")
        opt = sections.setdefault("optimize", {})
        for key in ("saved_model", "metric_drop_ths", "metric_aggregate", "backends",
                    "ignore_compilers", "ignore_compressors", "time_budget_s", "exhaustive"):
            opt.pop(key, None)
        opt["candidate"] = label
    table.update({k: v for k, v in sections.items() if v})
    parse_config(table, source=f"{source} (config block)")  # what the container will accept
    return table


def compare_with_ci(ci_dir: Path, ci_results: dict, local_dir: Path, gate) -> dict[str, Any]:
    """The local results against CI's (CI as the baseline), machines differing or not.

    Different machines make the latency ratio indicative only; it is computed anyway, with that
    said in the reasons, because "is my box slower than the runner" is not the question: the
    images and the two verdicts are.
    """
    local = read_results(local_dir, what="local results")
    differences = environment_differences(ci_results, local)
    verdict = compare_results(Inputs(ci_results, ci_dir, local, local_dir, str(ci_dir)), gate,
                              allow_other_machine=True)
    verdict["reasons"] = [r.replace("(compared anyway: --allow-other-machine)",
                                    "(compared anyway: latency across machines is indicative "
                                    "only)") for r in verdict["reasons"]]
    verdict["machines_differ"] = bool(differences)
    return verdict


# --- the whole thing -------------------------------------------------------------------------

@dataclass
class Outcome:
    out: Path
    exit_code: int
    verdict: dict | None
    image: str
    gpus: bool
    ci_verdict: dict | None = None
    ci_comparison: dict | None = None
    files: list[Path] = field(default_factory=list)


@contextlib.contextmanager
def reconstructed_config(table: dict, next_to: Path) -> Iterator[Path]:
    """Write the rebuilt config beside the user's, so relative paths in it mean the same."""
    path = next_to / f".sdopt-reproduce-{uuid.uuid4().hex[:8]}.toml"
    path.write_text("# Rebuilt by sdopt reproduce from a CI results artifact.\n"
                    + dumps_toml(table), encoding="utf-8")
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def reproduce(req: Request, *, client=None, image: str | None = None,
              context: Path | None = None, build_args: dict[str, str] | None = None,
              tag: str = DEFAULT_TAG, artifact: Path | None = None, pin_candidate: bool = False,
              log: Log = print, overwrite: bool = False,
              protected: list[Path] | tuple = ()) -> Outcome:
    """Build or fetch the image, run the gate in it, and (from an artifact) compare with CI.
    With ``overwrite`` an existing ``req.out`` that sdopt wrote (gate.outputs) is checked at
    once and deleted only when the image is ready, right before the container runs."""
    ci = None
    if artifact is not None:
        ci_results, ci_dir, ci_verdict = read_artifact(artifact)
        table = config_from_results(ci_results, source=str(ci_dir / RESULTS_NAME),
                                    pin_candidate=pin_candidate)
        ci = (ci_results, ci_dir, ci_verdict, table)
    else:
        check_request(req)
    replace = exists_and_not_empty(req.out)
    if replace and not overwrite:
        raise SdoptError(f"--out '{req.out}' already exists and is not empty: choose another "
                         "directory or pass --overwrite")
    if replace:
        check_replaceable(req.out, what="--out", protected=protected, made_by_sdopt=made_by_sdopt)
    gpus = host_gpus()
    requests = device_requests(req.gpus, gpus, log)
    client = client or connect()
    if image:
        image = ensure_image(client, image, log)
    else:
        context = context or find_context()
        if context is None:
            raise SdoptError("no Dockerfile to build: this sdopt install has no source tree; pass "
                             "--image (a prebuilt sdopt image) or --context (a checkout of sdopt)")
        image = build_image(client, context, tag=tag, build_args=build_args, log=log)
    if replace:
        remove_output(req.out, what="--out", protected=protected, made_by_sdopt=made_by_sdopt)

    if ci is None:
        code = run_container(client, image, req, log=log, requests=requests)
    else:
        ci_results, ci_dir, ci_verdict, table = ci
        with reconstructed_config(table, req.config.parent) as path:
            run_req = dataclasses.replace(req, config=path)
            check_request(run_req)
            log(f"re-running the CI configuration from {ci_dir / RESULTS_NAME} "
                f"(model {table['model']!r})")
            code = run_container(client, image, run_req, log=log, requests=requests)
            config_text = path.read_text(encoding="utf-8")
    verdict = None
    if (req.out / VERDICT_NAME).is_file():
        verdict = read_verdict(req.out, what="local verdict")
    outcome = Outcome(req.out, code, verdict, image, bool(requests))
    if ci is not None and req.out.is_dir():
        (req.out / RECONSTRUCTED_CONFIG).write_text(config_text, encoding="utf-8")
        outcome.ci_verdict = ci_verdict
        if (req.out / RESULTS_NAME).is_file():
            gate = load_config(req.out / RECONSTRUCTED_CONFIG).gate
            outcome.ci_comparison = compare_with_ci(ci_dir, ci_results, req.out, gate)
            write_json(req.out / CI_COMPARISON, outcome.ci_comparison)
    outcome.files = [p for p in (req.out / n for n in (
        REPORT_HTML_NAME, REPORT_MARKDOWN_NAME, VERDICT_NAME, RESULTS_NAME, CI_COMPARISON,
        RECONSTRUCTED_CONFIG)) if p.is_file()]
    return outcome
