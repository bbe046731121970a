"""Step caching (DeepCache) on a UNet compiled by OpenVINO (#20): the search's CPU pick is an
OpenVINO graph (int8 or bf16), whose blocks cannot be called one by one as
:mod:`.step_cache` does with an eager UNet, so until now step caching could not stack on it.

The compiled graph is split instead, as DeepCache splits the UNet: a *full* model, the backend's
own graph with one more output (the deep feature: what the deep part of the UNet hands to the
last up block), and a *shallow* model, the same graph with that feature turned into an input,
so that everything only the deep part needed drops out of it (time embedding, ``conv_in``, the
first down block, the last up block and ``conv_out`` remain). Both are cut from the backend's
own ``openvino.Model``, quantized or not: the same weights and the same int8 ranges, no second
conversion or calibration. Every ``interval``-th step runs the full model and keeps the feature;
the steps in between run the shallow one.
"""

from __future__ import annotations

import re

import torch

from ..backends.base import OptimizedModule, UNetInputs
from .base import StepCacheBase
from .eager import base_module

DEEP_FEATURE = "deep_feature"  # the shallow model's extra input
# The converter writes each op's module path into its node name (``...up_blocks.<i>/aten::cat``).
_UP_BLOCK = re.compile(r"\.up_blocks\.(\d+)[./]")


class NotSplittable(ValueError):
    """The graph has no recognisable last up block to cut at."""


def is_unet_graph(model) -> bool:
    """Whether ``model`` was converted from a diffusers UNet (it has up blocks); the DiT
    counterpart is ``dit_cache_openvino.is_dit_graph``."""
    return any(_UP_BLOCK.search(op.get_friendly_name()) for op in model.get_ops())


def deep_feature_output(model):
    """The output (of an ``openvino.Model`` converted from a diffusers UNet) that the last up
    block receives from the deep part: the first input of that block's first skip Concat (the
    UNet's ``torch.cat([hidden_states, res_hidden_states])``), found by the module path the
    converter writes into node names (``...up_blocks.<last>/aten::cat/Concat``)."""
    ops = model.get_ordered_ops()
    indices = [int(m.group(1)) for op in ops
               for m in [_UP_BLOCK.search(op.get_friendly_name())] if m]
    if not indices:
        raise NotSplittable("no up_blocks in the graph's node names (not a diffusers UNet)")
    last = max(indices)
    inside = f".up_blocks.{last}"
    for op in ops:
        name = op.get_friendly_name()
        if op.get_type_name() == "Concat" and f"{inside}/" in name and "aten::cat" in name:
            source = op.input(0).get_source_output()
            if inside in source.get_node().get_friendly_name():
                break  # a concat inside the block: the block's first one was not found
            return source
    raise NotSplittable(f"no skip concatenation at the start of up_blocks.{last}")


def with_output(model, output_of):
    """A clone of ``model`` with one more output: ``output_of(clone)``, an output port of the
    clone (an existing tensor, or a node built on it). ``model`` is left as it was."""
    full = model.clone()
    full.add_outputs([output_of(full)])
    return full


def with_input(model, target_of, name: str, value_of=None, model_name: str = "shallow"):
    """A clone of ``model`` in which the tensor ``target_of(clone)`` is replaced by what
    ``value_of(clone, parameter)`` builds on a new input named ``name`` (by default the input
    itself), so that whatever only that tensor needed drops out of the graph. ``model`` is left
    as it was."""
    import openvino as ov

    graph = model.clone()
    target = target_of(graph)
    parameter = ov.op.Parameter(target.get_element_type(), target.get_partial_shape())
    parameter.set_friendly_name(name)
    value = parameter.output(0) if value_of is None else value_of(graph, parameter.output(0))
    target.replace(value)  # every consumer now reads the new value
    # After replace(), which hands the replaced tensor's names over to the new one.
    parameter.output(0).get_tensor().set_names({name})
    return ov.Model(graph.get_results(), list(graph.get_parameters()) + [parameter], model_name)


def split(model):
    """(full, shallow): ``model`` with the deep feature as a second output, and ``model`` with
    the deep feature as an input named :data:`DEEP_FEATURE` (the deep part dropped). Both are
    clones: ``model`` is left as it was."""
    return (with_output(model, deep_feature_output),
            with_input(model, deep_feature_output, DEEP_FEATURE, model_name="unet_shallow"))


def split_reason(module: OptimizedModule, find_anchor, what: str = "graph") -> str | None:
    """Why this OpenVINO module's graph cannot be split at ``find_anchor(model)``'s tensor
    (None: it can); ``what`` names the graph in the reason."""
    graph = getattr(base_module(module), "graph", None)
    if graph is None:
        return f"{module.variant.id} has no OpenVINO graph"
    try:
        find_anchor(graph.model)
    except NotSplittable as exc:
        return f"step caching cannot split {module.variant.id}'s {what}: {exc}"
    return None


def incompatible_reason(module: OptimizedModule) -> str | None:
    """Why this OpenVINO module's UNet graph cannot be split (None: it can)."""
    return split_reason(module, deep_feature_output)


class OpenVINOStepCacheModule(StepCacheBase):
    """The backend's OpenVINO graph as a full and a shallow compiled model, switched per step."""

    # (full, shallow) from the backend's openvino.Model: the DiT module
    # (:mod:`.dit_cache_openvino`) cuts elsewhere.
    split = staticmethod(split)

    def __init__(self, inner: OptimizedModule, interval: int):
        from ..backends.openvino import CompiledPerShape

        base = base_module(inner)
        full, shallow = self.split(base.graph.model)
        super().__init__(inner, interval, full, None)
        self.full = CompiledPerShape(full, base.hint)
        self.shallow = CompiledPerShape(shallow, base.hint)
        self.reset()

    def forward(self, sample, timestep, encoder_hidden_states, **extra):
        from ..backends.export import named_args

        # every extra input is an input of both graphs: none forces a full step
        use_cache = self._begin_step(sample, timestep, encoder_hidden_states)
        given = {name: tensor.detach().cpu().numpy() for name, tensor in
                 named_args(UNetInputs(sample, timestep, encoder_hidden_states, extra)).items()}
        if use_cache:
            given[DEEP_FEATURE] = self._cached
            request = self.shallow.infer([given[name] for name in self.shallow.names])
        else:
            request = self.full.infer([given[name] for name in self.full.names])
            self._cached = request.get_output_tensor(1).data.copy()
        out = torch.from_numpy(request.get_output_tensor(0).data.copy())
        return out.to(device=sample.device, dtype=sample.dtype)
