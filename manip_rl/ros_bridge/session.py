"""A simulated session over ROS 2: sim_arm and policy_bridge in two processes on a local DDS
domain, driven from this process (reset, enable, wait one episode, read success). Used by
``manip-rl demo``, the end-to-end test and ``bench/ros_loop.py``."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from manip_rl.ros_bridge import dds


class SessionError(RuntimeError):
    """The simulated session could not start or run; the message names the log to read."""


class SimSession:
    """``with SimSession(policy) as s: s.run_episode()``.

    ``bridge_params`` / ``sim_params``: extra ``-p name:=value`` ROS arguments for the two nodes
    (on top of ``params_file``, launch/config/sim.yaml by default).
    """

    def __init__(
        self,
        policy: str | os.PathLike,
        env_id: str | None = None,
        params_file: str | os.PathLike | None = None,
        bridge_params: Sequence[str] = (),
        sim_params: Sequence[str] = (),
        domain_id: int | None = None,
        workdir: str | os.PathLike | None = None,
        startup_timeout: float = 90.0,
        rt_priority: int = 0,
        sim_rt_priority: int | None = None,
        sim_cpus: str | None = None,
        bridge_cpus: str | None = None,
    ) -> None:
        self.policy = str(Path(policy).resolve())
        self.env_id = env_id
        self.params_file = str(params_file or dds.SIM_PARAMS)
        self.bridge_params = list(bridge_params)
        self.sim_params = list(sim_params)
        self.domain_id = dds.domain_id_for() if domain_id is None else domain_id
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="manip_rl_ros_")
        self.workdir = Path(workdir or self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stats_path = self.workdir / "bridge_stats.json"
        self.startup_timeout = startup_timeout
        self.rt_priority = rt_priority
        # The emulated robot's own priority (default: rt_priority, as the bridge's): a real arm's
        # controller runs real-time, so a test of the bridge under load runs sim_arm so.
        self.sim_rt_priority = rt_priority if sim_rt_priority is None else sim_rt_priority
        self.sim_cpus, self.bridge_cpus = sim_cpus, bridge_cpus
        for spec in (sim_cpus, bridge_cpus):
            if spec:
                dds.parse_cpus(spec)  # a bad list fails here, not in a node's log
        self.procs: dict[str, object] = {}
        self.success: bool | None = None
        self._context = None

    # ------------------------------------------------------------------ processes
    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def __enter__(self) -> SimSession:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        import rclpy

        rt = ["--rt-priority", str(self.rt_priority)] if self.rt_priority else []
        sim_rt = ["--rt-priority", str(self.sim_rt_priority)] if self.sim_rt_priority else []
        sim_pin = ["--cpus", self.sim_cpus] if self.sim_cpus else []
        bridge_pin = ["--cpus", self.bridge_cpus] if self.bridge_cpus else []
        sim_args = [
            *sim_rt,
            *sim_pin,
            "--params-file",
            self.params_file,
            "--ros-args",
            *self.sim_params,
        ]
        if self.env_id:
            sim_args += ["-p", f"env_id:={self.env_id}"]
        self.procs["sim_arm"] = dds.start_node(
            "sim-arm", sim_args, self.domain_id, self.workdir / "sim_arm.log"
        )
        bridge_args = [
            *rt, *bridge_pin, "--policy", self.policy, "--params-file", self.params_file, "--autostart",
            "--ros-args", "-p", f"stats_path:={self.stats_path}",
            # The sim's task topics, also where no parameter file is installed with the package.
            "-p", "goal_topic:=/sim_arm/goal", "-p", "object_pose_topic:=/sim_arm/object_pose",
            *self.bridge_params,
        ]  # fmt: skip
        self.procs["policy_bridge"] = dds.start_node(
            "serve", bridge_args, self.domain_id, self.workdir / "policy_bridge.log"
        )
        dds.keep_dds_local(self.domain_id)
        self._context = rclpy.Context()
        rclpy.init(context=self._context, domain_id=self.domain_id)
        self._make_node()
        if not self.wait_active(self.startup_timeout):
            raise SessionError(
                "policy_bridge did not become active within "
                f"{self.startup_timeout:g} s; its log:\n{self.log('policy_bridge')[-3000:]}\n"
                f"sim_arm log:\n{self.log('sim_arm')[-2000:]}"
            )

    def _make_node(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import GetState
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import Bool, UInt32
        from std_srvs.srv import SetBool, Trigger

        self.node = rclpy.create_node(f"manip_rl_driver_{os.getpid()}", context=self._context)
        self.executor = SingleThreadedExecutor(context=self._context)
        self.executor.add_node(self.node)
        self.node.create_subscription(Bool, "/sim_arm/success", self._on_success, 10)
        self.reflexes = 0  # Franka reflexes of the emulated arm (sim_arm's ~/reflexes)
        self.node.create_subscription(UInt32, "/sim_arm/reflexes", self._on_reflexes, 10)
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._reset = self.node.create_client(Trigger, "/sim_arm/reset")
        self._enable = self.node.create_client(SetBool, "/policy_bridge/enable")
        self._get_state = self.node.create_client(GetState, "/policy_bridge/get_state")
        self._types = {"reset": Trigger, "enable": SetBool, "get_state": GetState}
        # The driver is the operator: its heartbeat (20 Hz while it spins) keeps the bridge's
        # enable alive where the profile requires one (robot fr3, or heartbeat: required).
        heartbeat = self.node.create_publisher(Bool, "/policy_bridge/heartbeat", 10)
        self.node.create_timer(0.05, lambda: heartbeat.publish(Bool(data=True)))

    def _on_reflexes(self, msg) -> None:
        self.reflexes = int(msg.data)

    def _on_success(self, msg) -> None:
        self.success = bool(msg.data)
        self._success_time = time.monotonic()

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("policy_bridge"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.01, max(0.0, end - time.monotonic())))

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SessionError(
                    f"{name} exited with code {proc.returncode}; its log:\n{self.log(name)[-3000:]}"
                )

    def call(self, which: str, request, timeout: float = 10.0):
        client = {"reset": self._reset, "enable": self._enable, "get_state": self._get_state}[which]
        end = time.monotonic() + timeout
        while not client.service_is_ready():
            self._check_alive()
            if time.monotonic() > end:
                raise SessionError(f"service {client.srv_name} is not available")
            self.spin(0.05)
        future = client.call_async(request)
        while not future.done():
            if time.monotonic() > end:
                raise SessionError(f"service {client.srv_name} did not answer in {timeout} s")
            self.executor.spin_once(timeout_sec=0.01)
        return future.result()

    def wait_active(self, timeout: float) -> bool:
        from lifecycle_msgs.srv import GetState

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._check_alive()
            if self._get_state.service_is_ready():
                # A bridge still configuring (autostart: before it spins) answers nothing yet;
                # on a loaded machine that outlasts one call's timeout.
                left = max(1.0, min(10.0, end - time.monotonic()))
                try:
                    response = self.call("get_state", GetState.Request(), timeout=left)
                except SessionError:
                    continue
                if response.current_state.label == "active":
                    return True
            self.spin(0.25)
        return False

    # ------------------------------------------------------------------ episodes
    def enable(self, on: bool) -> None:
        from std_srvs.srv import SetBool

        response = self.call("enable", SetBool.Request(data=on))
        # A reset moves the simulated arm home in one physics step, faster than any arm: the
        # bridge's plausibility check refuses to enable until the arm could have made the move
        # (about 0.3 s for 1 rad), so wait that out rather than fail the episode.
        end = time.monotonic() + 3.0
        while on and not response.success and "implausible" in response.message:
            if time.monotonic() > end:
                break
            self.spin(0.05)
            response = self.call("enable", SetBool.Request(data=on))
        if not response.success:
            raise SessionError(f"policy_bridge refused enable={on}: {response.message}")

    def run_episode(self, duration: float) -> bool:
        """Reset the simulated arm, enable the bridge for ``duration`` seconds, return whether the
        task is solved at the end (the success test of the environments' evaluation)."""
        from std_srvs.srv import Trigger

        self.enable(False)
        response = self.call("reset", Trigger.Request())
        if not response.success:
            raise SessionError(f"sim_arm reset failed: {response.message}")
        # Let the new episode's goal and joint states reach the bridge before it acts.
        self.spin(0.15)
        self.enable(True)
        self.spin(duration)
        self.success = None
        self.spin(0.05)
        end = time.monotonic() + 1.0
        while self.success is None and time.monotonic() < end:
            self.spin(0.01)
        self._check_alive()
        self.enable(False)
        return bool(self.success)

    def close(self) -> None:
        import rclpy

        bridge = self.procs.get("policy_bridge")
        if bridge is not None:
            dds.stop_node(bridge)
        sim = self.procs.get("sim_arm")
        if sim is not None:
            dds.stop_node(sim)
        if self._context is not None:
            try:
                self.executor.shutdown()
                self.node.destroy_node()
            except Exception:
                pass
            rclpy.shutdown(context=self._context)
            self._context = None

    def bridge_stats(self) -> dict:
        """The bridge's recorded samples (after :meth:`close`)."""
        if not self.stats_path.exists():
            raise SessionError(
                f"policy_bridge wrote no statistics ({self.stats_path}); its log:\n"
                f"{self.log('policy_bridge')[-2000:]}"
            )
        return json.loads(self.stats_path.read_text())

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def summarize_stats(stats: dict) -> dict[str, float]:
    """Loop statistics in ms from :meth:`SimSession.bridge_stats`."""
    import numpy as np

    period = float(stats["control_period_s"])
    out: dict[str, float] = {"control_rate_hz": 1.0 / period}
    periods = np.asarray(stats["period_s"])  # the bridge starts afresh at each enable
    if len(periods):
        err = np.abs(periods - period) * 1e3
        out["loop_rate_hz"] = float(1.0 / periods.mean())
        out["period_error_p50_ms"], out["period_error_p99_ms"] = dds.percentiles(err)
        out["period_error_max_ms"] = float(err.max())
    for key in ("latency", "inference", "state_age"):
        values = np.asarray(stats[f"{key}_s"]) * 1e3
        out[f"{key}_p50_ms"], out[f"{key}_p99_ms"] = dds.percentiles(values)
    out["commands"] = float(stats["counters"].get("commands", 0))
    out["overruns"] = float(stats["counters"].get("overruns", 0))
    out["holds"] = float(stats["counters"].get("holds", 0))
    return out
