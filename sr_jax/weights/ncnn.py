"""Read ncnn `.param` / `.bin` pairs of the Real-ESRGAN family, without ncnn.

`read_ncnn(param_path)` parses the text graph and the weight blobs, checks that the graph is exactly
an `RRDBNet` or an `SRVGGNetCompact` (layer by layer, including how blobs are wired), infers its
hyperparameters, and returns the weights under the official PyTorch key names (OIHW kernels), so
the `.pth` and the ncnn paths share one key mapping. `checkpoint.read_checkpoint` calls it for a
`.param` (or a `.bin` with a `.param` beside it).

Formats (ncnn wiki "param and model file structure"):
- `.param`: magic 7767517, "layer_count blob_count", then one line per layer:
  `type name n_bottoms n_tops bottoms... tops... key=value...`; a key <= -23300 holds an array
  `count,v1,v2,...` for id `-23300 - key`; values with '.' or 'e' are floats.
- `.bin`: the weights of the layers in `.param` order. A Convolution's kernel starts with a
  4-byte flag word (0 = float32, 0x01306B47 = float16, padded to 4 bytes); its bias and PReLU
  slopes are raw float32 without a flag.

Parameters are typed as ncnn's layers read them (`_PARAM_KINDS`): a float where ncnn has an int,
an array where it has a scalar, a non-finite float (`1e999`) or an int beyond int32 is a format
error naming file, line and layer, as are two layers with one name or two producers of one blob
(ncnn matches both by name, so either would silently wire or load the wrong weights).
"""

import dataclasses
import math
import os
import struct

import numpy as np

from sr_jax.weights.errors import WeightsError

PARAM_MAGIC = 7767517
FLAG_FP32 = 0x00000000
FLAG_FP16 = 0x01306B47
_OTHER_FLAGS = {0x000D4B38: "int8", 0x0002C056: "float32 with extra scaling"}

# Layer types the two architectures use; anything else is rejected by name.
KNOWN_LAYER_TYPES = (
  "Input",
  "Split",
  "Convolution",
  "PReLU",
  "PixelShuffle",
  "Interp",
  "BinaryOp",
  "Concat",
  "Eltwise",
)

# Fused activations of ncnn's Convolution (param 9) that the architectures use.
_ACT_NONE, _ACT_LEAKY = 0, 2
_INTERP_NEAREST, _INTERP_BICUBIC = 1, 3

# How ncnn's layers read their parameter ids ("f": float, "f[]": float array); every id not
# listed is an int. From the ncnn sources of each layer type in KNOWN_LAYER_TYPES.
_PARAM_KINDS = {
  "Convolution": {10: "f[]", 18: "f"},  # activation_params, pad_value
  "Interp": {1: "f", 2: "f"},  # height_scale, width_scale
  "BinaryOp": {2: "f"},  # the scalar b
  "Eltwise": {1: "f[]"},  # coefficients
}
_INT32_RANGE = range(-(2**31), 2**31)


class NcnnFormatError(WeightsError):
  """A `.param` / `.bin` pair that is not a well-formed Real-ESRGAN-family ncnn model."""


@dataclasses.dataclass(frozen=True)
class NcnnLayer:
  type: str
  name: str
  bottoms: tuple[str, ...]
  tops: tuple[str, ...]
  params: dict
  line: int  # 1-based line in the .param, for error messages

  def where(self, path) -> str:
    return f"{os.fspath(path)}:{self.line}: layer {self.name!r} ({self.type})"


@dataclasses.dataclass
class NcnnModel:
  """An ncnn Real-ESRGAN-family model mapped onto the official PyTorch architecture.

  Attributes:
    arch: "rrdbnet" or "srvgg_compact".
    arch_kwargs: constructor arguments of `RRDBNet` / `SRVGGNetCompact` (scale, num_feat, ...).
    state: official PyTorch state-dict keys -> float32 numpy arrays (conv kernels OIHW).
    input_blob, output_blob: ncnn blob names, for running the same files with ncnn.
    weight_dtype: "float16", "float32" or "mixed": storage of the conv kernels in the `.bin`.
  """

  arch: str
  arch_kwargs: dict
  state: dict[str, np.ndarray]
  input_blob: str
  output_blob: str
  weight_dtype: str


