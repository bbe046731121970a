"""One search, stage by stage: capture the UNet's real calls, run the original end to end, try
every backend variant, score the pick end to end, then the technique (or component precision)
phase, and assemble the chosen pipeline.

Each stage is a function of its own with a progress line; ``optimize_model`` only validates,
consults the decision cache and calls :func:`run`.
"""

from __future__ import annotations

import json
import statistics
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator

import torch

from ..backends.base import BACKENDS, Variant, fp32_weights_bytes
from ..backends.torch_eager import reference_module
from ..errors import SdoptError
from ..identity import config_hash
from ..models import denoiser_of
from ..techniques import TECHNIQUES, all_specs
from . import endtoend
from .budget import LaterStages
from .capture import collect_samples
from .components import ComponentCalls, setting_saving
from .memory import PeakRss
from .paired import CallTimes, Rounds
from .optimized import assemble
from .request import BUDGET_PER_CAPTURE, SearchRequest
from .confirm import (E2E_ROUNDS, E2E_SECONDS, MIN_ROUNDS, UNET_ROUNDS, UNET_SECONDS,
                      close_runner_up, confirm)
from .search import cycling_call, planned_settings, run_search, run_technique_search
from .selection import judge, select
from .table import (BASE_LEVEL, REFERENCE_ID, STATUS_OK, STATUS_REJECTED, CandidateResult,
                    OptimizationResult, set_e2e_speedup)


@contextmanager
def progress_bars(console, show: bool) -> Iterator:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=console, transient=False, disable=not show)
    with progress:
        yield progress


# The progress line's words for each phase of a backend candidate after its build.
_PHASES = {"verify": "verifying on held-out UNet calls", "time": "timing",
           "images": "making images end to end"}


def candidate_line(variant: Variant, phase: str) -> str:
    """The progress line of a backend candidate: which one, and what it is doing (a build says
    why it is slow: compiling, exporting, calibrating)."""
    if phase == "build":
        return f"candidate {variant.id}: {BACKENDS[variant.backend].build_activity(variant)}"
    if phase in _PHASES:
        return f"candidate {variant.id}: {_PHASES[phase]}"
    return f"candidate {variant.id}"


