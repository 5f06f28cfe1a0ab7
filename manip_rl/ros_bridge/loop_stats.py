"""policy_bridge's control-loop statistics: every period, latency, inference time and state age
sample (for the statistics file written at shutdown), a recent window of them (for
``/diagnostics``), the event counters, and the diagnostics message built from them."""

from __future__ import annotations

import collections
from collections.abc import Mapping

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from manip_rl.ros_bridge import dds
from manip_rl.ros_bridge.safety import OK

# Samples kept for the statistics file (10 min at 500 Hz) and for the diagnostics window.
STATS_CAPACITY = 300_000
WINDOW = 500
KEYS = ("period", "latency", "inference", "state_age")  # seconds, one sample per command
# Statuses reported at level OK; any other (a hold, waiting for inputs) is a WARN.
OK_STATUSES = (OK, "active, disabled", "inactive")


class LoopStats:
    """The samples, the diagnostics window and the counters of one bridge run."""

    def __init__(self) -> None:
        self.stats = {k: collections.deque(maxlen=STATS_CAPACITY) for k in KEYS}
        self.window = {k: collections.deque(maxlen=WINDOW) for k in KEYS}
        self.counters: collections.Counter = collections.Counter()
        self.overrun_log: collections.deque = collections.deque(maxlen=1000)

    def record(self, key: str, value: float) -> None:
        self.stats[key].append(value)
        self.window[key].append(value)

    def summarize(self, period: float, window: bool = True) -> dict[str, float]:
        """Loop statistics in ms (the diagnostics window, or the whole run)."""
        return summarize(self.window if window else self.stats, period)

    def to_json(self, period: float, trigger: object) -> dict:
        """Every recorded sample (seconds) and the counters: the statistics file's content."""
        return {
            "control_period_s": period,
            "trigger": trigger,
            "counters": dict(self.counters),
            "overruns": [list(x) for x in self.overrun_log],  # [perf_counter s, late s]
            **{f"{k}_s": list(v) for k, v in self.stats.items()},
        }


def summarize(src: Mapping, period: float) -> dict[str, float]:
    """Rate and period error of ``src["period"]``, p50/p99 of the other samples, in ms."""
    periods = np.asarray(src["period"])
    out: dict[str, float] = {}
    if len(periods):
        out["loop_rate_hz"] = float(1.0 / periods.mean())
        out["period_error_p99_ms"] = float(np.percentile(np.abs(periods - period), 99) * 1e3)
    for key in ("latency", "inference", "state_age"):
        if len(src[key]):
            p50, p99 = dds.percentiles(src[key])
            out[f"{key}_p50_ms"], out[f"{key}_p99_ms"] = p50 * 1e3, p99 * 1e3
    return out


def warm_up(period: float) -> None:
    """Run the statistics once on made-up samples: np.percentile's first call took 6.6 ms, and
    until 2026-11-26 it came with the first diagnostics after enabling and made a 500 Hz tick
    8-11 ms late."""
    summarize({k: [period, period] for k in KEYS}, period)


def diagnostic_array(
    name: str, status: str, values: Mapping[str, object], stamp
) -> DiagnosticArray:
    """One ``/diagnostics`` message: ``values`` as key/value strings, ``status`` as its message,
    level OK for the statuses in :data:`OK_STATUSES`, WARN otherwise."""
    entry = DiagnosticStatus(name=name, hardware_id="manip_rl")
    entry.values = [KeyValue(key=k, value=f"{v}") for k, v in values.items()]
    entry.message = status
    entry.level = DiagnosticStatus.OK if status in OK_STATUSES else DiagnosticStatus.WARN
    msg = DiagnosticArray(status=[entry])
    msg.header.stamp = stamp
    return msg
