"""A partial int8 IR derived from the full one: chosen convolutions back in floating point.

NNCF calibration of the SD 1.5 UNet costs about 165 s on this 2-core CPU, and the search tries
``int8-inner`` (conv_in/conv_out left out) only after full int8 was rejected, so calibrating it
again from scratch doubled the int8 part of a cold search. Leaving a convolution out of int8
afterwards is a graph edit instead (seconds): its inputs skip their FakeQuantize, its weight and
its bias come back from the fp32 IR (NNCF compressed the one to int8 and bias-corrected the
other). Measured on sd15 at 256 px (random inputs, relative L2 vs fp32): calibrated int8-inner
0.0551, derived 0.0556, full int8 0.0636; the search measures the derived model like any other.

Only convolutions: NNCF's SmoothQuant rescales MatMul activations and weights together, which a
graph edit cannot undo from the fp32 weights, so a MatMul in the scope raises
:class:`NotDerivable` and the caller calibrates instead. So does anything unexpected in the graph.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DERIVABLE_TYPES = ("Convolution",)
QUANTIZED_TYPES = ("Convolution", "MatMul")


class NotDerivable(Exception):
    """The partial model cannot be derived by a graph edit (calibrate it instead)."""


def derive_partial_int8(full_xml: Path, fp32_model, out_xml: Path, *,
                        ignored_types: tuple[str, ...] = (),
                        ignored_patterns: tuple[str, ...] = ()) -> dict[str, Any]:
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    core = ov.Core()
    model = core.read_model(str(full_xml))
    fp32_ops = {op.get_friendly_name(): op for op in fp32_model.get_ops()}
    patterns = [re.compile(p) for p in ignored_patterns]  # re.match, as NNCF's IgnoredScope
    stripped: list[str] = []
    for op in model.get_ops():
        kind, name = op.get_type_name(), op.get_friendly_name()
        if kind not in QUANTIZED_TYPES or not (
                kind in ignored_types or any(p.match(name) for p in patterns)):
            continue
        if kind not in DERIVABLE_TYPES:
            raise NotDerivable(f"{name} is a {kind} (SmoothQuant scaled it)")
        original = fp32_ops.get(name)
        if original is None or original.get_input_size() != op.get_input_size():
            raise NotDerivable(f"{name} has no counterpart in the fp32 IR")
        for i in range(op.get_input_size()):
            source = op.input(i).get_source_output().get_node()
            fp32_source = original.input(i).get_source_output().get_node()
            if fp32_source.get_type_name() == "Constant":  # the weight: fp32 again
                op.input(i).replace_source_output(ops.constant(fp32_source.get_data()).output(0))
            elif source.get_type_name() == "FakeQuantize":  # an activation: skip its quantizer
                op.input(i).replace_source_output(source.input_value(0))
        for target in op.output(0).get_target_inputs():  # the bias, before bias correction
            add = target.get_node()
            fp32_add = fp32_ops.get(add.get_friendly_name())
            if add.get_type_name() != "Add" or fp32_add is None:
                continue
            for j in range(2):
                fp32_bias = fp32_add.input(j).get_source_output().get_node()
                bias = add.input(j).get_source_output().get_node()
                if fp32_bias.get_type_name() == "Constant" and bias.get_type_name() == "Constant":
                    data = np.asarray(fp32_bias.get_data())
                    if data.shape != tuple(bias.get_output_shape(0)):
                        raise NotDerivable(f"{add.get_friendly_name()}: bias shapes differ")
                    add.input(j).replace_source_output(ops.constant(data).output(0))
        stripped.append(name)
    if not stripped:
        raise NotDerivable("no quantized layer matches the ignored scope")
    model.validate_nodes_and_infer_types()
    ov.save_model(model, str(out_xml), compress_to_fp16=False)
    return {"derived_from_full_int8": True, "fp_layers": stripped}
