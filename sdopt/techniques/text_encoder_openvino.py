"""The CLIP text encoder(s) compiled with OpenVINO (bf16, or fp32 on CPUs without bf16 units).

The text encoder runs once per image (2% of an sd15 image at 256 px in fp32, more with few steps
and a compiled UNet); SDXL has two (the second with a projection). Each CLIP text encoder of the
pipeline (``text_encoder``, ``text_encoder_2``, ``text_encoder_3`` when a CLIP model; T5 stays in
torch) is converted with ``openvino.convert_model`` into a graph from token ids to every output
the pipelines read: the model's first outputs (``last_hidden_state`` and ``pooler_output``, or
``text_embeds`` and ``last_hidden_state`` with a projection) and all hidden states (SDXL and
``clip_skip`` read ``hidden_states[-2]`` and deeper). The pipeline gets a private copy of each
encoder (new module objects sharing the weights, so ``config``, ``dtype``, ``device`` and
``text_model.final_layer_norm`` are the original's) whose ``forward`` runs the graph and
rebuilds the same output type, honouring ``output_hidden_states`` and ``return_dict``. A call
the graph was not converted for (an attention mask with padding, position ids, attentions
requested) runs the torch forward on the same weights instead: never a wrong answer.
"""

from __future__ import annotations

import copy
import itertools
import types

import torch

from .base import Choice, Technique
from .openvino_graph import CompiledGraph, converted, setting_reason
from .openvino_graph import unavailable_reason as _openvino_reason

NAME = "text_encoder_openvino"
PRECISIONS = ("bf16", "fp32")
COMPONENTS = ("text_encoder", "text_encoder_2", "text_encoder_3")
EXAMPLE_TOKENS = 77


class _AllOutputs(torch.nn.Module):
    """The encoder with every output flat: the model's own tensors, then its hidden states."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids):
        out = self.encoder(input_ids, output_hidden_states=True, return_dict=True)
        firsts = [v for k, v in out.items() if k != "hidden_states"]
        return (*firsts, *out.hidden_states)


def is_clip(module) -> bool:
    return type(module).__name__ in ("CLIPTextModel", "CLIPTextModelWithProjection")


def _layout(encoder):
    """The output class, its leading field names and how many hidden states it returns."""
    ids = torch.zeros(1, EXAMPLE_TOKENS, dtype=torch.long)
    with torch.no_grad():
        out = encoder(ids, output_hidden_states=True, return_dict=True)
    return type(out), [k for k in out.keys() if k != "hidden_states"], len(out.hidden_states)


def _compiled_forward(graph: CompiledGraph, layout):
    out_type, fields, _ = layout

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        config = self.config
        hidden = kwargs.pop("output_hidden_states", None)
        hidden = getattr(config, "output_hidden_states", False) if hidden is None else hidden
        return_dict = kwargs.pop("return_dict", None)
        return_dict = getattr(config, "return_dict", True) if return_dict is None \
            else return_dict
        masked = attention_mask is not None and not bool(torch.all(attention_mask != 0))
        if input_ids is None or masked or position_ids is not None or \
                kwargs.get("output_attentions") or kwargs.get("inputs_embeds") is not None:
            return type(self).forward(self, input_ids, attention_mask=attention_mask,
                                      position_ids=position_ids, output_hidden_states=hidden,
                                      return_dict=return_dict, **kwargs)
        self.sdopt_graph_calls += 1
        outputs = [t.to(input_ids.device, self.dtype)
                   for t in graph(input_ids.to(torch.int64))]
        values = dict(zip(fields, outputs))
        if hidden:
            values["hidden_states"] = tuple(outputs[len(fields):])
        result = out_type(**values)
        return result if return_dict else result.to_tuple()

    return forward


def openvino_text_encoder(encoder, precision: str):
    """A private copy of ``encoder`` (new modules, the same weights) whose forward runs OpenVINO
    at ``precision``; the user's encoder is untouched."""
    layout = _layout(encoder)

    def make():
        import openvino as ov

        example = torch.zeros(1, EXAMPLE_TOKENS, dtype=torch.long)
        return _AllOutputs(encoder), {"example_input": example,
                                      "input": [(ov.PartialShape([-1, -1]), ov.Type.i64)]}

    model = converted(encoder, "text_encoder", make)
    if len(model.outputs) != len(layout[1]) + layout[2]:
        raise RuntimeError(f"openvino.convert_model gave {len(model.outputs)} outputs for the "
                           f"{len(layout[1]) + layout[2]} of {type(encoder).__name__}")
    shared = {id(t): t for t in itertools.chain(encoder.parameters(), encoder.buffers())}
    clone = copy.deepcopy(encoder, memo=shared).eval()
    clone.sdopt_graph_calls = 0  # tests count that the compiled graph, not torch, encoded
    clone.forward = types.MethodType(_compiled_forward(CompiledGraph(model, precision), layout),
                                     clone)
    clone.sdopt_technique = NAME
    return clone


def unavailable_reason(module, device) -> str | None:
    return _openvino_reason(device, "the OpenVINO text encoder")


def apply_pipeline(pipe, params: dict) -> None:
    names = [n for n in COMPONENTS if is_clip(getattr(pipe, n, None))]
    if not names:
        raise NotImplementedError("the pipeline has no CLIP text encoder to compile")
    for name in names:
        setattr(pipe, name, openvino_text_encoder(getattr(pipe, name), params["precision"]))


TECHNIQUE = Technique(
    NAME, "pipeline", (Choice("precision", PRECISIONS),),
    tuple({"precision": p} for p in PRECISIONS), lambda p: f"te_ov_{p['precision']}",
    "CLIP text encoder(s) compiled with OpenVINO", apply_pipeline,
    unavailable_reason=unavailable_reason, constrained=True, setting_reason=setting_reason,
    component="text_encoder")
