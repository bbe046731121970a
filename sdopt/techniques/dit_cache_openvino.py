"""Step caching (FORA) on a DiT (SD3, Flux, PixArt) compiled by OpenVINO (#20, #18): the graph
split the way :mod:`.step_cache_openvino` splits a UNet's, with the cut where
:mod:`.dit_cache` caches.

The eager DiT cache records what every transformer block adds to its input on a full step, and a
cached step adds those contributions instead of running the blocks. The contributions to the
image stream that the output layer reads add up, block after block, to one tensor: the last
block's output minus the first block's input. (SD3's last block is ``context_pre_only`` and
Flux's single blocks end with the image tokens sliced off the joint stream: in all three
families the output layer reads the image stream only, and the text stream is used by nothing
but the blocks.) So the compiled graph is cut there:

- the *full* model is the backend's own graph with one more output, ``last block output - first
  block input`` (a Subtract node added to the graph);
- the *shallow* model is the same graph in which the last block's output is replaced by ``first
  block input + cached contribution`` (a new input), so that every block, and everything only
  the blocks needed (the text embedder, the rotary embeddings, the attention masks), drops out;
  the patch and timestep embeddings and the output layer remain.

Both are cut from the backend's own ``openvino.Model``, quantized or not (the same weights and
int8 ranges). The anchors are found by the module paths the converter writes into node names
(``__module.unet.transformer_blocks.0.norm1...``, ``__module.unet.norm_out...``): the input of
the first block's first layer norm, and the input of the output layer's layer norm. A cached
step gives what the eager DiT cache's cached step gives, up to the order of the additions; as
there, a pipeline that calls the transformer twice per step (Flux's true CFG) keeps one cached
contribution per pass.
"""

from __future__ import annotations

import re

import torch

from ..backends.base import OptimizedModule, UNetInputs
from .base import PerPassStepCache
from .step_cache_openvino import (NotSplittable, OpenVINOStepCacheModule, split_reason, with_input,
                                  with_output)

CONTRIBUTION = "cached_contribution"  # the shallow model's extra input

# The export wrapper (sdopt.backends.export.UNetForExport) holds the denoiser as ``unet``: the
# converter names the denoiser's own modules ``__module.unet.<path>``.
ROOT = "__module.unet"
_BLOCK = re.compile(re.escape(ROOT) +
                    r"\.(single_transformer_blocks|transformer_blocks)\.(\d+)[./]")


def is_dit_graph(model) -> bool:
    """Whether ``model`` was converted from a diffusers DiT (top-level transformer blocks)."""
    return any(_BLOCK.search(op.get_friendly_name()) for op in model.get_ops())


def _layer_norm_input(model, prefix: str, what: str):
    """The data input of the one layer norm (``MVN``) whose node name starts with ``prefix``
    (followed by ``/`` or ``.norm/``)."""
    found = [op for op in model.get_ordered_ops() if op.get_type_name() == "MVN" and
             any(op.get_friendly_name().startswith(prefix + tail) for tail in ("/", ".norm/"))]
    if len(found) != 1:
        raise NotSplittable(f"{len(found)} layer norms named {prefix} in the graph, expected one "
                            f"({what})")
    return found[0].input(0).get_source_output()


def block_stream(model):
    """(first block's input, last block's output) of the image stream, as output ports of
    ``model``: the input of ``transformer_blocks.0.norm1``'s layer norm, and the input of
    ``norm_out``'s. Checked: the first comes from outside the blocks and the second from the
    blocks, with the same feature width."""
    if not is_dit_graph(model):
        raise NotSplittable(f"no {ROOT}.transformer_blocks in the graph's node names (not a "
                            "diffusers DiT)")
    first = _layer_norm_input(model, f"{ROOT}.transformer_blocks.0.norm1",
                              "the first transformer block's input")
    last = _layer_norm_input(model, f"{ROOT}.norm_out", "the output layer's input")
    if _BLOCK.search(first.get_node().get_friendly_name()):
        raise NotSplittable("the first block's input is computed inside a block")
    if not _BLOCK.search(last.get_node().get_friendly_name()):
        raise NotSplittable("the output layer's input does not come from a transformer block")
    a, b = first.get_partial_shape(), last.get_partial_shape()
    if a.rank.is_dynamic or b.rank.is_dynamic or a.rank.get_length() != 3 or \
            b.rank.get_length() != 3 or not a[2].compatible(b[2]) or \
            first.get_element_type() != last.get_element_type():
        raise NotSplittable(f"the first block's input ({a}) and the last block's output ({b}) "
                            "are not the same stream")
    return first, last


def contribution_output(model):
    """A Subtract node added to ``model``: the blocks' total contribution to the image stream."""
    import openvino.opset13 as ops

    first, last = block_stream(model)
    node = ops.subtract(last, first)
    node.set_friendly_name("sdopt/blocks_contribution")
    return node.output(0)


def split(model):
    """(full, shallow): ``model`` with the blocks' contribution as a second output, and ``model``
    with the last block's output replaced by ``first block input + input`` (the input named
    :data:`CONTRIBUTION`; the blocks dropped). Both are clones: ``model`` is left as it was."""
    import openvino.opset13 as ops

    def cached(graph, contribution):
        node = ops.add(block_stream(graph)[0], contribution)
        node.set_friendly_name("sdopt/cached_blocks")
        return node.output(0)

    return (with_output(model, contribution_output),
            with_input(model, lambda graph: block_stream(graph)[1], CONTRIBUTION, cached,
                       model_name="dit_shallow"))


def incompatible_reason(module: OptimizedModule) -> str | None:
    """Why this OpenVINO module's DiT graph cannot be split (None: it can)."""
    return split_reason(module, block_stream, "DiT graph")


class OpenVINODiTStepCacheModule(PerPassStepCache, OpenVINOStepCacheModule):
    """The backend's OpenVINO DiT graph as a full model and a shallow one without the
    transformer blocks, switched per step; one cached contribution per pass of a step."""

    split = staticmethod(split)

    def forward(self, sample, timestep, encoder_hidden_states, **extra):
        from ..backends.export import named_args

        reuse = self._reuses(sample, timestep, encoder_hidden_states)
        given = {name: tensor.detach().cpu().numpy() for name, tensor in
                 named_args(UNetInputs(sample, timestep, encoder_hidden_states, extra)).items()}
        if reuse:
            given[CONTRIBUTION] = self._per_pass[self._pass]
            request = self.shallow.infer([given[name] for name in self.shallow.names])
        else:
            request = self.full.infer([given[name] for name in self.full.names])
            self._per_pass[self._pass] = request.get_output_tensor(1).data.copy()
        out = torch.from_numpy(request.get_output_tensor(0).data.copy())
        return out.to(device=sample.device, dtype=sample.dtype)
