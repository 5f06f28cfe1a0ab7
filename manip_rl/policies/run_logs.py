"""A run's log files across a kill and a resume: the rows and TensorBoard events written after
the checkpoint a run resumes from are dropped, and SB3's CSV logger continues progress.csv."""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from stable_baselines3.common.logger import CSVOutputFormat

from manip_rl.fileio import atomic_write_text
from manip_rl.policies import rundir


def truncate_logs(path: str, steps: int) -> None:
    """Drop log rows and TensorBoard events written after the checkpoint a run resumes from:
    they describe training that the kill threw away, and the resumed run writes those steps
    again."""
    _truncate_tensorboard(os.path.join(path, rundir.LOG_DIR), steps)
    for rel, key in (
        ((rundir.LOG_DIR, "progress.csv"), "time/total_timesteps"),
        ((rundir.EVAL_DIR, rundir.EVAL_FILE), "timesteps"),
    ):
        p = os.path.join(path, *rel)
        if not os.path.isfile(p):
            continue
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            rows = [row for row in reader if _int(row.get(key)) <= steps]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(p, buf.getvalue())


def _truncate_tensorboard(log_dir: str, steps: int) -> None:
    """Rewrite each TensorBoard event file in ``log_dir`` without its events past ``steps``.

    Rewritten rather than hidden with a purge marker (SummaryWriter's purge_step): the marker
    is honoured by TensorBoard's Python reader but not by every reader (its Rust data server,
    pandas exports), and a user should see each step once in all of them. A file cut short by
    the kill ends at its last complete record."""
    if not os.path.isdir(log_dir):
        return
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    from manip_rl.fileio import atomic_write_bytes

    for name in sorted(os.listdir(log_dir)):
        p = os.path.join(log_dir, name)
        if not name.startswith("events.out.tfevents") or not os.path.isfile(p):
            continue
        records = list(RawEventFileLoader(p).Load())
        kept = [r for r in records if Event.FromString(r).step <= steps]
        if len(kept) == len(records) and _complete(p, records):
            continue
        buf = io.BytesIO()
        writer = RecordWriter(buf)
        for r in kept:
            writer.write(r)
        atomic_write_bytes(p, buf.getvalue())


def _complete(path: str, records: list[bytes]) -> bool:
    """Whether ``records`` (each framed in 16 bytes) fill the file: no truncated tail."""
    return os.path.getsize(path) == sum(len(r) + 16 for r in records)


def _int(v: Any) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 0


class ResumableCSV(CSVOutputFormat):
    """SB3's CSV logger that continues an existing progress.csv (SB3's own truncates it)."""

    def __init__(self, filename: str) -> None:
        self.separator, self.quotechar = ",", '"'
        if os.path.isfile(filename) and os.path.getsize(filename) > 0:
            self.file = open(filename, "r+")  # noqa: SIM115 - closed by close()
            header = self.file.readline().strip()
            self.keys = header.split(",") if header else []
            self.file.seek(0, os.SEEK_END)
        else:
            os.makedirs(os.path.dirname(filename), exist_ok=True)
            self.file = open(filename, "w+")  # noqa: SIM115
            self.keys = []
