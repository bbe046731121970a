"""Write a diffusers Stable Diffusion pipeline as an original (LDM/CompVis) single-file checkpoint.

No LDM-format checkpoint can be downloaded where sdopt is tested, yet users bring exactly such
files (``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``).
This helper produces one from any SD 1.x-shaped pipeline, so that the success path of
``from_single_file`` is exercised for real. It is the inverse of diffusers'
``convert_ldm_unet_checkpoint`` / ``convert_ldm_vae_checkpoint`` / ``convert_ldm_clip_checkpoint``
and follows the key naming of diffusers'
``scripts/convert_diffusers_to_original_stable_diffusion.py``, but derives the block layout from
the model's config and weights instead of hard-coding SD 1.5's four blocks, so the tiny preset
converts too.

Every diffusers key must map to exactly one LDM key; anything unexpected raises, so a layout this
helper does not understand fails loudly instead of producing a file that loads half-random.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# UNet ResnetBlock2D (diffusers) -> ResBlock (LDM) parameter names.
_UNET_RESNET = {
    "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
}
# VAE ResnetBlock2D -> LDM ResnetBlock (only the shortcut is renamed).
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
               "conv_shortcut": "nin_shortcut"}
# VAE mid-block Attention -> LDM AttnBlock (1x1 convolutions there, linear layers here).
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_TOP = {
    "conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out",
}


class LayoutError(ValueError):
    """The model has a parameter this converter has no LDM name for."""


def _rename(name: str, table: Mapping[str, str], where: str) -> str:
    """Rename ``<module>.<param>`` through ``table`` (keyed by module path)."""
    module, _, param = name.rpartition(".")
    if module not in table:
        raise LayoutError(f"{where}: no LDM name for '{name}'")
    return f"{table[module]}.{param}"


def _convert(state: Mapping, rules: list[tuple[str, Callable[[str], str]]], where: str) -> dict:
    """Apply the first rule whose diffusers prefix starts the key; every key must match one."""
    out: dict = {}
    for key, value in state.items():
        for prefix, rename in rules:
            if key.startswith(prefix):
                new = rename(key[len(prefix):])
                break
        else:
            raise LayoutError(f"{where}: no LDM name for '{key}'")
        if new in out:
            raise LayoutError(f"{where}: two parameters map to '{new}'")
        out[new] = value
    return out


def _keep(ldm_prefix: str) -> Callable[[str], str]:
    return lambda rest: ldm_prefix + rest


def _through(ldm_prefix: str, table: Mapping[str, str], where: str) -> Callable[[str], str]:
    return lambda rest: ldm_prefix + _rename(rest, table, where)


def _blocks(state: Mapping, prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    if ids != set(range(len(ids))):
        raise LayoutError(f"'{prefix}*' blocks are not numbered 0..n-1: {sorted(ids)}")
    return len(ids)


def unet_to_ldm(state: Mapping, config: Mapping) -> dict:
    """UNet2DConditionModel state dict -> LDM ``UNetModel`` keys (without the model prefix).

    LDM numbers the UNet's layers flat: ``input_blocks.0`` is conv_in, then each down block
    contributes ``layers_per_block`` (resnet, attention) entries plus one downsampler except the
    last; ``output_blocks`` has ``layers_per_block + 1`` entries per up block, the upsampler
    sitting after the attention (index 2) or, without one, after the resnet (index 1).
    """
    where = "unet"
    per = config["layers_per_block"]
    if not isinstance(per, int):
        raise LayoutError(f"{where}: layers_per_block {per!r} is per block; LDM needs one int")
    for key in ("class_embed_type", "addition_embed_type", "encoder_hid_dim"):
        if config.get(key) is not None:
            raise LayoutError(f"{where}: {key}={config[key]!r} is not an SD 1.x UNet")
    n_down, n_up = _blocks(state, "down_blocks."), _blocks(state, "up_blocks.")
    rules: list[tuple[str, Callable[[str], str]]] = []
    for i in range(n_down):
        for j in range(per):
            idx = 1 + i * (per + 1) + j
            rules.append((f"down_blocks.{i}.resnets.{j}.",
                          _through(f"input_blocks.{idx}.0.", _UNET_RESNET, where)))
            rules.append((f"down_blocks.{i}.attentions.{j}.", _keep(f"input_blocks.{idx}.1.")))
        rules.append((f"down_blocks.{i}.downsamplers.0.conv.",
                      _keep(f"input_blocks.{(i + 1) * (per + 1)}.0.op.")))
    rules.append(("mid_block.attentions.0.", _keep("middle_block.1.")))
    for j in range(2):
        rules.append((f"mid_block.resnets.{j}.",
                      _through(f"middle_block.{2 * j}.", _UNET_RESNET, where)))
    for i in range(n_up):
        has_attention = any(k.startswith(f"up_blocks.{i}.attentions.") for k in state)
        for j in range(per + 1):
            idx = i * (per + 1) + j
            rules.append((f"up_blocks.{i}.resnets.{j}.",
                          _through(f"output_blocks.{idx}.0.", _UNET_RESNET, where)))
            rules.append((f"up_blocks.{i}.attentions.{j}.", _keep(f"output_blocks.{idx}.1.")))
        rules.append((f"up_blocks.{i}.upsamplers.0.",
                      _keep(f"output_blocks.{i * (per + 1) + per}.{2 if has_attention else 1}.")))
    top = {k: v for k, v in state.items() if k.rpartition(".")[0] in _UNET_TOP}
    rest = {k: v for k, v in state.items() if k not in top}
    out = {_rename(k, _UNET_TOP, where): v for k, v in top.items()}
    out.update(_convert(rest, rules, where))
    return out


def vae_to_ldm(state: Mapping) -> dict:
    """AutoencoderKL state dict -> LDM ``AutoencoderKL`` keys (without the model prefix).

    LDM numbers the decoder's up blocks from the bottom (``up.0`` is the last to run), diffusers
    in execution order; attention projections are 1x1 convolutions in LDM, so they get two
    trailing unit dimensions.
    """
    where = "vae"
    n_down = _blocks(state, "encoder.down_blocks.")
    n_up = _blocks(state, "decoder.up_blocks.")
    rules: list[tuple[str, Callable[[str], str]]] = [
        ("quant_conv.", _keep("quant_conv.")), ("post_quant_conv.", _keep("post_quant_conv.")),
    ]
    for part in ("encoder", "decoder"):
        for j in range(2):
            rules.append((f"{part}.mid_block.resnets.{j}.",
                          _through(f"{part}.mid.block_{j + 1}.", _VAE_RESNET, where)))
        rules.append((f"{part}.mid_block.attentions.0.",
                      _through(f"{part}.mid.attn_1.", _VAE_ATTN, where)))
        rules.append((f"{part}.", _through(f"{part}.", _VAE_TOP, where)))
    for i in range(n_down):
        rules.insert(0, (f"encoder.down_blocks.{i}.resnets.",
                         lambda rest, i=i: f"encoder.down.{i}.block." + _indexed(rest, where)))
        rules.insert(0, (f"encoder.down_blocks.{i}.downsamplers.0.",
                         _keep(f"encoder.down.{i}.downsample.")))
    for i in range(n_up):
        ldm = n_up - 1 - i
        rules.insert(0, (f"decoder.up_blocks.{i}.resnets.",
                         lambda rest, ldm=ldm: f"decoder.up.{ldm}.block." + _indexed(rest, where)))
        rules.insert(0, (f"decoder.up_blocks.{i}.upsamplers.0.",
                         _keep(f"decoder.up.{ldm}.upsample.")))
    out = _convert(state, rules, where)
    for key, value in out.items():
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            out[key] = value.reshape(*value.shape, 1, 1).contiguous()
    return out


def _indexed(rest: str, where: str) -> str:
    """``<j>.<resnet param>`` -> ``<j>.<LDM resnet param>``."""
    j, _, name = rest.partition(".")
    return f"{j}." + _rename(name, _VAE_RESNET, where)


def clip_to_ldm(state: Mapping) -> dict:
    """CLIPTextModel state dict -> LDM ``FrozenCLIPEmbedder`` keys (without the model prefix).

    SD 1.x stores the transformers model itself under ``transformer.``, so only the
    ``text_model.`` level matters: transformers >= 5.6 flattened it away, LDM files have it.
    """
    return {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()}


def pipeline_to_ldm(pipe) -> dict:
    """The whole single-file state dict of an SD 1.x pipeline (UNet, VAE, CLIP text encoder)."""
    def tensors(module):
        return {k: v.detach().contiguous() for k, v in module.state_dict().items()}

    state: dict = {}
    for prefix, part in (
        (UNET_PREFIX, unet_to_ldm(tensors(pipe.unet), pipe.unet.config)),
        (VAE_PREFIX, vae_to_ldm(tensors(pipe.vae))),
        (CLIP_PREFIX, clip_to_ldm(tensors(pipe.text_encoder))),
    ):
        state.update({prefix + k: v for k, v in part.items()})
    return state


def save_ldm_checkpoint(pipe, path: str | Path) -> Path:
    """Write ``pipe`` as one LDM-layout ``.safetensors`` file, as A1111/ComfyUI users have them."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file(pipeline_to_ldm(pipe), str(path))
    return path
