"""ONNX export of the UNet, the VAE decoder and the text encoder, with exporter fallback.

The dynamo exporter (``torch.onnx.export(..., dynamo=True)``, opset 20) is the one torch
maintains; the TorchScript ("legacy") exporter still handles models the dynamo one cannot trace.
We try them in that order and record which one produced the file, because a user who hits a
numerical difference needs to know. Shapes are static (those of the run): ONNX Runtime and
TensorRT plan memory and kernels for them. Weights go to external data files next to the model,
so models over the 2 GB protobuf limit (the SD 1.5 UNet is 3.4 GB) export the same way as small
ones; the artifact is therefore a directory, copied as a whole.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from ..deps import require
from ..device import library_versions
from ..identity import config_hash, weights_hash
from ..logs import quiet_torchvision_notes
from .base import UNetInputs

log = logging.getLogger(__name__)

OPSET = 20
EXPORTERS = ("dynamo", "legacy")
UNET_INPUTS = ("sample", "timestep", "encoder_hidden_states")
UNET_OUTPUTS = ("out_sample",)
ONNX_FILE = "model.onnx"
# Extra denoiser inputs an export can take (SDXL passes 2, Flux 4).
MAX_EXTRA_INPUTS = 8


class UNetForExport(torch.nn.Module):
    """Positional inputs and a plain tensor out: what exporters and converters trace best.

    The extra inputs a family passes (SDXL's ``added_cond_kwargs`` dict, a DiT's pooled
    projections) arrive as more positional tensors, named as :func:`input_names` names them, and
    are put back into the keyword structure the denoiser expects; non-tensor extras (flags) are
    fixed at export time, as the run passed them."""

    def __init__(self, unet: torch.nn.Module, extra_names: Sequence[str] = (),
                 constants: dict[str, Any] | None = None):
        super().__init__()
        if len(extra_names) > MAX_EXTRA_INPUTS:
            raise NotImplementedError(f"the denoiser takes {len(extra_names)} extra tensors "
                                      f"({', '.join(extra_names)}); exports take at most "
                                      f"{MAX_EXTRA_INPUTS}")
        self.unet = unet
        self.extra_names = tuple(extra_names)
        self.constants = dict(constants or {})

    # Named slots, not *args: converters name a graph's inputs from the signature (OpenVINO
    # slices the parameter list to the number of example inputs).
    def forward(self, sample, timestep, encoder_hidden_states, extra_0=None, extra_1=None,
                extra_2=None, extra_3=None, extra_4=None, extra_5=None, extra_6=None,
                extra_7=None):
        extra = (extra_0, extra_1, extra_2, extra_3, extra_4, extra_5, extra_6, extra_7)
        kwargs: dict[str, Any] = {}
        for name, value in list(zip(self.extra_names, extra)) + list(self.constants.items()):
            _nest(kwargs, name.split("."), value)
        from .torch_module import sample_argument

        return self.unet(**{sample_argument(self.unet): sample}, timestep=timestep,
                         encoder_hidden_states=encoder_hidden_states, return_dict=False,
                         **kwargs)[0]


def _nest(target: dict, path: list[str], value) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def extra_leaves(extra: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted name, value) of every leaf of a call's extra keyword arguments, in name order, so
    that an exported graph's inputs have one stable order whatever order the pipeline used."""
    out: list[tuple[str, Any]] = []
    for key in sorted(extra):
        value, name = extra[key], f"{prefix}{key}"
        if isinstance(value, dict):
            out += extra_leaves(value, name + ".")
        elif isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
            raise NotImplementedError(f"the denoiser input '{name}' is a list of tensors, which "
                                      "exported graphs do not take")
        else:
            out.append((name, value))
    return out


class VaeDecoderForExport(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent, return_dict=False)[0]


class TextEncoderForExport(torch.nn.Module):
    def __init__(self, text_encoder: torch.nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids, return_dict=False)[0]


