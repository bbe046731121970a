"""The text encoder(s) compiled with OpenVINO (bf16, or fp32 on CPUs without bf16 units).

The text encoder runs once per image (2% of an sd15 image at 256 px in fp32, more with few steps
and a compiled UNet); SDXL has two (the second with a projection), SD3 three (two CLIP, one T5),
Flux a CLIP and a T5, PixArt a T5. Each CLIP or T5 encoder of the pipeline (``text_encoder``,
``text_encoder_2``, ``text_encoder_3``) is converted with ``openvino.convert_model`` into a graph
from token ids (and, for T5, the attention mask PixArt passes with its padding) to every output
the pipelines read: the model's first outputs (``last_hidden_state`` and ``pooler_output``, or
``text_embeds`` and ``last_hidden_state`` with a projection) and all hidden states (SDXL and
``clip_skip`` read ``hidden_states[-2]`` and deeper). The pipeline gets a private copy of each
encoder (new module objects sharing the weights, so ``config``, ``dtype``, ``device`` and
``text_model.final_layer_norm`` are the original's) whose ``forward`` runs the graph and
rebuilds the same output type, honouring ``output_hidden_states`` and ``return_dict``. A call
the graph was not converted for (a CLIP attention mask with padding, position ids, attentions
requested) runs the torch forward on the same weights instead: never a wrong answer. The
converted IR is kept in sdopt's cache (:mod:`sdopt.techniques.openvino_graph`): another process
(a loaded model) reads it instead of converting.
"""

from __future__ import annotations

import copy
import itertools
import types

import torch

from .base import Choice, Technique
from .openvino_graph import CompiledGraph, converted, setting_reason
from .openvino_graph import unavailable_reason as openvino_unavailable_reason

NAME = "text_encoder_openvino"
PRECISIONS = ("bf16", "fp32")
COMPONENTS = ("text_encoder", "text_encoder_2", "text_encoder_3")
EXAMPLE_TOKENS = 77
# The encoder classes converted, and whether their graph takes the attention mask (CLIP's
# pipelines pass none: its graph is traced without, and a padded mask runs in torch).
TAKES_MASK = {"CLIPTextModel": False, "CLIPTextModelWithProjection": False,
              "T5EncoderModel": True}


class _AllOutputs(torch.nn.Module):
    """The encoder with every output flat: the model's own tensors, then its hidden states."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask=None):
        out = self.encoder(input_ids, attention_mask=attention_mask, output_hidden_states=True,
                           return_dict=True)
        firsts = [v for k, v in out.items() if k != "hidden_states"]
        return (*firsts, *out.hidden_states)


def is_supported(module) -> bool:
    return type(module).__name__ in TAKES_MASK


def _layout(encoder):
    """The output class, its leading field names and how many hidden states it returns."""
    ids = torch.zeros(1, EXAMPLE_TOKENS, dtype=torch.long)
    with torch.no_grad():
        out = encoder(ids, output_hidden_states=True, return_dict=True)
    return type(out), [k for k in out.keys() if k != "hidden_states"], len(out.hidden_states)


def _compiled_forward(graph: CompiledGraph, layout, takes_mask: bool):
    out_type, fields, _ = layout

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        config = self.config
        hidden = kwargs.pop("output_hidden_states", None)
        hidden = getattr(config, "output_hidden_states", False) if hidden is None else hidden
        return_dict = kwargs.pop("return_dict", None)
        return_dict = getattr(config, "return_dict", True) if return_dict is None \
            else return_dict
        masked = not takes_mask and attention_mask is not None and \
            not bool(torch.all(attention_mask != 0))
        if input_ids is None or masked or position_ids is not None or \
                kwargs.get("output_attentions") or kwargs.get("inputs_embeds") is not None:
            return type(self).forward(self, input_ids, attention_mask=attention_mask,
                                      position_ids=position_ids, output_hidden_states=hidden,
                                      return_dict=return_dict, **kwargs)
        self.sdopt_graph_calls += 1
        inputs = [input_ids.to(torch.int64)]
        if takes_mask:
            inputs.append(torch.ones_like(inputs[0]) if attention_mask is None
                          else attention_mask.to(torch.int64))
        outputs = [t.to(input_ids.device, self.dtype) for t in graph(*inputs)]
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
    takes_mask = TAKES_MASK[type(encoder).__name__]

    def make():
        import openvino as ov

        example = torch.zeros(1, EXAMPLE_TOKENS, dtype=torch.long)
        dynamic = (ov.PartialShape([-1, -1]), ov.Type.i64)
        if takes_mask:
            return _AllOutputs(encoder), {"example_input": (example, torch.ones_like(example)),
                                          "input": [dynamic, dynamic]}
        return _AllOutputs(encoder), {"example_input": example, "input": [dynamic]}

    model = converted(encoder, "text_encoder", make, encoder.config)
    if len(model.outputs) != len(layout[1]) + layout[2]:
        raise RuntimeError(f"openvino.convert_model gave {len(model.outputs)} outputs for the "
                           f"{len(layout[1]) + layout[2]} of {type(encoder).__name__}")
    clone = sharing_copy(encoder)
    clone.sdopt_graph_calls = 0  # tests count that the compiled graph, not torch, encoded
    clone.forward = types.MethodType(
        _compiled_forward(CompiledGraph(model, precision), layout, takes_mask), clone)
    clone.sdopt_technique = NAME
    return clone


def unavailable_reason(module, device) -> str | None:
    return openvino_unavailable_reason(device, "the OpenVINO text encoder")


def sharing_copy(encoder):
    """New module objects holding the user's own weights (not copied): a private encoder whose
    ``forward`` a setting replaces, with the original's config, dtype and device."""
    shared = {id(t): t for t in itertools.chain(encoder.parameters(), encoder.buffers())}
    return copy.deepcopy(encoder, memo=shared).eval()


def replace_encoders(pipe, make) -> None:
    """Every CLIP or T5 encoder of ``pipe`` replaced by ``make(encoder)``: the one way the text
    encoder settings find the pipeline's encoders."""
    names = [n for n in COMPONENTS if is_supported(getattr(pipe, n, None))]
    if not names:
        raise NotImplementedError("the pipeline has no CLIP or T5 text encoder")
    for name in names:
        setattr(pipe, name, make(getattr(pipe, name)))


def apply_pipeline(pipe, params: dict) -> None:
    replace_encoders(pipe, lambda encoder: openvino_text_encoder(encoder, params["precision"]))


TECHNIQUE = Technique(
    NAME, "pipeline", (Choice("precision", PRECISIONS),),
    tuple({"precision": p} for p in PRECISIONS), lambda p: f"te_ov_{p['precision']}",
    "text encoder(s) (CLIP, T5) compiled with OpenVINO", apply_pipeline,
    unavailable_reason=unavailable_reason, constrained=True, setting_reason=setting_reason,
    component="text_encoder")