def _parse_value(text: str):
  if any(ch in text for ch in ".eE"):
    return float(text)
  return int(text)


def parse_param(param_path) -> list[NcnnLayer]:
  """Parses an ncnn text `.param` file into its layers (in file order)."""
  try:
    with open(param_path, "r", encoding="utf-8") as f:
      lines = f.read().splitlines()
  except UnicodeDecodeError as e:
    raise NcnnFormatError(
      f"{os.fspath(param_path)}: not an ncnn text .param (binary content: {e})"
    ) from e
  if not lines or lines[0].strip() != str(PARAM_MAGIC):
    first = lines[0].strip()[:40] if lines else "<empty file>"
    raise NcnnFormatError(
      f"{os.fspath(param_path)}:1: not an ncnn text .param: magic must be {PARAM_MAGIC}, "
      f"got {first!r}"
    )
  try:
    layer_count, _ = (int(v) for v in lines[1].split())
  except (IndexError, ValueError) as e:
    raise NcnnFormatError(
      f"{os.fspath(param_path)}:2: expected 'layer_count blob_count', got "
      f"{lines[1] if len(lines) > 1 else '<missing>'!r}"
    ) from e
  layers = []
  name_lines: dict[str, int] = {}
  blob_lines: dict[str, int] = {}
  for lineno, line in enumerate(lines[2:], start=3):
    fields = line.split()
    if not fields:
      continue
    layer = _parse_layer_line(fields, lineno, param_path)
    if layer.name in name_lines:
      raise NcnnFormatError(
        f"{layer.where(param_path)}: the layer name is already used on line "
        f"{name_lines[layer.name]}; ncnn finds weights and layers by name"
      )
    name_lines[layer.name] = lineno
    for blob in layer.tops:
      if blob in blob_lines:
        raise NcnnFormatError(
          f"{layer.where(param_path)}: blob {blob!r} is already produced on line "
          f"{blob_lines[blob]}; every blob has one producer"
        )
      blob_lines[blob] = lineno
    layers.append(layer)
  if len(layers) != layer_count:
    raise NcnnFormatError(
      f"{os.fspath(param_path)}: header declares {layer_count} layers, file has {len(layers)}"
    )
  return layers


def _parse_layer_line(fields: list[str], lineno: int, param_path) -> NcnnLayer:
  where = f"{os.fspath(param_path)}:{lineno}"
  try:
    layer_type, name = fields[0], fields[1]
    n_bottoms, n_tops = int(fields[2]), int(fields[3])
    blobs = fields[4 : 4 + n_bottoms + n_tops]
    if len(blobs) != n_bottoms + n_tops:
      raise ValueError(f"{n_bottoms} bottoms + {n_tops} tops declared, {len(blobs)} names given")
    params = {}
    for item in fields[4 + n_bottoms + n_tops :]:
      key_text, value_text = item.split("=", 1)
      key = int(key_text)
      if key <= -23300:  # array parameter: "-233xx=count,v1,v2,..."
        values = value_text.split(",")
        count = int(values[0])
        if count != len(values) - 1:
          raise ValueError(f"array {item!r} declares {count} values, has {len(values) - 1}")
        params[-23300 - key] = tuple(_parse_value(v) for v in values[1:])
      else:
        params[key] = _parse_value(value_text)
  except (IndexError, ValueError) as e:
    raise NcnnFormatError(f"{where}: malformed layer line {' '.join(fields)[:120]!r}: {e}") from e
  if layer_type not in KNOWN_LAYER_TYPES:
    raise NcnnFormatError(
      f"{where}: layer {name!r} has unsupported type {layer_type!r}; the Real-ESRGAN "
      f"family uses only {', '.join(KNOWN_LAYER_TYPES)}"
    )
  kinds = _PARAM_KINDS.get(layer_type, {})
  for key, value in params.items():
    params[key] = _typed_param(value, kinds.get(key, "i"), f"{where}: layer {name!r} param {key}")
  return NcnnLayer(
    layer_type, name, tuple(blobs[:n_bottoms]), tuple(blobs[n_bottoms:]), params, lineno
  )


