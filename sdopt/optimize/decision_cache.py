"""The search's decision, kept in the sdopt cache so that the same call on the same machine
loads the chosen model instead of searching again.

A cold search of SD 1.5 takes minutes; a CI job repeating it on unchanged inputs should take
seconds and, more importantly, pick the same candidate rather than a noisier re-roll. The key
holds everything that could change the pick (weights of the three models, the scheduler, the
prompts, sizes, thresholds, metrics, candidates, device, library versions, sdopt's search rules);
user-callable metrics have no identity the key could hold, so their searches are never reused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from ..version import __version__
from ..cache import fetch_or_build, peek
from ..device import DeviceInfo, library_versions
from ..errors import SdoptError
from ..identity import config_hash, weights_hash
from ..store import write_json
from .metrics import clip_model_path, clip_unavailable_reason
from ..models import denoiser_of
from .optimized import with_unet
from .search import OptimizationResult

log = logging.getLogger(__name__)

SEARCH_CACHE_KIND = "search"
# Bumped when the same inputs can lead to another pick (a new phase, a new rule), so that an
# older decision is not reused. 2: the constrained search tries the bf16 VAE decoder. 3: the
# threshold holds on the worst prompt by default (metric_aggregate, also in the key's settings).
# 4: candidates ordered and bounded, the pick re-timed side by side (exhaustive in the settings).
# 5: CUDA's torch.compile variants with CUDA graphs and diffusers' recipe. 6: CUDA's constrained
# search tries the compiled half-precision VAE decoder. 7: and the half-precision text encoder.
SEARCH_VERSION = 7
RESULT_FILE = "result.json"
MODEL_DIR = "model"


def decision_key(model, source_hash: str, *, device: DeviceInfo, **settings) -> dict[str, Any]:
    """Everything that can change what a search picks (the cache key of its decision)."""
    scheduler = {k: v for k, v in dict(model.scheduler.config).items() if not k.startswith("_")}
    clip = clip_model_path() if clip_unavailable_reason() is None else None
    # Every text tower (SDXL and SD3 have two or three) and the pipeline's class: the same weights
    # as text-to-image and as image-to-image are different searches.
    encoders = {name: weights_hash(module) for name, module in sorted(model.components.items())
                if name.startswith("text_encoder") and module is not None}
    return {"pipeline": type(model).__name__, "unet": source_hash,
            "unet_config": config_hash(denoiser_of(model)),
            "vae": weights_hash(model.vae), "text_encoders": encoders,
            "scheduler": [type(model.scheduler).__name__,
                          json.dumps(scheduler, sort_keys=True, default=str)],
            "clip_model": clip and str(Path(clip).resolve()),
            "settings": settings, "device": device.fingerprint(), "libraries": library_versions(),
            "sdopt": __version__, "search_version": SEARCH_VERSION}


def reuse(model, key: dict[str, Any], device: DeviceInfo, load: Callable):
    """The pipeline a previous identical search chose, loaded from the cache with ``load``
    (``load_model``); None on a miss or when the entry cannot be loaded any more (then the search
    runs, and replaces it)."""
    entry = peek(SEARCH_CACHE_KIND, key)
    if entry is None:
        return None
    try:
        result = OptimizationResult.from_dict(
            json.loads((entry.path / RESULT_FILE).read_text(encoding="utf-8")))
        # Into a new pipeline sharing the user's components: the user's stays untouched.
        optimized = load(entry.path / MODEL_DIR, pipe=with_unet(model, denoiser_of(model)),
                         device=device.kind)
    except (OSError, ValueError, KeyError, SdoptError) as exc:
        log.warning("sdopt: the cached search %s cannot be reused (%s); searching again",
                    entry.key[:12], exc)
        return None
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.meta.get("created_unix", 0)))
    result.notes.insert(0, f"reused the search of {when} from the sdopt cache (entry "
                           f"{entry.key[:12]}; its table is what was measured then): pass "
                           "reuse_search=False (CLI: --fresh-search) to search again")
    optimized.sdopt_result = result
    return optimized


def remember(key: dict[str, Any], optimized, save: Callable) -> None:
    """Keep the decision and the chosen model (written with ``save``, i.e. ``save_model``); a
    cache that cannot be written costs only the reuse, never the optimization."""
    result = optimized.sdopt_result

    def build(tmp: Path) -> dict:
        save(optimized, tmp / MODEL_DIR)
        write_json(tmp / RESULT_FILE, result.to_dict())
        return {"selected": result.selected.id if result.selected else None}

    try:
        fetch_or_build(SEARCH_CACHE_KIND, key, build)
    except (OSError, SdoptError) as exc:
        log.warning("sdopt: the search could not be kept in the cache (%s)", exc)