def unet_timestep(timestep: torch.Tensor, batch: int) -> torch.Tensor:
    """Timestep as float32 of shape (batch,): pipelines pass a 0-d tensor, exported graphs
    have one fixed input signature."""
    t = torch.as_tensor(timestep).to(torch.float32).reshape(-1)
    return t.expand(batch).contiguous() if t.numel() == 1 else t


def input_names(inputs: UNetInputs) -> tuple[str, ...]:
    """The exported graph's input names for this call: the three UNet inputs, then every extra
    tensor by its dotted name (``added_cond_kwargs.text_embeds``)."""
    return UNET_INPUTS + tuple(n for n, v in extra_leaves(inputs.extra)
                               if isinstance(v, torch.Tensor))


def constant_inputs(inputs: UNetInputs) -> dict[str, Any]:
    """The call's non-tensor extras (flags), which an exported graph keeps fixed."""
    return {n: v for n, v in extra_leaves(inputs.extra) if not isinstance(v, torch.Tensor)}


def _graph_input(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor.to(torch.float32) if tensor.is_floating_point() else tensor).contiguous()


def unet_args(inputs: UNetInputs) -> tuple[torch.Tensor, ...]:
    """The graph's inputs in :func:`input_names` order; floating ones in float32 (the graph is
    exported from the fp32 module), integer ones (ids) unchanged."""
    sample = inputs.sample.to(torch.float32).contiguous()
    extras = tuple(_graph_input(v) for _, v in extra_leaves(inputs.extra)
                   if isinstance(v, torch.Tensor))
    return (sample, unet_timestep(inputs.timestep, sample.shape[0]),
            inputs.encoder_hidden_states.to(torch.float32).contiguous()) + extras


def named_args(inputs: UNetInputs) -> dict[str, torch.Tensor]:
    return dict(zip(input_names(inputs), unet_args(inputs)))