def _typed_param(value, kind: str, where: str):
  """`value` as ncnn's layer reads it: kind "i" (int), "f" (float) or "f[]" (float array)."""
  if isinstance(value, tuple) != kind.endswith("[]"):
    expected = "an array (-23300-id=count,...)" if kind.endswith("[]") else "a single value"
    raise NcnnFormatError(f"{where}: ncnn reads {expected} here, got {value!r:.80}")
  for item in value if isinstance(value, tuple) else (value,):
    if isinstance(item, float) and not math.isfinite(item):
      raise NcnnFormatError(f"{where}: {item} is not a finite number")
    if isinstance(item, int) and item not in _INT32_RANGE:
      raise NcnnFormatError(f"{where}: {item} does not fit ncnn's 32-bit int")
    if isinstance(item, float) and kind == "i":
      raise NcnnFormatError(f"{where}: ncnn reads an int here, got the float {item!r}")
  if kind == "f":
    return float(value)
  if kind == "f[]":
    return tuple(float(item) for item in value)
  return value


# --- .bin ----------------------------------------------------------------------------------------


class _BinReader:
  """Sequential reader of an ncnn `.bin` that names the layer on every error."""

  def __init__(self, bin_path):
    self.path = os.fspath(bin_path)
    with open(bin_path, "rb") as f:
      self.data = f.read()
    self.offset = 0

  def _take(self, nbytes: int, what: str) -> bytes:
    end = self.offset + nbytes
    if nbytes < 0:
      raise NcnnFormatError(f"{self.path}: {what}: negative size ({nbytes} bytes)")
    if end > len(self.data):
      raise NcnnFormatError(
        f"{self.path}: truncated .bin: {what} needs {nbytes} bytes at offset {self.offset}, "
        f"only {len(self.data) - self.offset} left (file has {len(self.data)} bytes)"
      )
    chunk = self.data[self.offset : end]
    self.offset = end
    return chunk

  def raw_fp32(self, count: int, what: str) -> np.ndarray:
    return np.frombuffer(self._take(4 * count, what), "<f4").astype(np.float32)

  def flagged(self, count: int, what: str) -> tuple[np.ndarray, str]:
    """Reads a weight blob led by its storage flag word; returns (float32 values, stored dtype)."""
    (tag,) = struct.unpack("<I", self._take(4, f"{what} (flag word)"))
    if tag == FLAG_FP16:
      padded = (2 * count + 3) // 4 * 4
      return np.frombuffer(self._take(padded, what)[: 2 * count], "<f2").astype(
        np.float32
      ), "float16"
    if tag == FLAG_FP32:
      return self.raw_fp32(count, what), "float32"
    kind = _OTHER_FLAGS.get(tag, "quantised (lookup table)")
    raise NcnnFormatError(
      f"{self.path}: {what}: unsupported weight storage flag 0x{tag:08X} ({kind}) at offset "
      f"{self.offset - 4}; only float32 (0x{FLAG_FP32:08X}) and float16 (0x{FLAG_FP16:08X})"
    )

  def check_consumed(self):
    if self.offset != len(self.data):
      raise NcnnFormatError(
        f"{self.path}: {len(self.data) - self.offset} bytes left after the last layer's weights "
        f"(read {self.offset} of {len(self.data)}): the .bin does not belong to this .param"
      )


