"""Side-by-side comparison figures with zoomed crops and PSNR-Y (or any scores) in the captions.

Layout of `zoom_comparison_figure`: the HR image, downsized, with the crop marked in red, then the
crop of every panel (bicubic | each model | HR) enlarged with nearest-neighbour pixels, each
captioned with its name and full-image PSNR-Y (border = scale), or the caption function's text
(`evaluate.Scorer.caption` adds NIQE / LPIPS on a second line).
"""

from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from sr_jax import metrics

CAPTION_HEIGHT = 18  # one line; each further line adds LINE_HEIGHT
LINE_HEIGHT = 12
GAP = 8
CHAR_WIDTH = 6  # of PIL's default bitmap font, to shorten captions that would not fit
MARK_COLOR = (230, 25, 25)


def _captioned(image: np.ndarray | Image.Image, caption: str, lines: int = 1) -> Image.Image:
  """`image` under `caption` (its lines cut to the tile's width), with room for `lines` lines."""
  tile = image if isinstance(image, Image.Image) else Image.fromarray(metrics.to_uint8(image))
  max_chars = max(4, (tile.width - 6) // CHAR_WIDTH)
  caption = "\n".join(
    line[: max_chars - 1] + "~" if len(line) > max_chars else line for line in caption.split("\n")
  )
  height = CAPTION_HEIGHT + LINE_HEIGHT * (max(lines, caption.count("\n") + 1) - 1)
  canvas = Image.new("RGB", (tile.width, tile.height + height), "white")
  canvas.paste(tile.convert("RGB"), (0, height))
  ImageDraw.Draw(canvas).multiline_text((4, 3), caption, fill="black", spacing=1)
  return canvas


def _side_by_side(tiles: Sequence[Image.Image]) -> Image.Image:
  height = max(t.height for t in tiles)
  figure = Image.new("RGB", (sum(t.width for t in tiles) + GAP * (len(tiles) - 1), height), "white")
  x = 0
  for tile in tiles:
    figure.paste(tile, (x, 0))
    x += tile.width + GAP
  return figure


def auto_crop(bicubic: np.ndarray, hr: np.ndarray, size: int) -> tuple[int, int]:
  """(top, left) of the size x size HR window where bicubic's luma error is largest: where SR
  has the most to show."""
  error = (
    metrics.rgb_to_y(metrics.to_uint8(bicubic)) - metrics.rgb_to_y(metrics.to_uint8(hr))
  ) ** 2
  integral = np.pad(error.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
  sums = (
    integral[size:, size:]
    - integral[:-size, size:]
    - integral[size:, :-size]
    + integral[:-size, :-size]
  )
  top, left = np.unravel_index(np.argmax(sums), sums.shape)
  return int(top), int(left)


def default_crop_size(hr: np.ndarray) -> int:
  """A quarter of the short side, at least 16 and at most 128 HR pixels (never beyond the image)."""
  return int(min(min(hr.shape[:2]), max(16, min(128, min(hr.shape[:2]) // 4))))


def zoom_comparison_figure(
  panels: Sequence[tuple[str, np.ndarray]],
  hr: np.ndarray,
  scale: int,
  crop: tuple[int, int, int] | None = None,
  zoom_size: int = 192,
  title: str = "",
  caption: Callable[[np.ndarray], str] | None = None,
  hr_caption: str = "HR",
) -> Image.Image:
  """HR overview with the crop marked, then the zoomed crop of each panel and of HR.

  Args:
    panels: (name, HR-sized RGB image in [0, 1] or uint8) in display order, bicubic first by
      convention; each caption gets the panel's full-image PSNR-Y against `hr`.
    hr: the ground truth, [H, W, 3].
    scale: SR factor: the border cropped for PSNR-Y.
    crop: (top, left, size) in HR pixels; default: `default_crop_size` where the first panel's
      error is largest (`auto_crop`).
    zoom_size: side of each zoomed crop in the figure, in pixels.
    title: caption of the overview (e.g. the image name).
    caption: panel image -> the caption text after the panel's name (may hold a line break);
      default: its full-image PSNR-Y against `hr`.
    hr_caption: caption of the HR crop.

  Returns:
    The figure as a PIL RGB image.
  """
  for name, image in panels:
    if image.shape != hr.shape:
      raise ValueError(f"panel {name!r} has shape {image.shape}, HR has {hr.shape}")
  if crop is None:
    size = default_crop_size(hr)
    crop = (*auto_crop(panels[0][1], hr, size), size) if panels else (0, 0, size)
  top, left, size = crop
  if size < 1 or top < 0 or left < 0 or top + size > hr.shape[0] or left + size > hr.shape[1]:
    raise ValueError(
      f"crop (top={top}, left={left}, size={size}) is not inside the {hr.shape[1]}x{hr.shape[0]} "
      "HR image"
    )

  def zoomed(image: np.ndarray) -> Image.Image:
    patch = metrics.to_uint8(image[top : top + size, left : left + size])
    return Image.fromarray(patch).resize((zoom_size, zoom_size), Image.Resampling.NEAREST)

  overview = Image.fromarray(metrics.to_uint8(hr))
  shrink = zoom_size / overview.height
  overview = overview.resize(
    (max(1, round(overview.width * shrink)), zoom_size), Image.Resampling.LANCZOS
  )
  box = [left * shrink, top * shrink, (left + size) * shrink - 1, (top + size) * shrink - 1]
  ImageDraw.Draw(overview).rectangle(box, outline=MARK_COLOR, width=2)
  if caption is None:

    def caption(image):
      return f"{metrics.psnr_y(image, hr, scale):.2f} dB"

  texts = [f"{name} {caption(image)}" for name, image in panels] + [hr_caption]
  lines = max(text.count("\n") + 1 for text in texts)  # all tiles the same height
  tiles = [_captioned(overview, title or f"HR x{scale}, crop {size}px", lines)]
  tiles += [_captioned(zoomed(image), text, lines) for (_, image), text in zip(panels, texts)]
  tiles.append(_captioned(zoomed(hr), hr_caption, lines))
  return _side_by_side(tiles)
