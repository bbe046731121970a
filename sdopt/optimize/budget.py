"""The share of the time budget the UNet stage leaves for the stages after it.

The budget counts from the ``optimize_model`` call and was checked only between candidates, so a
UNet stage that used it up (one NNCF calibration is 260 s of a 600 s budget on sd15 at 256 px)
left nothing for the component stage, where the per-image gain of a bf16 or OpenVINO VAE
decoder is (the exhaustive sd15 search picked it; the ordered one never reached it). So while
the UNet stage runs, the time the later stages need with the best pick so far is kept out of
its share: each later setting makes every timed image once with the pick's UNet, after a
conversion, and the side-by-side rounds follow.
"""

from __future__ import annotations

from dataclasses import dataclass

# A component setting's build before its images: the OpenVINO VAE decoder converts in 12 s and
# the text encoder in 15 s on sd15 at 256 px (benchmarks/results/search_cold_sd15.json); a
# bf16 copy of the VAE takes 4 s.
SETTING_BUILD_S = 15.0
# The UNet stage keeps at least the other half: its pick is where most of the speedup is.
MAX_RESERVE_SHARE = 0.5


@dataclass(frozen=True)
class LaterStages:
    """What runs after the UNet stage, known before it starts."""

    settings: int  # technique or component settings that will be tried (stacks included)
    images_per_setting: int  # timed generations per setting
    image_s: float  # the original pipeline's time per image
    unet_calls_per_image: int
    confirm_s: float  # the side-by-side rounds' time caps
    # the fewest image rounds the side-by-side confirmation runs, whatever its cap: each makes
    # an image of the original and one of the pick (sd15 at 256 px: three rounds took 76 s
    # where the cap is 45 s)
    confirm_rounds: int = 0

    def image_s_with(self, original_unet_s: float, best_unet_s: float) -> float:
        """The time per image with the best UNet so far: the original's UNet share (never all
        of the image: the VAE and the text encoder run too) sped up by the UNet's ratio."""
        unet_s = min(self.unet_calls_per_image * original_unet_s, 0.95 * self.image_s)
        return self.image_s - unet_s * (1.0 - best_unet_s / original_unet_s)

    def reserve_s(self, original_unet_s: float, best_unet_s: float, budget_s: float) -> float:
        """The seconds of ``budget_s`` the UNet stage leaves for the later stages."""
        if not original_unet_s or not best_unet_s:
            return min(self.confirm_s, MAX_RESERVE_SHARE * budget_s)
        image_s = self.image_s_with(original_unet_s, best_unet_s)
        confirm_s = max(self.confirm_s, self.confirm_rounds * (self.image_s + image_s))
        need = max(self.settings, 0) * (SETTING_BUILD_S + self.images_per_setting * image_s) \
            + confirm_s
        return min(need, MAX_RESERVE_SHARE * budget_s)