def _conv_kernel_shape(layer: NcnnLayer, param_path) -> tuple[int, int, int, int]:
  p = layer.params
  out_ch, kw = p.get(0, 0), p.get(1, 0)
  kh, size = p.get(11, kw), p.get(6, 0)
  if out_ch <= 0 or kw <= 0 or kh <= 0 or size <= 0 or size % (out_ch * kh * kw):
    raise NcnnFormatError(
      f"{layer.where(param_path)}: weight_data_size 6={size} is not num_output 0={out_ch} x "
      f"kernel {kh}x{kw} x input channels"
    )
  return out_ch, size // (out_ch * kh * kw), kh, kw


def read_weights(layers: list[NcnnLayer], param_path, bin_path) -> tuple[dict, set]:
  """Reads every layer's blobs from `bin_path` in `.param` order.

  Returns ({layer name: {"weight": array, "bias": array}}, set of kernel storage dtypes); conv
  kernels come back OIHW float32, PReLU slopes as "weight" (as in PyTorch).
  """
  reader = _BinReader(bin_path)
  weights, dtypes = {}, set()
  for layer in layers:
    what = f"layer {layer.name!r} ({layer.type}, {os.fspath(param_path)}:{layer.line})"
    if layer.type == "Convolution":
      shape = _conv_kernel_shape(layer, param_path)
      kernel, dtype = reader.flagged(math.prod(shape), f"{what} weight")
      dtypes.add(dtype)
      blobs = {"weight": kernel.reshape(shape)}
      if layer.params.get(5, 0):
        blobs["bias"] = reader.raw_fp32(shape[0], f"{what} bias")
      weights[layer.name] = blobs
    elif layer.type == "PReLU":
      weights[layer.name] = {"weight": reader.raw_fp32(layer.params.get(0, 1), f"{what} slopes")}
  reader.check_consumed()
  return weights, dtypes


# --- graph -> architecture ------------------------------------------------------------------------


class _Graph:
  """The layers without `Split` (whose tops are aliases of its bottom), consumed front to back."""

  def __init__(self, layers: list[NcnnLayer], param_path):
    self.path = param_path
    self.alias = {}
    self.layers = []
    for layer in layers:
      if layer.type == "Split":
        for top in layer.tops:
          self.alias[top] = self.blob(layer.bottoms[0])
      else:
        self.layers.append(layer)
    self.pos = 0

  def blob(self, name: str) -> str:
    return self.alias.get(name, name)

  def bottoms(self, layer: NcnnLayer) -> tuple[str, ...]:
    return tuple(self.blob(b) for b in layer.bottoms)

  def peek(self) -> NcnnLayer | None:
    return self.layers[self.pos] if self.pos < len(self.layers) else None

  def fail(self, layer: NcnnLayer | None, message: str):
    where = layer.where(self.path) if layer else f"{os.fspath(self.path)}: end of file"
    raise NcnnFormatError(f"{where}: {message}")

  def take(self, layer_type: str, role: str, bottoms: tuple[str, ...] | None = None) -> NcnnLayer:
    """Next layer: must be `layer_type` reading exactly `bottoms` (blob names, after Split)."""
    layer = self.peek()
    if layer is None or layer.type != layer_type:
      self.fail(layer, f"expected {layer_type} ({role}) here")
    if bottoms is not None and self.bottoms(layer) != tuple(bottoms):
      self.fail(
        layer, f"{role} should read blobs {list(bottoms)}, reads {list(self.bottoms(layer))}"
      )
    if len(layer.tops) != 1:
      self.fail(layer, f"{role} should have one output blob, has {len(layer.tops)}")
    self.pos += 1
    return layer

  def conv(
    self, role: str, bottom: str, in_ch: int | None, out_ch: int | None, leaky: bool
  ) -> NcnnLayer:
    """A 3x3 / stride 1 / pad 1 conv with bias, optionally with fused LeakyReLU(0.2)."""
    layer = self.take("Convolution", role, (bottom,))
    p = layer.params
    o, i, kh, kw = _conv_kernel_shape(layer, self.path)
    geometry = (
      kh,
      kw,
      p.get(2, 1),
      p.get(12, p.get(2, 1)),
      p.get(3, 1),
      p.get(13, p.get(3, 1)),
      p.get(4, 0),
      p.get(5, 0),
      p.get(19, 0),
      p.get(8, 0),
    )
    if geometry != (3, 3, 1, 1, 1, 1, 1, 1, 0, 0) or any(k in p for k in (14, 15, 16)):
      self.fail(
        layer,
        f"{role} must be a 3x3 conv, stride 1, dilation 1, padding 1, with bias, float weights; "
        f"params are {p}",
      )
    if (in_ch is not None and i != in_ch) or (out_ch is not None and o != out_ch):
      self.fail(layer, f"{role} has {i}->{o} channels, expected {in_ch or i}->{out_ch or o}")
    act = p.get(9, _ACT_NONE)
    if leaky:
      slope = p.get(10, (0.0,))
      if act != _ACT_LEAKY or len(slope) != 1 or abs(slope[0] - 0.2) > 1e-6:
        self.fail(
          layer, f"{role} should have a fused LeakyReLU(0.2) (9=2 -23310=1,0.2); params are {p}"
        )
    elif act != _ACT_NONE:
      self.fail(layer, f"{role} should have no fused activation, has 9={act}")
    return layer

  def top(self, layer: NcnnLayer) -> str:
    return layer.tops[0]