def calibration_hash(calibration: list[UNetInputs]) -> str:
    """Identifies a calibration set: an int8 model calibrated on other inputs is another model."""
    import hashlib

    digest = hashlib.sha256()
    for inputs in calibration:
        for tensor in unet_args(inputs):
            digest.update(str(list(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def unet_shapes(inputs: UNetInputs) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in named_args(inputs).items()}


def unet_key_parts(unet: torch.nn.Module, example: UNetInputs) -> dict[str, Any]:
    """What identifies an export of this UNet: weights, architecture, shapes, torch/diffusers."""
    versions = library_versions()
    parts = {"weights": weights_hash(unet), "config": config_hash(unet),
             "shapes": unet_shapes(example),
             "libraries": {k: versions.get(k) for k in ("torch", "diffusers")}}
    constants = constant_inputs(example)
    if constants:  # fixed in the graph: another flag is another export
        parts["constants"] = {k: repr(v) for k, v in constants.items()}
    return parts


def _export_dynamo(module, args, path: Path, input_names, output_names, opset: int) -> None:
    require("onnxscript", "the dynamo ONNX exporter")
    program = torch.onnx.export(module, args, dynamo=True, opset_version=opset,
                                input_names=list(input_names), output_names=list(output_names),
                                external_data=True, optimize=True, verbose=False)
    program.save(str(path), external_data=True)


def _export_legacy(module, args, path: Path, input_names, output_names, opset: int) -> None:
    # The TorchScript exporter stops at opset 20 and writes external data by itself past 2 GB;
    # we always want external data, so save it again through onnx.
    onnx = require("onnx", "ONNX export")
    torch.onnx.export(module, args, str(path), dynamo=False, opset_version=min(opset, 20),
                      input_names=list(input_names), output_names=list(output_names),
                      do_constant_folding=True)
    model = onnx.load(str(path), load_external_data=True)
    for leftover in path.parent.iterdir():
        if leftover.name != ONNX_FILE:
            leftover.unlink()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=ONNX_FILE + ".data", size_threshold=1024)


# A DiT transformer's first and last layers (SD3, Flux, PixArt), by module path under the export
# wrapper: the patch embedding (SD3's and PixArt's ``pos_embed.proj`` convolution, Flux's
# ``x_embedder``) and the final projection with its modulation. Quantizing PixArt's patch
# embedding alone cost 0.24 of numeric precision in OpenVINO int8; the UNet's counterparts are
# conv_in and conv_out.
DIT_EDGE_MODULES = ("unet.pos_embed.proj", "unet.x_embedder", "unet.norm_out.linear",
                    "unet.proj_out")


def is_transformer(denoiser: torch.nn.Module) -> bool:
    """A DiT transformer rather than a UNet (which has conv_in)."""
    return not isinstance(getattr(denoiser, "conv_in", None), torch.nn.Module)


def node_module(node) -> str:
    """The module path (``unet.proj_out``) an exported ONNX node comes from: the dynamo exporter
    records it in the node's ``pkg.torch.onnx.name_scopes`` metadata, the TorchScript exporter
    in the node's name (``/unet/proj_out/MatMul``)."""
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            paths = [s for s in scopes if isinstance(s, str) and s.startswith("unet.")]
            return paths[-1] if paths else ""
    parts = node.name.strip("/").split("/")
    return ".".join(parts[:-1]) if node.name.startswith("/") else ""


def dit_edge_nodes(graph, op_types: Sequence[str]) -> list[str]:
    """The names of ``graph``'s nodes of ``op_types`` that belong to a DiT's first and last
    layers (:data:`DIT_EDGE_MODULES`)."""
    return [n.name for n in graph.node
            if n.op_type in op_types and node_module(n) in DIT_EDGE_MODULES]


def check_graph(path: Path) -> None:
    """Refuse an exported graph that ONNX's own checker and strict shape inference reject, so
    that the next exporter is tried instead of every runtime failing to load it. The dynamo
    exporter (torch 2.13) writes ``aten.squeeze.dim`` on a dimension that is not 1 (a no-op in
    torch; PixArt's transformer squeezes its 256 tokens) as an ONNX ``Squeeze``, which ONNX
    Runtime then refuses to load; the TorchScript exporter drops it. The check reads the model by
    path (external data stays on disk; milliseconds for the tiny presets)."""
    onnx = require("onnx", "ONNX export")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - ValidationError, InferenceError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RuntimeError(f"the exported graph is invalid ({first[:300]})") from exc


def checked_export(directory: Path, meta: dict) -> bool:
    """Whether a cached export (a cache entry's directory and description) may be served: its
    graph passed :func:`check_graph`. Exports cached before the check existed kept their key
    (PixArt's dynamo export, whose invalid Squeeze ONNX Runtime cannot load, made every ONNX
    Runtime variant of PixArt fail from the cache): such an entry is checked once, and built
    again, with the exporter fallback, when the check refuses it. Use as the cache's ``valid``."""
    built = meta.get("built")
    if not isinstance(built, dict):
        return False
    if built.get("checked"):
        return True
    try:
        check_graph(directory / str(built.get("file") or ONNX_FILE))
    except RuntimeError as exc:
        log.warning("sdopt: cached ONNX export %s refused: %s", directory, exc)
        return False
    built["checked"] = True  # kept with the hit's description: not checked again
    return True


def export_onnx(module: torch.nn.Module, args: tuple, directory: str | os.PathLike,
                input_names: Sequence[str], output_names: Sequence[str], *, opset: int = OPSET,
                exporters: Sequence[str] = EXPORTERS) -> dict[str, Any]:
    """Export ``module(*args)`` to ``directory/model.onnx`` (+ external data) with the first
    exporter that works; returns which one and why the others failed."""
    require("onnx", "ONNX export")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ONNX_FILE
    errors: dict[str, str] = {}
    runners = {"dynamo": _export_dynamo, "legacy": _export_legacy}
    for name in exporters:
        for stale in directory.iterdir():
            stale.unlink()
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), \
                    contextlib.redirect_stdout(io.StringIO()), quiet_torchvision_notes():
                warnings.simplefilter("ignore")
                runners[name](module.eval(), args, path, input_names, output_names, opset)
            if not path.is_file():
                raise RuntimeError(f"{ONNX_FILE} was not written")
            check_graph(path)
            return {"exporter": name, "opset": opset if name == "dynamo" else min(opset, 20),
                    "failed": errors, "file": ONNX_FILE, "checked": True}
        except Exception as exc:  # noqa: BLE001 - the next exporter may work
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            errors[name] = f"{type(exc).__name__}: {first[:300]}"
            log.info("sdopt: %s ONNX exporter failed: %s", name, errors[name])
    raise RuntimeError("every ONNX exporter failed: " + "; ".join(f"{k}: {v}"
                                                                    for k, v in errors.items()))


