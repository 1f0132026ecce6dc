"""Image quality metrics for SR evaluation.

Full reference, on the Y channel (ITU-R BT.601) as BasicSR and the SR literature report them:
`psnr_y`, `ssim_y`. No reference: `niqe` (BasicSR's `calculate_niqe`). Learned perceptual
distance: `LPIPS` (the `lpips` package's AlexNet / VGG variants, in JAX).
"""

from sr_jax.metrics.lpips import LPIPS
from sr_jax.metrics.niqe_metric import niqe  # module named apart from the function
from sr_jax.metrics.psnr_ssim import psnr_y, rgb_to_y, ssim_y, to_uint8

__all__ = ["psnr_y", "ssim_y", "rgb_to_y", "to_uint8", "niqe", "LPIPS"]
