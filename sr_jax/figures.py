"""Side-by-side comparison figures: bicubic | model | HR, with PSNR-Y in the captions."""

import numpy as np
from PIL import Image, ImageDraw

from sr_jax import metrics

CAPTION_HEIGHT = 18


def _captioned(image: np.ndarray, caption: str) -> Image.Image:
  tile = Image.fromarray(metrics.to_uint8(image))
  canvas = Image.new("RGB", (tile.width, tile.height + CAPTION_HEIGHT), "white")
  canvas.paste(tile, (0, CAPTION_HEIGHT))
  ImageDraw.Draw(canvas).text((4, 3), caption, fill="black")
  return canvas


def comparison_figure(bicubic: np.ndarray, sr: np.ndarray, hr: np.ndarray, scale: int,
                      model_name: str = "model") -> Image.Image:
  """bicubic | model | HR side by side (all HR-sized RGB in [0, 1] or uint8)."""
  tiles = [_captioned(bicubic, f"bicubic {metrics.psnr_y(bicubic, hr, scale):.2f} dB"),
           _captioned(sr, f"{model_name} {metrics.psnr_y(sr, hr, scale):.2f} dB"),
           _captioned(hr, "HR")]
  figure = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), tiles[0].height), "white")
  x = 0
  for tile in tiles:
    figure.paste(tile, (x, 0))
    x += tile.width + 8
  return figure
