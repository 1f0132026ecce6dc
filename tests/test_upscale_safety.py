"""python -m sr_jax.upscale loses nothing: inputs, colliding names, existing outputs, a full disk;
and refuses bad arguments and bad weight files in one line before any work (sr_jax.tools.convert
too)."""

import errno
import os
import pickle

import numpy as np
from PIL import Image
import pytest

from sr_jax import inference, upscale
from sr_jax.tools import convert

BICUBIC = ["--model=bicubic", "--scale=2", "--tile=0"]


def save_image(path, seed=0):
  """An 8x8 RGB image at `path` (format from the extension); returns its bytes."""
  pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path)
  return path.read_bytes()


def files_under(folder):
  """{relative path: bytes} of every file under `folder`."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_error_line(stderr: str) -> str:
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr
  assert "Traceback" not in stderr
  return lines[0]


@pytest.fixture
def no_network(monkeypatch):
  """Fails the test if the network is loaded: refusals must come before that."""

  def load_model(*args, **kwargs):
    raise AssertionError("the network was loaded")

  monkeypatch.setattr(inference, "load_model", load_model)


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_output_into_the_input_folder_never_replaces_an_input(
  tmp_path, capsys, no_network, overwrite
):
  folder = tmp_path / "photos"
  save_image(folder / "photo.jpg", 1)
  save_image(folder / "photo.png", 2)
  before = files_under(folder)
  argv = [*BICUBIC, f"--input={folder}", f"--output={folder}", "--ext=png", *overwrite]
  assert upscale.main(argv) == 2
  error = one_error_line(capsys.readouterr().err)
  assert "write over input files" in error and "photo.png" in error and "photo.jpg" in error
  assert files_under(folder) == before
  # One file onto itself, named as the output file.
  single = folder / "photo.png"
  assert upscale.main([*BICUBIC, f"--input={single}", f"--output={single}", *overwrite]) == 2
  assert "is the input" in one_error_line(capsys.readouterr().err)
  assert files_under(folder) == before


def test_two_inputs_for_one_output_name_are_refused(tmp_path, capsys, no_network):
  folder, out = tmp_path / "in", tmp_path / "out"
  for name in ["a.jpg", "a.png", "b.png", "sub/c.bmp", "sub/c.webp"]:
    save_image(folder / name)
  assert upscale.main([*BICUBIC, f"--input={folder}", f"--output={out}", "--ext=png"]) == 2
  error = one_error_line(capsys.readouterr().err)
  assert error.startswith("error: 2 output name(s) would be written by several inputs")
  assert "a.jpg' and " in error and "c.bmp' and " in error and "b.png" not in error
  assert not out.exists()


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, capsys, monkeypatch):
  folder, out = tmp_path / "in", tmp_path / "out"
  save_image(folder / "a.png", 1)
  save_image(folder / "b.png", 2)
  out.mkdir()
  (out / "a.png").write_bytes(b"the user's own file")
  assert upscale.main([*BICUBIC, f"--input={folder}", f"--output={out}"]) == 0
  assert "note: 1 output(s) exist and are kept" in capsys.readouterr().err
  assert (out / "a.png").read_bytes() == b"the user's own file"
  assert Image.open(out / "b.png").size == (16, 16)
  b_written = (out / "b.png").read_bytes()

  assert upscale.main([*BICUBIC, f"--input={folder}", f"--output={out}", "--overwrite"]) == 0
  assert Image.open(out / "a.png").size == (16, 16)
  assert sorted(os.listdir(out)) == ["a.png", "b.png"]  # no temporary file left

  # Everything exists: nothing to do, and the network is not even loaded.
  monkeypatch.setattr(inference, "load_model", lambda *a, **k: pytest.fail("loaded"))
  (out / "b.png").write_bytes(b"changed by the user")
  assert upscale.main([*BICUBIC, f"--input={folder}", f"--output={out}"]) == 0
  assert "note: 2 output(s) exist" in capsys.readouterr().err
  assert (out / "b.png").read_bytes() == b"changed by the user" != b_written


def test_output_folder_inside_the_input_folder_is_not_read_as_input(tmp_path, capsys):
  folder = tmp_path / "photos"
  save_image(folder / "a.png")
  argv = [*BICUBIC, f"--input={folder}", f"--output={folder / 'x2'}"]
  assert upscale.main(argv) == 0
  assert upscale.main(argv) == 0  # a rerun: x2/a.png is an earlier output, not an input
  err = capsys.readouterr().err
  assert "1 file(s) under --output" in err and "not read as inputs" in err
  assert sorted(files_under(folder)) == ["a.png", "x2/a.png"]


def test_a_dangling_link_among_the_inputs_is_one_failed_file(tmp_path, capsys):
  folder, out = tmp_path / "in", tmp_path / "out"
  save_image(folder / "a.png")
  (folder / "b.png").symlink_to(tmp_path / "deleted.png")
  assert upscale.main([*BICUBIC, f"--input={folder}", f"--output={out}"]) == 1
  errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
  assert len(errors) == 2 and "b.png: skipped" in errors[0] and "1 of 2" in errors[1], errors
  assert sorted(files_under(out)) == ["a.png"]


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--batch_size=0"], "--batch_size=0: must be at least 1"),
    (["--batch_size=two"], "invalid int value: 'two'"),
    (["--tile=-1"], "--tile=-1: must be >= 0"),
    (["--tile_overlap=-2"], "--tile_overlap=-2"),
    (["--scale=0"], "--scale=0"),
    (["--ext=gif"], "--ext='gif' is not a known image extension"),
    (["--input={tmp}/missing"], "does not exist"),
    (["--output={tmp}/in/a.png"], "is a file; a folder --input needs a folder"),
    (["--input={tmp}/in/a.png", "--output={tmp}/in/a.png"], "is the input"),
    (["--input={tmp}/notes.txt"], "notes.txt': not an image extension; give --ext"),
    (["--scale=x2"], "argument --scale: invalid int value: 'x2'"),
  ],
)
def test_bad_arguments_are_refused_in_one_line_before_the_network_loads(
  tmp_path, capsys, no_network, argv, message
):
  save_image(tmp_path / "in" / "a.png")
  (tmp_path / "notes.txt").write_text("not an image")
  defaults = {"--input": f"--input={tmp_path}/in", "--output": f"--output={tmp_path}/out"}
  given = [a.format(tmp=tmp_path) for a in argv]
  for flag, default in defaults.items():
    if not any(a.startswith(flag + "=") for a in given):
      given.append(default)
  assert upscale.main([*BICUBIC, *given]) == 2
  assert message in one_error_line(capsys.readouterr().err)
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--model=bicubic"], "--model=bicubic needs --scale"),
    (["--workdir={tmp}/no_such_run"], "is not a folder"),
    (["--workdir={tmp}", "--checkpoint=newest"], "--checkpoint='newest'"),
    (["--model=bicubic", "--weights=x.pth", "--scale=2"], "not allowed with argument"),
    ([], "one of the arguments --workdir --weights --model is required"),
  ],
)
def test_bad_network_arguments_are_refused_in_one_line(tmp_path, capsys, no_network, argv, message):
  save_image(tmp_path / "a.png")
  given = [a.format(tmp=tmp_path) for a in argv]
  assert upscale.main([*given, f"--input={tmp_path}/a.png", f"--output={tmp_path}/out"]) == 2
  assert message in one_error_line(capsys.readouterr().err)


def _torch_pickle_calling(function: str) -> bytes:
  """A legacy torch.save-style pickle that would call `function` (module.name) on load."""
  module, name = function.rsplit(".", 1)
  return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x04\x00\x00\x00true\x85R."


BAD_WEIGHTS = {
  "random.pth": np.random.default_rng(0).bytes(300),
  "code.pth": _torch_pickle_calling("os.system"),
  "empty.pth": b"",
  "garbage.safetensors": (10).to_bytes(8, "little") + b"{not json}",
  "broken.param": b"7767517\n1 1\nInput data 0 1 data\nnonsense\n",
}


@pytest.mark.parametrize("name", sorted(BAD_WEIGHTS))
def test_bad_weight_files_are_one_error_line_in_upscale_and_convert(tmp_path, capsys, name):
  weights = tmp_path / name
  weights.write_bytes(BAD_WEIGHTS[name])
  save_image(tmp_path / "a.png")
  argv = [f"--weights={weights}", f"--input={tmp_path}/a.png", f"--output={tmp_path}/out"]
  assert upscale.main(argv) == 2
  assert name in one_error_line(capsys.readouterr().err)
  assert not (tmp_path / "out").exists()

  assert convert.main([str(weights), str(tmp_path / "converted.safetensors")]) == 2
  assert name in one_error_line(capsys.readouterr().err)
  assert not (tmp_path / "converted.safetensors").exists()


def test_the_code_pickle_is_a_real_payload():
  assert pickle.loads(_torch_pickle_calling("builtins.len")) == len("true")


def test_a_full_disk_leaves_no_truncated_output_and_stops(tmp_path, capsys, monkeypatch):
  folder, out = tmp_path / "in", tmp_path / "out"
  for i, name in enumerate(["a.png", "b.jpg", "c.bmp"]):
    save_image(folder / name, i)

  def full_disk(fd, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "write", full_disk)
  assert upscale.main([*BICUBIC, f"--input={folder}", f"--output={out}"]) == 1
  err = capsys.readouterr().err
  assert err.count("the disk is full (No space left on device); nothing was written") == 1, err
  assert "error: the disk is full: 2 image(s) not processed" in err
  assert "3 of 3 image(s) failed" in err
  assert files_under(out) == {}  # neither a truncated image nor a temporary file


def test_convert_refuses_to_write_over_its_source_or_a_non_safetensors_file(tmp_path, capsys):
  source = tmp_path / "model.safetensors"
  np.savez(tmp_path / "w.npz", w=np.ones(3, np.float32))
  assert convert.main([str(tmp_path / "w.npz"), str(source), "--arch=none"]) == 0
  before = source.read_bytes()
  assert convert.main([str(source), str(source), "--arch=none"]) == 2
  assert "is the source file itself" in one_error_line(capsys.readouterr().err)
  assert source.read_bytes() == before
  assert convert.main([str(source), str(tmp_path / "w.npz"), "--arch=none"]) == 2
  assert "must be a .safetensors file" in one_error_line(capsys.readouterr().err)
