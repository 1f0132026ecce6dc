"""Metrics: one JSON object per logged step in WORKDIR/metrics.jsonl, plus TensorBoard events."""

import json
import os


class MetricWriter:
  """Writes rows from process 0 only; on resume, drops rows logged after the restored step."""

  def __init__(self, workdir: str, enabled: bool = True, truncate_after_step: int | None = None):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard = None
    if not enabled:
      return
    if truncate_after_step is not None and os.path.exists(self.path):
      _truncate_jsonl(self.path, truncate_after_step)
    from tensorboardX import SummaryWriter  # Heavy import; process 0 only.

    self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **scalars}) + "\n")
    for name, value in scalars.items():
      self._tensorboard.add_scalar(name, value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def _truncate_jsonl(path: str, last_step: int) -> None:
  """Keeps rows up to `last_step` (the resumed checkpoint), so a resumed log has no duplicates."""
  with open(path) as f:
    rows = [line for line in f if line.strip()]
  kept = []
  for line in rows:
    try:
      if json.loads(line)["step"] <= last_step:
        kept.append(line)
    except (ValueError, KeyError):
      continue  # A line cut by a kill mid-write.
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(kept)
  os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