class Search:
    """The state one search carries from stage to stage."""

    def __init__(self, model, request: SearchRequest, progress, source_hash: str,
                 started: float):
        self.model, self.req, self.progress = model, request, progress
        self.source_hash = source_hash
        self.started = started  # the call's start: the time budget counts from there
        self.e2e: endtoend.EndToEnd | None = None
        self.result: OptimizationResult | None = None
        self.module = None
        self.specs: list[dict] = []
        self.bases: list = []  # (row, module) the technique phase built on
        self.budget_note: str | None = None
        # Constrained: the pipelines assembled for (module, specs), and those whose components
        # have all run (a setting's replays), by id
        self.pipelines: dict[tuple[int, str], object] = {}
        self.warm_pipelines: dict[int, object] = {}
        self.unet_calls_per_image = 1
        # The calls one image makes into each replaceable component (the capture's)
        self.component_calls = ComponentCalls()
        # CPU: each replaceable component's fp32 seconds per image, timed in the capture
        self.component_s: dict[str, float] = {}

    def evaluate(self, module, row: CandidateResult, specs=()) -> None:
        """Time ``module`` (with ``specs``) per image and score its images."""
        if row.id == REFERENCE_ID and not specs:
            run = self.e2e.reference
        else:
            # Without specs every module has run already (the UNet was timed, the rest is the
            # original's): no warmup generation (5.6 s of sd15's 26 s scoring at 256 px).
            run = self.e2e.run(self.pipeline(module, specs), warm=not specs)
        endtoend.fill_row(row, run, self.e2e, self.req.image_metric)

    def time_setting(self, module, row: CandidateResult, specs, on_specs, *,
                     decisive_s: float | None = None) -> None:
        """A constrained component setting: the seconds per image ``module`` with ``specs``
        saves over ``module`` with ``on_specs`` (what it is stacked on), its component's calls
        of one image replayed on both, side by side (:mod:`components`). A component's
        precision buys a few percent of the image, less than a shared host drifts between two
        sequential runs (sd15: a 7% faster OpenVINO text encoder was once timed 1.43x slower).
        Its images are made in the final rounds, with the stack's (:meth:`confirm_stack`).
        ``decisive_s``: the per-round saving that decides it in two rounds."""
        pipe, on = self.pipeline(module, specs), self.pipeline(module, on_specs)
        component = TECHNIQUES[specs[-1]["name"]].component
        row.paired[BASE_LEVEL] = setting_saving(self.component_calls, component, pipe, on,
                                                device_kind=self.req.device.kind,
                                                decisive_s=decisive_s)
        if all(TECHNIQUES[s["name"]].component in self.component_calls.calls for s in specs):
            # every component it replaced has run, at the shapes of the final rounds
            self.warm_pipelines[id(pipe)] = pipe

    def pipeline(self, module, specs=()):
        """The pipeline of ``module`` with ``specs``. Constrained, the one assembled for them
        before when there is one (its OpenVINO components compiled and warm: assembling anew
        compiles them again and takes a warmup generation, 5 s on sd15 at 256 px; a setting's
        stack is timed against the stack it is stacked on, the pick in the final rounds). The
        unconstrained phase tries a dozen pipelines, each used once: none is kept."""
        if self.req.optimization_time != "constrained":
            return assemble(self.model, module, list(specs), self.req.device)
        key = (id(module), json.dumps(list(specs), sort_keys=True))
        if key not in self.pipelines:
            self.pipelines[key] = assemble(self.model, module, list(specs), self.req.device)
        return self.pipelines[key]

    def capture(self):
        """The UNet's recorded calls; with end-to-end scoring, the same run (decoded and timed)
        is the original's end-to-end reference too."""
        req = self.req
        if req.end_to_end:
            self.e2e = endtoend.end_to_end_for(req.inputs, req.height, req.width, req.steps,
                                               req.guidance_scale, req.seed, req.image_metric)
        task = self.progress.add_task(
            "capturing UNet inputs (original pipeline" + (", images timed)" if req.end_to_end
                                                          else ")"), total=len(req.prompts))
        samples = collect_samples(
            self.model, req.inputs, height=req.height, width=req.width, steps=req.steps,
            guidance_scale=req.guidance_scale, seed=req.seed, n_verify=req.n_verify,
            progress=lambda: self.progress.advance(task), decode=req.end_to_end)
        self.component_s = samples.component_seconds()
        self.component_calls = samples.component_calls or ComponentCalls()
        self.unet_calls_per_image = max(1, round(len(samples.samples) / len(req.prompts)))
        if self.e2e is not None:
            task = self.progress.add_task("original pipeline end to end", total=1)
            self.e2e.run_reference(self.model, endtoend.ImageRun(samples.images,
                                                                 samples.latencies_s))
            self.progress.advance(task)
        return samples

    def scale_budget(self) -> None:
        """The default budget grows to BUDGET_PER_CAPTURE times the first stage's time."""
        req = self.req
        if not req.budget_is_default or req.time_budget_s is None:
            return
        first_stage_s = time.perf_counter() - self.started
        scaled = BUDGET_PER_CAPTURE[req.optimization_time] * first_stage_s
        if scaled > req.time_budget_s:
            self.budget_note = (f"time budget {scaled:.0f} s: the default, "
                                f"{BUDGET_PER_CAPTURE[req.optimization_time]:g}x the "
                                f"{first_stage_s:.0f} s the original pipeline's run took "
                                f"(at least {req.time_budget_s:.0f} s)")
            self.req = replace(req, time_budget_s=scaled)

    def backends(self, samples) -> None:
        req = self.req
        task = self.progress.add_task("candidates", total=len(req.variants))

        def on_candidate(variant: Variant, phase: str) -> None:
            if phase == "done":
                self.progress.advance(task)
            else:
                self.progress.update(task, description=candidate_line(variant, phase))

        self.result, self.module, runner_up = run_search(
            denoiser_of(self.model), samples, req.device, req.variants, metric=req.metric,
            metric_drop_ths=req.metric_drop_ths, optimization_time=req.optimization_time,
            metric_aggregate=req.metric_aggregate, repeats=req.repeats,
            time_budget_s=req.time_budget_s, started=self.started, exhaustive=req.exhaustive,
            named=req.named_ids,
            later=self.later_stages(samples), on_candidate=on_candidate,
            evaluate=self.evaluate if req.metric.kind == "image" else None)
        self.progress.update(task, description="candidates done")
        if self.budget_note:
            self.result.notes.append(self.budget_note)
        if self.module is None:  # the reference always completes, or run_search raised
            raise SdoptError("no candidate completed")
        self.confirm_unet(samples, runner_up)

    def later_stages(self, samples) -> LaterStages | None:
        """What the technique (or component precision) phase and the side-by-side rounds will
        need, for the UNet stage to leave them their share of the budget; None without a
        budget or without end-to-end images (nothing runs after the UNet stage then)."""
        req = self.req
        if self.e2e is None or self.e2e.reference is None or req.time_budget_s is None \
                or req.exhaustive:
            return None
        constrained = req.optimization_time == "constrained"
        return LaterStages(
            settings=planned_settings(req.device, constrained=constrained,
                                      bases=1 if constrained else 2),
            # constrained: a setting replays its component's calls, a fraction of an image
            images_per_setting=1 if constrained else max(len(req.prompts), self.e2e.min_timed),
            image_s=self.e2e.reference.median_s,
            unet_calls_per_image=self.unet_calls_per_image,
            confirm_s=E2E_SECONDS + (0.0 if self.unet_in_image_rounds() else UNET_SECONDS),
            confirm_rounds=MIN_ROUNDS)

    def confirm_unet(self, samples, runner_up) -> None:
        """The pick (and a close runner-up) re-timed per UNet call, alternating with the
        original: the figure the summary reports."""
        result, pick = self.result, self.result.selected
        if pick is result.original:
            return
        contenders = [(pick, self.module)]
        if runner_up and close_runner_up(pick, runner_up[0], level="unet"):
            contenders.append(runner_up)
        elif self.unet_in_image_rounds():
            return  # confirm_end_to_end times its calls
        device = self.req.device
        inputs = [s.inputs.to(device.torch_device) for s in samples.verification[:3]]

        with self._rounds_task("UNet calls", UNET_ROUNDS) as tick:
            _, self.module = confirm(
                result, reference_module(denoiser_of(self.model)), contenders,
                lambda module: cycling_call(module, inputs), level="unet",
                device_kind=device.kind, rounds=UNET_ROUNDS, max_seconds=UNET_SECONDS,
                warmup=0, on_round=tick)  # both were just timed on these inputs

    def unet_in_image_rounds(self) -> bool:
        """Whether the pick's UNet calls are timed inside the side-by-side image rounds instead
        of rounds of their own (22 s of a cold sd15 search at 256 px): on CPU (hooks time the
        calls), in a constrained search with images (its picks change no UNet call: the rounds'
        calls are the pick's, one per step), when no runner-up has to be decided per call."""
        return (self.e2e is not None and self.req.optimization_time == "constrained"
                and self.req.device.kind == "cpu")

    def confirm_end_to_end(self, runner_up) -> None:
        """The chosen pipeline (and a close runner-up) re-timed per image, alternating with the
        original pipeline. A contender without images yet (a constrained stack, judged here)
        gets its images and time per image from these rounds."""
        result, pick = self.result, self.result.selected
        if pick is result.original and not self.specs:
            return
        entries = [(pick, (self.module, self.specs))]
        if runner_up and close_runner_up(pick, runner_up[0], level="e2e"):
            row, specs = runner_up
            entries.append((row, (self._module_of(row), specs)))
        device, e2e = self.req.device, self.e2e
        # The pick's UNet calls timed in these rounds when no rounds of their own did
        unet_calls_in_rounds = self.unet_in_image_rounds() and "unet" not in pick.paired
        # Per payload (None: the original): each round's median UNet call (with
        # unet_calls_in_rounds), each prompt's image and each round's seconds
        unet_rounds: list[tuple[object, list[float]]] = []
        made: dict[int, tuple[dict[int, object], list[float]]] = {}
        timers: list[CallTimes] = []

        def call_of(payload):
            if payload is None:
                pipe = self.model
            else:
                pipe = self.pipeline(payload[0], payload[1])
                if payload[1] and id(pipe) not in self.warm_pipelines:
                    # Its OpenVINO components compiled anew: one short generation takes their
                    # first-call costs out of the rounds. Without specs every module is warm.
                    e2e.warmup(pipe)
            images, seconds = made.setdefault(id(payload), ({}, []))
            timer = None
            if unet_calls_in_rounds:
                timer = CallTimes(denoiser_of(pipe))
                timers.append(timer)
            per_round: list[float] = []
            unet_rounds.append((payload, per_round))

            def call(i):
                index = i % len(e2e.prompts)
                if timer is not None:
                    timer.take()
                t0 = time.perf_counter()
                image = e2e.generate(pipe, index)
                endtoend.synchronize()
                seconds.append(time.perf_counter() - t0)
                images.setdefault(index, image)
                if timer is not None:
                    per_round.append(statistics.median(timer.take()))
                return image

            return call

        # No untimed round of the original: it is the user's pipeline, warm since the capture
        # (sd15 at 256 px: a full warmup round was 15 s of the stage's 79, 11 s of it the
        # original's image).
        try:
            with self._rounds_task("images", E2E_ROUNDS) as tick:
                _, (self.module, self.specs) = confirm(
                    result, None, entries, call_of, level="e2e", device_kind=device.kind,
                    rounds=E2E_ROUNDS, max_seconds=E2E_SECONDS, warmup=0, on_round=tick)
        finally:
            for timer in timers:
                timer.close()
        if unet_calls_in_rounds:
            self._unet_from_rounds(entries, unet_rounds)
        for row, payload in entries:
            if row.e2e_latency_s is None:
                self._score_from_rounds(row, payload, *made[id(payload)])

    def _score_from_rounds(self, row: CandidateResult, payload, images: dict, seconds) -> None:
        """``row``'s images and time per image from the side-by-side rounds (each prompt's
        image from its first round; prompts the rounds did not reach, made now), judged on
        them when it carries component settings (a constrained stack: the UNet pick alone is
        judged by its UNet calls)."""
        e2e = self.e2e
        pipe = self.pipeline(*payload)
        with torch.inference_mode():
            for index in range(len(e2e.prompts)):
                if index not in images:
                    images[index] = e2e.generate(pipe, index)
        run = endtoend.ImageRun([endtoend.to_uint8(images[i]) for i in range(len(e2e.prompts))],
                                list(seconds))
        endtoend.fill_row(row, run, e2e, self.req.image_metric)
        set_e2e_speedup(row, self.result.original)
        if payload[1] and self.req.metric_drop_ths is not None:
            status = row.status
            judge(row, self.req.image_metric.name, self.req.metric_drop_ths,
                  self.req.metric_aggregate, images=True, suffix=" (images)")
            if row.status == STATUS_OK:
                row.status = status  # selected stays selected

    def _unet_from_rounds(self, entries, unet_rounds) -> None:
        """Each contender's side-by-side UNet figure from the image rounds' calls: per round,
        the original's median call over the contender's."""
        reference = next(r for payload, r in unet_rounds if payload is None)
        for row, payload in entries:
            own = next((r for p, r in unet_rounds if p is payload), None)
            if not own:
                continue  # the original as a contender: nothing to compare
            rounds = Rounds({row.id: own, REFERENCE_ID: reference})
            row.paired["unet"] = {**rounds.ratio(row.id, REFERENCE_ID).to_dict(),
                                  "in_image_rounds": True}

    @contextmanager
    def _rounds_task(self, what: str, rounds: int):
        """A progress line for the rounds; its total shrinks to the rounds done when the time
        cap stopped them early."""
        task = self.progress.add_task(f"re-timing the pick side by side with the original "
                                      f"({what})", total=rounds)
        done = [0]

        def tick():
            done[0] += 1
            self.progress.advance(task)

        yield tick
        self.progress.update(task, total=done[0])

    def score_end_to_end(self) -> None:
        """The original and the pick, end to end (an image metric scored them already; a
        constrained search scores its pick in the final side-by-side rounds)."""
        req, result = self.req, self.result
        result.image_metric = req.image_metric.name
        result.end_to_end = {"prompts": len(req.prompts), "steps": req.steps,
                             "height": req.height, "width": req.width, "seed": req.seed,
                             "metrics": [m.name for m in self.e2e.metrics]}
        result.notes.extend(endtoend.notes())
        rows = [result.original, result.selected]
        if req.optimization_time == "constrained":
            # The pick's images and time per image come from the side-by-side rounds after its
            # component settings (confirm_stack): a run of its own was three images of it, 22 s
            # of a cold sd15 search at 256 px.
            rows = rows[:1]
        for row in rows:
            if row is not None and row.e2e_latency_s is None:
                self.evaluate(self.module if row is result.selected
                              else reference_module(denoiser_of(self.model)), row)
        for row in result.candidates:
            set_e2e_speedup(row, result.original)

    def techniques(self) -> None:
        """Unconstrained: every technique on the original and the pick; constrained: the
        lower-precision ones on the pick."""
        req, result = self.req, self.result
        constrained = req.optimization_time == "constrained"
        bases = [(result.selected, self.module)]
        if not constrained:
            bases = [(result.original, reference_module(denoiser_of(self.model)))] + \
                (bases if result.selected is not result.original else [])
        # Every setting alone on every base; the stacking attempts that follow (how many depends
        # on which pass) raise the total as they start, so the line never reads "1/None".
        planned = [len(bases) * len(all_specs(constrained_only=constrained)), 0]
        task = self.progress.add_task(
            "component precision (end to end)" if constrained else "techniques (end to end)",
            total=planned[0])

        def on_technique(candidate_id: str, phase: str) -> None:
            if phase == "start":
                planned[1] += 1
                planned[0] = max(planned)
                self.progress.update(task, description=f"technique {candidate_id} (images end "
                                                       "to end)", total=planned[0])
            else:
                self.progress.advance(task)
        self.bases = bases
        if constrained:
            def evaluate(base, specs, row, alongside, decisive_s=None):
                self.time_setting(base, row, specs, alongside, decisive_s=decisive_s)
        else:
            def evaluate(base, specs, row, alongside):
                self.evaluate(base, row, specs)
        ranked = run_technique_search(
            result, bases, req.device, metric_drop_ths=req.metric_drop_ths,
            image_metric=req.image_metric.name, metric_aggregate=req.metric_aggregate,
            evaluate=evaluate,
            time_budget_s=req.time_budget_s, started=self.started, on_candidate=on_technique,
            constrained=constrained, component_s=self.component_s,
            unet_image_s=self.pick_unet_image_s() if constrained else None,
            weights_bytes=fp32_weights_bytes(denoiser_of(self.model)))
        self.progress.update(task, description="techniques done")
        if constrained:
            self.confirm_stack(ranked)
            return
        winner = ranked[0] if ranked else None
        result.selected_by = "e2e_latency"
        if winner is not None and winner[0] is not result.selected:
            row, self.specs = winner
            self.module = self._module_of(row)
            select(result, row)
        self.confirm_end_to_end(ranked[1] if len(ranked) > 1 else None)

    def pick_unet_image_s(self) -> float | None:
        """The UNet pick's calls of one image at its timed latency per call: with each
        component's time, what a component setting's saving is weighed against before the
        pick's own images are made in the final rounds."""
        latency = self.result.selected.latency_s
        return self.unet_calls_per_image * latency if latency else None

    def confirm_stack(self, ranked) -> None:
        """Constrained: the stack of settings kept last, timed side by side with the original
        and judged on every prompt's image in the same rounds; when its images fail the
        threshold, the stack kept before it, down to the UNet pick alone (judged by its UNet
        calls in the backend stage)."""
        result = self.result
        for row, specs in ranked or [(result.selected, [])]:
            if row is not result.selected:
                self.module, self.specs = self._module_of(row), specs
                previous = result.selected
                was_rejected = previous.status == STATUS_REJECTED
                select(result, row)
                if was_rejected:  # select() makes the previous pick ok: it was not
                    previous.status = STATUS_REJECTED
            result.selected_by = "e2e_latency" if specs else "unet_latency"
            self.confirm_end_to_end(None)
            if result.selected.status != STATUS_REJECTED:
                break
        for row, _ in ranked:
            if row.e2e_latency_s is None and row.status == STATUS_OK and not row.reason:
                row.reason = (f"kept, and {result.selected.id} stacked on it: its images were "
                              "not made, the stack's were judged")

    def _module_of(self, row: CandidateResult):
        """The backend module a technique row (``<base id>+<techniques>``) runs on."""
        return next(m for r, m in self.bases if r.id == row.id.split("+")[0])

    def assemble(self):
        """The chosen pipeline, carrying the figures a saved model keeps."""
        result, sel = self.result, self.result.selected
        info = {"source_hash": self.source_hash,
                "config_hash": config_hash(denoiser_of(self.model)),
                "samples": result.samples, "metric": result.metric,
                "metric_drop": sel.metric_drop, "latency_s": sel.latency_s,
                "speedup": result.speedup, "speedup_source": result.speedup_source,
                "techniques": [dict(s) for s in self.specs],
                "e2e_latency_s": sel.e2e_latency_s, "image_metric": result.image_metric,
                "image_metric_drop": sel.image_metric_drop, "image_metrics": sel.image_metrics,
                "peak_rss_bytes": result.peak_rss_bytes}
        optimized = assemble(self.model, self.module, self.specs, self.req.device, info=info)
        optimized.sdopt_result = result
        return optimized


def run(model, request: SearchRequest, progress, source_hash: str, *, started: float):
    """The optimized pipeline of one full search (its table as ``.sdopt_result``); ``started``:
    when optimize_model was called (``time.perf_counter()``)."""
    search = Search(model, request, progress, source_hash, started)
    with PeakRss() as memory:  # the whole search's peak resident memory, for the table
        samples = search.capture()
        search.scale_budget()
        search.backends(samples)
        del samples
        if search.e2e is not None:
            search.score_end_to_end()
            search.techniques()
    search.result.peak_rss_bytes = memory.peak
    search.result.peak_rss_scope = "search" if memory.exact else "process"
    return search.assemble()
