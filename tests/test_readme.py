"""Every code snippet of README.md runs as written (so the README cannot rot).

Python blocks run as scripts. Shell blocks run with bash from the repository root, with `/tmp/`
replaced by a fresh folder; a block preceded by `<!-- tests/test_readme.py appends: ARGS -->`
runs with ARGS appended to its command (a shorter run of the same command). The block of the two
`make` commands is what runs this test, so it is left out.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPEND = re.compile(r"<!-- tests/test_readme.py appends: (.*?) -->\s*$")


def readme_blocks() -> list[tuple[str, str, str]]:
  """(language, code, appended args) of every fenced block of README.md."""
  lines = open(os.path.join(ROOT, "README.md")).read().splitlines()
  blocks, i = [], 0
  while i < len(lines):
    match = re.match(r"\s*```(\w+)\s*$", lines[i])
    if not match:
      i += 1
      continue
    indent = len(lines[i]) - len(lines[i].lstrip())
    append = APPEND.match(lines[i - 1].strip()) if i else None
    end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
    code = "\n".join(line[indent:] for line in lines[i + 1 : end])
    blocks.append((match.group(1), code, append.group(1) if append else ""))
    i = end + 1
  return blocks


BLOCKS = [b for b in readme_blocks() if not b[1].lstrip().startswith("make ")]


def test_readme_has_snippets():
  languages = [language for language, _, _ in BLOCKS]
  assert languages.count("python") >= 2 and languages.count("bash") >= 4


@pytest.mark.parametrize(
  "language, code, append", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))]
)
def test_readme_snippet_runs(tmp_path, language, code, append):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
  if language == "python":
    command = [sys.executable, "-c", code]
  else:
    assert language == "bash"
    code = code.replace("/tmp/", f"{tmp_path}/").replace(".venv/bin/python", sys.executable)
    if append:
      code = code.rstrip() + " " + append
    command = ["bash", "-e", "-o", "pipefail", "-c", code]
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, f"{code}\n--- stderr:\n{result.stderr[-3000:]}"
