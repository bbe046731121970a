"""Token merging on a UNet compiled by OpenVINO (#20): the CPU search's pick is an OpenVINO graph
(int8 or bf16), where the eager technique's attention processors cannot be swapped, so until
now token merging could not stack on it.

The merging is put into a graph instead: the user's UNet, with the processors installed on a
copy that shares its weights, is converted once per input shape (the matching's token counts are
constants of the traced graph: a graph serves one latent size), on the first call with that
shape. A min/max int8 pick's graph is then quantized with the pick's own ranges, taken by the
layer input each quantizer feeds (``openvino_minmax_int8.quantize_like``): a merged token is a
mean of tokens, so it stays within the range measured for them; the matching's own products
(the similarity and the mean) stay float. A float pick's graph is compiled with its precision
hint. So the first call at a size pays a conversion (26-27 s for sd15 at 512 px on 2 Zen 4 cores),
also after ``load_model``: the saved model holds the pick's graph and the technique's spec.

An NNCF-calibrated pick is not supported: SmoothQuant rescaled its weights with factors taken
from its calibration, which the merged graph's tensors do not share.
"""

from __future__ import annotations

import time

import torch

from ..backends.base import OptimizedModule, UNetInputs
from . import step_cache_openvino
from .eager import base_module


def runs_openvino(module: OptimizedModule) -> bool:
    from ..backends.openvino import OpenVINOModule

    return isinstance(base_module(module), OpenVINOModule)


# What converting the merged UNet for one latent size and running it adds above the pick, in
# copies of the fp32 weights: anonymous peaks 0.78 (min/max int8), 0.81 (bf16), 1.37 (fp32)
# (benchmarks/candidate_memory.py, results/candidate_memory_int8_weights_token_merge.json: tiny
# UNet widened to 800 MB, 2026-12-04); each further size adds its compiled graph.
MEMORY_COPIES = {"int8": 0.8, "bf16": 0.85, "fp32": 1.4}


def memory_copies(module: OptimizedModule) -> float | None:
    """The peak that token merging adds on this module (None on modules it does not convert)."""
    if not runs_openvino(module):
        return None
    return MEMORY_COPIES.get(base_module(module).variant.precision)


def incompatible_reason(module: OptimizedModule) -> str | None:
    """Why token merging cannot go into this OpenVINO module's graph (None: it can)."""
    base = base_module(module)
    if base is not module:
        return (f"{module.variant.id} is wrapped by another technique: token merging converts "
                "the UNet again with the pick's recipe")
    options = base.variant.options
    if options.get("quantizer") == "weights":
        return (f"{base.variant.id} compresses the converted graph's weights: token merging "
                "goes into min/max int8 and float OpenVINO graphs only")
    if base.variant.precision == "int8" and options.get("quantizer") != "minmax":
        return (f"{base.variant.id} was calibrated by NNCF, whose SmoothQuant rescaled its "
                "weights for its calibration's tensors: token merging goes into min/max int8 "
                "and float OpenVINO graphs only")
    if not step_cache_openvino.is_unet_graph(base.graph.model):
        return (f"{base.variant.id}'s graph is not a diffusers UNet's: token merging in an "
                "OpenVINO graph is done for UNets")
    return None


class OpenVINOTokenMergeModule(OptimizedModule):
    """The pick's recipe (hint, and int8 ranges) on graphs converted from the merged UNet, one
    per input shape."""

    def __init__(self, inner: OptimizedModule, merged: torch.nn.Module):
        super().__init__()
        why = incompatible_reason(inner)
        if why:
            raise ValueError(f"token merging cannot go into this graph: {why}")
        self.technique_inner = inner
        self.variant = inner.variant
        # Not a submodule: the weights are the user's UNet's, not this module's to count or save.
        self._merged = (merged,)
        self.graphs: dict[tuple, object] = {}  # input shapes -> CompiledPerShape
        # input shapes -> the seconds its conversion (and quantization) took, before the compile
        # in its first call, and quantize_like's counts
        self.built: dict[tuple, dict] = {}

    def size_bytes(self) -> int:
        return self.technique_inner.size_bytes()

    def _graph_for(self, example: UNetInputs, arrays: dict):
        from ..backends.openvino import CompiledPerShape, convert_unet, edge_patterns

        key = tuple((name, a.shape) for name, a in arrays.items())
        graph = self.graphs.get(key)
        if graph is not None:
            return graph
        base = base_module(self)
        merged = self._merged[0]
        started = time.perf_counter()
        with torch.no_grad():
            # One eager call first: the matching's seeded destination choice is drawn per grid
            # and kept (token_merge.destination_choice), so the trace holds it as a constant.
            merged(example.sample, example.timestep, example.encoder_hidden_states,
                   **example.extra)
        model = convert_unet(merged, example)
        built: dict = {}
        if base.variant.precision == "int8":
            from ..backends.openvino_minmax_int8 import quantize_like

            options = base.variant.options
            model, built = quantize_like(
                model, base.graph.model,
                ignored_types=tuple(options.get("ignored_types", ())),
                ignored_patterns=edge_patterns(merged,
                                               tuple(options.get("ignored_patterns", ()))),
                weight_bits=int(base.build_info.get("int8", {}).get("weight_bits", 8)))
        graph = self.graphs[key] = CompiledPerShape(model, base.hint)
        self.built[key] = {"seconds": time.perf_counter() - started, **built}
        return graph

    def forward(self, sample, timestep, encoder_hidden_states, **extra):
        from ..backends.export import named_args

        example = UNetInputs(sample.float(), timestep, encoder_hidden_states.float(), extra)
        arrays = {name: t.detach().cpu().numpy() for name, t in named_args(example).items()}
        graph = self._graph_for(example, arrays)
        request = graph.infer([arrays[name] for name in graph.names])
        out = torch.from_numpy(request.get_output_tensor(0).data.copy())
        return out.to(device=sample.device, dtype=sample.dtype)
