"""sdopt: make Stable Diffusion inference fast, and keep it fast.

``optimize_model``/``save_model``/``load_model`` follow Speedster's API for diffusers pipelines.
"""

from .errors import SdoptError
from .privacy import decline_telemetry_without_consent
from .models import PRESETS, build_preset, load_pipeline
from .optimize.api import apply_variant, load_model, optimize_model, save_model
from .version import __version__

decline_telemetry_without_consent()

__all__ = ["optimize_model", "save_model", "load_model", "apply_variant", "load_pipeline", "build_preset",
           "PRESETS", "SdoptError", "__version__"]
