"""PyTorch dynamic int8 of the Linear layers (weights int8, activations quantized per call).

Measured 1.38x for the SD 1.5 UNet at 256 px on this AVX-512 VNNI CPU. Convolutions stay fp32:
dynamic int8 convolution is slower than fp32 here (ONNX Runtime's ConvInteger: 0.67x).
torch.ao.quantization is deprecated in favour of torchao; it still ships with torch 2.13.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ..device import DeviceInfo
from ..errors import SdoptError
from .torch_module import WEIGHTS_FILE, TorchUNetModule, copy_unet, read_safetensors
from .base import Backend, BuildContext, OptimizedModule, Variant, register


def _quantize(unet: torch.nn.Module) -> torch.nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(unet, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def _dynamic_linears(unet: torch.nn.Module):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return [(name, m) for name, m in unet.named_modules() if isinstance(m, DynamicLinear)]


class _Int8Module(TorchUNetModule):
    def __init__(self, quantized_unet: torch.nn.Module, variant: Variant):
        super().__init__(quantized_unet, variant, torch.float32)

    def size_bytes(self) -> int:
        total = 0
        for _, module in _dynamic_linears(self.unet):
            weight, bias = module._weight_bias()
            total += weight.numel() * weight.element_size()
            total += bias.numel() * bias.element_size() if bias is not None else 0
        return total + super().size_bytes()


def _int8_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The quantized UNet as plain tensors: int8 weights with their scale and zero point."""
    linears = _dynamic_linears(unet)
    quantized_names = {name for name, _ in linears}
    # Quantized Linear entries (packed params, activation scale/zero point) are written below.
    state = {k: v for k, v in unet.state_dict().items() if isinstance(v, torch.Tensor)
             and not v.is_quantized and k.rsplit(".", 1)[0] not in quantized_names
             and "_packed_params" not in k}
    for name, module in linears:
        weight, bias = module._weight_bias()
        if weight.qscheme() != torch.per_tensor_affine:
            raise NotImplementedError(f"{name}: qscheme {weight.qscheme()} is not saved")
        state[f"{name}.weight_int8"] = weight.int_repr()
        state[f"{name}.weight_scale"] = torch.tensor([weight.q_scale()], dtype=torch.float64)
        state[f"{name}.weight_zero_point"] = torch.tensor([weight.q_zero_point()])
        if bias is not None:
            state[f"{name}.bias"] = bias.detach()
    return state


@register
class TorchInt8(Backend):
    name = "torch_int8"
    aliases = ("dynamic_quantization", "torch_dynamic_int8")

    def memory_copies(self, variant: Variant, ctx: BuildContext | None = None) -> float | None:
        # A quantized copy of the UNet (its Linear weights int8): anonymous peak 1.17 copies of
        # the fp32 weights (benchmarks/candidate_memory.py, tiny UNet widened to 800 MB,
        # 2026-12-01).
        return 1.2

    def build_activity(self, variant: Variant) -> str:
        return "quantizing int8"

    def variants(self, device: DeviceInfo) -> list[Variant]:
        return [Variant(backend=self.name, name="dynamic-linear", precision="int8",
                        options={"layers": "Linear"}, techniques=("int8 dynamic (Linear)",))]

    def unavailable_reason(self, device: DeviceInfo, variant: Variant) -> str | None:
        if device.kind != "cpu":
            return "torch dynamic int8 kernels run on CPU only"
        if "fbgemm" not in torch.backends.quantized.supported_engines and \
                "x86" not in torch.backends.quantized.supported_engines:
            return "this torch build has no x86 quantized engine (fbgemm/x86)"
        return None

    def build(self, unet: torch.nn.Module, variant: Variant, ctx: BuildContext) -> OptimizedModule:
        return _Int8Module(_quantize(copy_unet(unet, torch.float32, False, "cpu")), variant)

    def save(self, module: OptimizedModule, directory: Path) -> dict[str, Any]:
        # Packed quantized weights have no safe serialization of their own: save int8 values,
        # scales and zero points as safetensors and pack them again on load (bit-exact).
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in _int8_state(module.unet).items()},
                  str(directory / WEIGHTS_FILE), metadata={"format": "sdopt-int8-dynamic"})
        return {"weights": WEIGHTS_FILE, "qscheme": "per_tensor_affine"}

    def load(self, directory: Path, unet: torch.nn.Module, variant: Variant, info: dict[str, Any],
             device: DeviceInfo) -> OptimizedModule:
        state = read_safetensors(directory / WEIGHTS_FILE)
        quantized = _quantize(copy_unet(unet, torch.float32, False, "cpu"))
        for name, module in _dynamic_linears(quantized):
            try:
                ints = state.pop(f"{name}.weight_int8")
                scale = float(state.pop(f"{name}.weight_scale")[0])
                zero_point = int(state.pop(f"{name}.weight_zero_point")[0])
            except KeyError as exc:
                raise SdoptError(f"'{directory / WEIGHTS_FILE}' lacks {exc.args[0]}: it does not "
                                 "fit the given pipeline's UNet") from exc
            qweight = torch._make_per_tensor_quantized_tensor(ints, scale, zero_point)
            module.set_weight_bias(qweight, state.pop(f"{name}.bias", None))
        # load_state_dict cannot be used: quantized Linear modules insist on their packed form.
        targets = {**dict(quantized.named_parameters()), **dict(quantized.named_buffers())}
        unexpected = [k for k in state if k not in targets]
        missing = [k for k in targets if k not in state]
        for key in set(state) & set(targets):
            targets[key].data.copy_(state[key])
        if missing or unexpected:
            raise SdoptError(f"'{directory / WEIGHTS_FILE}' does not fit the given pipeline's UNet "
                             f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
        return _Int8Module(quantized, variant)
