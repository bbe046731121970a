"""sdopt: make Stable Diffusion inference fast, and keep it fast.

``optimize_model``/``save_model``/``load_model`` follow Speedster's API for diffusers pipelines.
"""

__version__ = "0.1.0"

from .optimize.api import apply_variant, load_model, optimize_model, save_model  # noqa: E402
from .errors import SdoptError  # noqa: E402
from .models import PRESETS, build_preset, load_pipeline  # noqa: E402

__all__ = ["optimize_model", "save_model", "load_model", "apply_variant", "load_pipeline", "build_preset",
           "PRESETS", "SdoptError", "__version__"]