def export_unet(unet: torch.nn.Module, example: UNetInputs, directory, **kw) -> dict[str, Any]:
    info = export_onnx(for_export(unet, example), unet_args(example), directory,
                       input_names(example), UNET_OUTPUTS, **kw)
    return {**info, "inputs": unet_shapes(example)}


def for_export(unet: torch.nn.Module, example: UNetInputs) -> UNetForExport:
    """The export wrapper of ``unet`` for calls shaped like ``example``."""
    names = input_names(example)
    return UNetForExport(unet, names[len(UNET_INPUTS):], constant_inputs(example))


def export_vae_decoder(vae: torch.nn.Module, latent_shape: Sequence[int], directory,
                       **kw) -> dict[str, Any]:
    latent = torch.randn(*latent_shape, generator=torch.Generator().manual_seed(0))
    info = export_onnx(VaeDecoderForExport(vae), (latent,), directory, ("latent",), ("image",),
                       **kw)
    return {**info, "inputs": {"latent": list(latent_shape)}}


def export_text_encoder(text_encoder: torch.nn.Module, batch: int, seq_len: int, directory,
                        **kw) -> dict[str, Any]:
    ids = torch.zeros(batch, seq_len, dtype=torch.int64)
    info = export_onnx(TextEncoderForExport(text_encoder), (ids,), directory, ("input_ids",),
                       ("last_hidden_state",), **kw)
    return {**info, "inputs": {"input_ids": [batch, seq_len]}}


@contextlib.contextmanager
def classic_attention(module: torch.nn.Module):
    """Export ``module``'s attention layers with diffusers' classic processor (matmul, softmax,
    matmul) instead of SDPA, then put every layer's own processor back. ONNX Runtime's Stable
    Diffusion optimizer fuses attention from that pattern (its demo deletes
    ``F.scaled_dot_product_attention`` for the export); the exporters decompose SDPA into one its
    fusion does not match. Only SDPA processors (``AttnProcessor2_0``) are replaced; yields how
    many."""
    try:
        from diffusers.models.attention_processor import Attention, AttnProcessor
    except ImportError:  # pragma: no cover - diffusers is a dependency
        yield 0
        return
    saved = [(m, m.processor) for m in module.modules()
             if isinstance(m, Attention) and type(m.processor).__name__ == "AttnProcessor2_0"]
    try:
        for layer, _ in saved:
            layer.set_processor(AttnProcessor())
        yield len(saved)
    finally:
        for layer, processor in saved:
            layer.set_processor(processor)


def copy_artifact(src: Path, dst: Path, names: Sequence[str] | None = None) -> None:
    """Copy a cached artifact directory's files. Never hard links: onnx refuses external data
    with several links (its guard against hard-link attacks). Not the cache's own marker
    (store.MARKER_NAME): whether ``dst`` is sdopt's, and of which kind, is its writer's to say."""
    import shutil

    from ..store import MARKER_NAME

    dst.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.iterdir()):
        if item.is_file() and (names is None or item.name in names) and \
                not item.name.startswith("sdopt_cache") and item.name != MARKER_NAME:
            shutil.copy2(item, dst / item.name)