def _eltwise_residual(graph: _Graph, role: str, branch: str, identity: str) -> NcnnLayer:
  """`branch * 0.2 + identity` as an ncnn Eltwise sum with coefficients."""
  layer = graph.take("Eltwise", role)
  pairs = dict(zip(graph.bottoms(layer), layer.params.get(1, (1.0, 1.0))))
  if (
    layer.params.get(0, 1) != 1
    or set(pairs) != {branch, identity}
    or not math.isclose(pairs[branch], 0.2, rel_tol=1e-6)
    or not math.isclose(pairs[identity], 1.0)
  ):
    graph.fail(
      layer,
      f"{role} should be Eltwise sum 0.2*{branch} + 1.0*{identity}; it reads "
      f"{list(graph.bottoms(layer))} with params {layer.params}",
    )
  return layer


def _nearest_interp(graph: _Graph, role: str, bottom: str, factor: int | None) -> NcnnLayer:
  layer = graph.take("Interp", role, (bottom,))
  p = layer.params
  scale_h, scale_w = p.get(1, 1.0), p.get(2, 1.0)
  if (
    p.get(0, 0) != _INTERP_NEAREST
    or scale_h != scale_w
    or scale_h != round(scale_h)
    or scale_h < 1
    or (factor is not None and scale_h != factor)
    or p.get(3, 0)
    or p.get(4, 0)
    or p.get(6, 0)
  ):
    graph.fail(
      layer, f"{role} should be a nearest Interp by {factor or 'an integer factor'}; params are {p}"
    )
  return layer


