"""Scalar metrics to ``<workdir>/metrics.jsonl`` and TensorBoard event files.

One JSON object per line, ``{"step": s, "train/loss": ..., ...}``, flushed as
it is written. A resumed run first drops the records after its checkpoint's
step (the killed run may have logged steps it is about to redo), so the file
reads as one uninterrupted run. TensorBoard files go to ``<workdir>/tensorboard``,
written with TensorFlow alone (the ``tensorboard`` package is only needed to view them).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

__all__ = ["METRICS_FILE", "TENSORBOARD_DIR", "MetricsWriter", "read_metrics"]

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``<workdir>/metrics.jsonl``; a torn last line (killed run) is skipped."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _scalar_metadata():
    """What ``tf.summary.scalar`` attaches to a value, without needing ``tensorboard``.

    ``tf.summary.scalar`` is implemented in the ``tensorboard`` package; the
    event files only need TensorFlow's core ``tf.summary.write`` and this
    metadata: the scalars plugin's name and its (empty, version 0) plugin data.
    """
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars", content=b""),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )


class MetricsWriter:
    """Writes scalar records on the chief host; a no-op elsewhere."""

    def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool = True) -> None:
        """Opens the writers, dropping records after ``resume_step`` from an earlier run.

        Args:
          workdir: the run's directory (local).
          resume_step: the step training restarts from (0 for a fresh run).
          enabled: False on non-chief hosts.
        """
        self.enabled = enabled
        self._file = None
        self._summary_writer = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, METRICS_FILE)
        kept = [r for r in read_metrics(workdir) if r.get("step", 0) <= resume_step]
        # Rewrite through a temporary file: a kill now leaves one whole file or the other.
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, path)
        self._file = open(path, "a")  # Closed in close().

        import tensorflow as tf  # The data pipeline has imported it already.

        self._tf = tf
        self._metadata = _scalar_metadata()
        self._summary_writer = tf.summary.create_file_writer(os.path.join(workdir, TENSORBOARD_DIR))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """Appends ``scalars`` (names like ``train/loss``) at ``step`` to both outputs."""
        if not self.enabled:
            return
        values = {name: float(value) for name, value in scalars.items()}
        # JSON has no NaN/inf; null keeps the line parseable by any reader.
        record = {"step": int(step)} | {
            name: (value if math.isfinite(value) else None) for name, value in values.items()
        }
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        tf = self._tf
        with self._summary_writer.as_default(step=int(step)):
            for name, value in values.items():
                tf.summary.write(name, tf.constant(value, tf.float32), metadata=self._metadata)

    def flush(self) -> None:
        """Pushes buffered TensorBoard events to disk."""
        if self._summary_writer is not None:
            self._summary_writer.flush()

    def close(self) -> None:
        """Flushes and closes both outputs."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._summary_writer is not None:
            self._summary_writer.close()
            self._summary_writer = None
