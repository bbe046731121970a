"""What a saved model is: a manifest naming the backend, its format version, the variant, the
techniques on top and the identity of the weights it was made from, next to the backend's
artifacts (safe formats only, never pickle).

A manifest is read from a folder a user may have copied, edited or truncated: every field that
loading relies on is checked here, and any problem is one line naming the file and the field.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..version import __version__
from ..backends import BACKENDS, Backend, Variant, get_backend
from ..device import DeviceInfo, detect, library_versions
from ..errors import SdoptError
from ..store import directory_size, write_json

MANIFEST_NAME = "sdopt_manifest.json"
MANIFEST_SCHEMA_VERSION = 1
COMPONENT_DIR = "unet"
# The figures of the search that a saved model carries (load_model puts them back in .info).
METRIC_KEYS = ("metric", "metric_drop", "latency_s", "speedup", "speedup_source",
               "e2e_latency_s", "image_metric", "image_metric_drop", "image_metrics",
               "peak_rss_bytes")  # the search's peak resident memory


def build_manifest(pipeline_class: str, variant: Variant, artifact: dict[str, Any],
                   info: dict[str, Any], dtype, device_kind: str,
                   search: dict[str, Any] | None, component: str = "unet",
                   denoiser=None) -> dict[str, Any]:
    """The manifest of a model whose backend wrote ``artifact`` (what its ``load`` needs);
    ``component``: the pipeline attribute the optimized denoiser replaces (``unet`` or
    ``transformer``), where load_model puts it back. ``search``: the search's table
    (OptimizationResult.to_dict), with what it ran on: sizes and steps (``end_to_end``,
    ``samples``) and, for a pipeline that takes images, the start images' and masks' sha256
    (``input_images``, as results.json's config records them). ``denoiser``: the model it was
    made from, whose family the techniques' words describe (Backend.techniques_for)."""
    backend = BACKENDS[variant.backend]
    techniques = (variant.techniques if denoiser is None
                  else backend.techniques_for(variant, denoiser))
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "sdopt_version": __version__,
        "created_unix": int(time.time()),
        "pipeline_class": pipeline_class,
        "components": {component: {
            "backend": variant.backend, "backend_version": backend.version,
            "variant": variant.name, "precision": variant.precision,
            "options": dict(variant.options), "techniques": list(techniques),
            "path": COMPONENT_DIR, "artifact": artifact,
            "source_hash": info.get("source_hash", ""),
            "config_hash": info.get("config_hash", ""),
            "dtype": str(dtype).replace("torch.", ""),
        }},
        "shapes": info.get("samples", {}),
        # Approximate techniques on top of the backend (re-applied by load_model).
        "techniques": list(info.get("techniques", [])),
        "metrics": {k: info.get(k) for k in METRIC_KEYS},
        "device": detect(device_kind).fingerprint(),
        "libraries": library_versions(),
        "search": search,
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest, with the folder's total size (known only once everything is in)."""
    write_json(directory / MANIFEST_NAME, manifest)
    manifest["size_bytes"] = directory_size(directory)
    write_json(directory / MANIFEST_NAME, manifest)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and structurally validate a saved model's manifest, naming the file on any problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SdoptError(f"saved model '{directory}' not found: expected a directory written by "
                         "sdopt.save_model")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise SdoptError(f"'{path}' is missing: '{directory}' is not a model saved by sdopt")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SdoptError(f"'{path}' is corrupt: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SdoptError(f"'{path}' is corrupt: expected a JSON object")
    version = data.get("schema_version")
    if version != MANIFEST_SCHEMA_VERSION:
        raise SdoptError(f"'{path}': schema_version is {version!r}, this sdopt reads "
                         f"{MANIFEST_SCHEMA_VERSION}; re-run optimize_model and save again")
    for key, kind in (("components", dict), ("sdopt_version", str), ("device", dict)):
        if not isinstance(data.get(key), kind):
            raise SdoptError(f"'{path}' is corrupt: field '{key}' is missing or not a "
                             f"{kind.__name__}")
    for name, comp in data["components"].items():
        for key, kind in (("backend", str), ("backend_version", int), ("variant", str),
                          ("options", dict), ("source_hash", str)):
            if not isinstance(comp, dict) or not isinstance(comp.get(key), kind):
                raise SdoptError(f"'{path}' is corrupt: components.{name}.{key} is missing or "
                                 f"not a {kind.__name__}")
    return data




def denoiser_component(manifest: dict[str, Any], path: Path, expected: str) -> dict[str, Any]:
    """The manifest's entry for the pipeline's denoiser (``expected``: ``unet`` or
    ``transformer``), refused when the model was saved from the other kind of pipeline."""
    components = manifest["components"]
    if expected not in components:
        saved = ", ".join(sorted(components)) or "none"
        raise SdoptError(f"'{path}' holds an optimized {saved}, the given pipe's denoiser is its "
                         f"{expected}: pass a pipeline of the family the model was made from "
                         f"({manifest.get('pipeline_class', 'unknown')})")
    return components[expected]


def resolve_variant(component: dict[str, Any], path: Path,
                    device: DeviceInfo) -> tuple[Backend, Variant]:
    """The backend and variant a manifest component names, refused when this sdopt reads another
    format of that backend's artifacts or the variant does not exist on ``device``."""
    try:
        backend = get_backend(component["backend"])
    except SdoptError:
        raise SdoptError(f"'{path}': backend '{component['backend']}' is not known to this "
                         f"sdopt ({__version__}): re-run optimize_model") from None
    if component["backend_version"] != backend.version:
        raise SdoptError(
            f"'{path}' was saved by backend {backend.name} format "
            f"v{component['backend_version']}, this sdopt ({__version__}) reads "
            f"v{backend.version}: re-run optimize_model and save again")
    for variant in backend.variants(device):
        if variant.name == component["variant"]:
            return backend, variant
    raise SdoptError(f"'{path}': variant '{component['variant']}' of backend {backend.name} is "
                     f"not available on {device.kind}: re-run optimize_model on this machine")