def _map_rrdbnet(graph: _Graph, data: str) -> tuple[dict, dict, str]:
  """Input, conv_first, RRDB x N (3 RDBs of 5 convs each), conv_body + add, 2 x (nearest x2, conv),
  conv_hr, conv_last. Returns (arch kwargs, {PyTorch module name: ncnn layer name}, output blob)."""
  modules = {}

  def put(key: str, layer: NcnnLayer):
    modules[key] = layer.name

  first = graph.conv("conv_first", data, 3, None, leaky=False)
  num_feat = int(first.params[0])
  put("conv_first", first)
  feat = x = graph.top(first)
  num_grow_ch, block = None, 0
  while (
    (layer := graph.peek()) is not None
    and layer.type == "Convolution"
    and graph.bottoms(layer) == (x,)
    and layer.params.get(9, 0) == _ACT_LEAKY
  ):
    rrdb_in = x
    for r in (1, 2, 3):
      rdb_in, outs = x, [x]
      for k in range(1, 5):
        role = f"body.{block}.rdb{r}.conv{k}"
        src = (
          rdb_in
          if k == 1
          else graph.top(graph.take("Concat", f"concat before {role}", tuple(outs)))
        )
        # The growth rate is read from the very first conv; every later shape is then checked.
        conv = graph.conv(
          role, src, num_feat + (k - 1) * (num_grow_ch or 0), num_grow_ch, leaky=True
        )
        num_grow_ch = num_grow_ch or int(conv.params[0])
        put(role, conv)
        outs.append(graph.top(conv))
      role = f"body.{block}.rdb{r}.conv5"
      cat = graph.take("Concat", f"concat before {role}", tuple(outs))
      conv5 = graph.conv(role, graph.top(cat), num_feat + 4 * num_grow_ch, num_feat, leaky=False)
      put(role, conv5)
      x = graph.top(
        _eltwise_residual(graph, f"body.{block}.rdb{r} residual", graph.top(conv5), rdb_in)
      )
    x = graph.top(_eltwise_residual(graph, f"body.{block} residual", x, rrdb_in))
    block += 1
  if block == 0:
    graph.fail(
      graph.peek(), "expected the first RRDB block (a conv with fused LeakyReLU reading conv_first)"
    )
  conv_body = graph.conv("conv_body", x, num_feat, num_feat, leaky=False)
  put("conv_body", conv_body)
  add = graph.take("BinaryOp", "conv_first + conv_body")
  if (
    set(graph.bottoms(add)) != {feat, graph.top(conv_body)}
    or add.params.get(0, 0) != 0
    or add.params.get(1, 0)
  ):
    graph.fail(
      add, f"should add conv_first ({feat}) and conv_body ({graph.top(conv_body)}) outputs"
    )
  x = graph.top(add)
  for key in ("conv_up1", "conv_up2"):
    up = _nearest_interp(graph, f"nearest x2 before {key}", x, 2)
    conv = graph.conv(key, graph.top(up), num_feat, num_feat, leaky=True)
    put(key, conv)
    x = graph.top(conv)
  conv_hr = graph.conv("conv_hr", x, num_feat, num_feat, leaky=True)
  put("conv_hr", conv_hr)
  conv_last = graph.conv("conv_last", graph.top(conv_hr), num_feat, 3, leaky=False)
  put("conv_last", conv_last)
  kwargs = dict(scale=4, num_feat=num_feat, num_block=block, num_grow_ch=num_grow_ch)
  return kwargs, modules, graph.top(conv_last)


def _map_srvgg_compact(graph: _Graph, data: str) -> tuple[dict, dict, str]:
  """Input, (conv, PReLU) x (num_conv + 1), conv, PixelShuffle, nearest Interp of the input, add,
  and optionally a bicubic Interp to the final scale (ncnn x2 / x3 animevideov3)."""
  modules = {}
  x, index, num_feat = data, 0, None
  while graph.peek() is not None and graph.peek().type == "Convolution":
    following = graph.layers[graph.pos + 1 : graph.pos + 2]
    if not following or following[0].type != "PReLU":
      break  # the last conv, before the pixel shuffle
    conv = graph.conv(f"body.{index}", x, 3 if index == 0 else num_feat, num_feat, leaky=False)
    num_feat = num_feat or int(conv.params[0])
    prelu = graph.take("PReLU", f"body.{index + 1}", (graph.top(conv),))
    if prelu.params.get(0, 1) != num_feat:
      graph.fail(
        prelu, f"body.{index + 1} should have {num_feat} slopes, has 0={prelu.params.get(0, 1)}"
      )
    modules[f"body.{index}"], modules[f"body.{index + 1}"] = conv.name, prelu.name
    x, index = graph.top(prelu), index + 2
  if num_feat is None:
    graph.fail(graph.peek(), "expected the first conv + PReLU of SRVGGNetCompact")
  last = graph.conv(f"body.{index}", x, num_feat, None, leaky=False)
  modules[f"body.{index}"] = last.name
  shuffle = graph.take("PixelShuffle", "upsampler", (graph.top(last),))
  upscale = int(shuffle.params.get(0, 1))
  if shuffle.params.get(1, 0) != 0 or int(last.params[0]) != 3 * upscale * upscale:
    graph.fail(
      shuffle,
      f"upsampler should be a PyTorch-order PixelShuffle by r with 3*r*r = {int(last.params[0])} "
      f"input channels; params are {shuffle.params}",
    )
  base = _nearest_interp(graph, "nearest-upsampled input", data, upscale)
  add = graph.take("BinaryOp", "output + upsampled input")
  if (
    set(graph.bottoms(add)) != {graph.top(shuffle), graph.top(base)}
    or add.params.get(0, 0) != 0
    or add.params.get(1, 0)
  ):
    graph.fail(
      add,
      "should add the pixel-shuffle output and the upsampled input, reads "
      f"{list(graph.bottoms(add))}",
    )
  out, scale = graph.top(add), upscale
  if (resize := graph.peek()) is not None and resize.type == "Interp":
    resize = graph.take("Interp", "output resize", (out,))
    p = resize.params
    factor = p.get(1, 1.0) * upscale
    if (
      p.get(0, 0) != _INTERP_BICUBIC
      or p.get(1) != p.get(2)
      or abs(factor - round(factor)) > 1e-4
      or round(factor) < 1
      or p.get(3, 0)
      or p.get(4, 0)
      or p.get(6, 0)
    ):
      graph.fail(
        resize, f"output resize should be a bicubic Interp to an integer scale; params are {p}"
      )
    out, scale = graph.top(resize), int(round(factor))
  num_conv = index // 2 - 1
  kwargs = dict(
    upscale=upscale, num_feat=num_feat, num_conv=num_conv, act_type="prelu", scale=scale
  )
  return kwargs, modules, out


def read_ncnn(param_path, bin_path=None) -> NcnnModel:
  """Reads an ncnn Real-ESRGAN-family model (`bin_path` defaults to the `.bin` beside the `.param`).

  Raises:
    NcnnFormatError: malformed `.param`, unsupported layer type, a graph that is neither
      architecture, inconsistent shapes, or a truncated / oversized `.bin`; the message names the
      file, line and layer.
    FileNotFoundError: a missing file.
  """
  param_path = os.fspath(param_path)
  if bin_path is None:
    bin_path = os.path.splitext(param_path)[0] + ".bin"
  layers = parse_param(param_path)
  graph = _Graph(layers, param_path)  # structure first: its errors say more than a misaligned .bin
  inp = graph.take("Input", "network input")
  data = graph.top(inp)
  types = {layer.type for layer in layers}
  if "PReLU" in types or "PixelShuffle" in types:
    arch, (kwargs, modules, out) = "srvgg_compact", _map_srvgg_compact(graph, data)
  elif "Concat" in types or "Eltwise" in types:
    arch, (kwargs, modules, out) = "rrdbnet", _map_rrdbnet(graph, data)
  else:
    raise NcnnFormatError(
      f"{param_path}: graph is neither RRDBNet (Concat/Eltwise) nor SRVGGNetCompact "
      f"(PReLU/PixelShuffle); layer types: {sorted(types)}"
    )
  if (extra := graph.peek()) is not None:
    graph.fail(extra, f"unexpected layer after the {arch} output")
  weights, dtypes = read_weights(layers, param_path, bin_path)
  state = {
    f"{module}.{blob}": array
    for module, layer_name in modules.items()
    for blob, array in weights[layer_name].items()
  }
  weight_dtype = dtypes.pop() if len(dtypes) == 1 else "mixed"
  return NcnnModel(arch, kwargs, state, data, out, weight_dtype)
