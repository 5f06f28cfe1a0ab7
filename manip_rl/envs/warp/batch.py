"""N worlds of one task's scene on MuJoCo Warp, with zero-copy torch views of the state.

The model is the CPU env's own (:func:`manip_rl.envs.scene.build_model`), moved to the device
with ``mujoco_warp.put_model``. The fields that domain randomization writes get a leading world
dimension of N (``put_model(batch_sizes=...)``; mujoco_warp indexes a batched field by
``worldid % shape[0]``, so an unbatched field of size 1 is shared), so each world carries its own
masses, frictions, gains... as MuJoCo Playground and mjlab randomize per world. Writing a world's
values is a torch assignment into a view made by ``wp.to_torch``: no copy, no recompilation.
"""

from __future__ import annotations

import contextlib
import dataclasses

import mujoco
import mujoco_warp as mjw
import numpy as np
import torch
import warp as wp

from manip_rl.envs import scene
from manip_rl.envs.spec import TaskSpec

# The MjModel fields manip_rl.envs.randomization writes (DomainRandomizer.apply), with their
# shape per world on the host: batched only when the env randomizes, since a batched field costs
# memory and bandwidth per world.
RANDOMIZED_FIELDS = (
    "body_mass",
    "body_inertia",
    "geom_friction",
    "dof_damping",
    "dof_armature",
    "dof_frictionloss",
    "actuator_gainprm",
    "actuator_biasprm",
    "geom_size",
    "geom_rbound",
    "geom_aabb",
)
STATE_FIELDS = ("qpos", "qvel", "ctrl", "act", "qacc_warmstart", "time")  # what a reset writes
# Contacts and constraint rows allocated per world. The cube tasks peak at about 20 contacts
# (cube on table, two fingers on the cube, fingers on the table); overflow would drop contacts,
# so the allocation is generous (memory is a few kB per world).
CONTACTS_PER_WORLD = 64
CONSTRAINTS_PER_WORLD = 512


@dataclasses.dataclass
class StateViews:
    """Torch views (no copies) of the Warp data the env reads and writes, world first."""

    qpos: torch.Tensor  # (N, nq)
    qvel: torch.Tensor  # (N, nv)
    ctrl: torch.Tensor  # (N, nu)
    act: torch.Tensor  # (N, na)
    time: torch.Tensor  # (N,)
    qacc_warmstart: torch.Tensor  # (N, nv)
    site_xpos: torch.Tensor  # (N, nsite, 3)
    xaxis: torch.Tensor  # (N, njnt, 3)
    xanchor: torch.Tensor  # (N, njnt, 3)


class BatchedScene:
    """``nworld`` copies of a task's scene on a Warp device.

    ``randomized``: give every world its own copy of :data:`RANDOMIZED_FIELDS` and of gravity.
    """

    def __init__(self, task: str | TaskSpec, nworld: int, device: str, randomized: bool) -> None:
        self.mj_model, self.ids = scene.build_model(task)
        self.nworld, self.device = int(nworld), device
        self.torch_device = torch.device(device)
        m = self.mj_model
        d = mujoco.MjData(m)
        mujoco.mj_forward(m, d)
        with wp.ScopedDevice(device):
            batch = {name: self.nworld for name in RANDOMIZED_FIELDS} if randomized else None
            self.model = mjw.put_model(m, batch_sizes=batch)
            if randomized:
                # opt is a struct of its own (put_model's batch_sizes covers Model's fields);
                # its gravity is indexed by world as the others are.
                self.model.opt.gravity = wp.array(
                    np.tile(m.opt.gravity, (self.nworld, 1)), dtype=wp.vec3
                )
            self.data = mjw.put_data(
                m, d, nworld=self.nworld, nconmax=CONTACTS_PER_WORLD, njmax=CONSTRAINTS_PER_WORLD
            )
        t = wp.to_torch
        dd = self.data
        self.state = StateViews(
            qpos=t(dd.qpos), qvel=t(dd.qvel), ctrl=t(dd.ctrl), act=t(dd.act), time=t(dd.time),
            qacc_warmstart=t(dd.qacc_warmstart), site_xpos=t(dd.site_xpos), xaxis=t(dd.xaxis),
            xanchor=t(dd.xanchor),
        )  # fmt: skip
        self.randomized = randomized
        self.fields: dict[str, torch.Tensor] = {}
        if randomized:
            self.fields = {name: t(getattr(self.model, name)) for name in RANDOMIZED_FIELDS}
            self.fields["gravity"] = t(self.model.opt.gravity)
        self._contact_geom = t(dd.contact.geom)
        self._contact_world = t(dd.contact.worldid)
        self._contact_dist = t(dd.contact.dist)
        self._contact_margin = t(dd.contact.includemargin)
        self._nacon = t(dd.nacon)
        self._graph = None  # a CUDA graph of one control step's physics (GPU), made on first use

    # ------------------------------------------------------------------ writing worlds
    def write_fields(self, worlds: torch.Tensor, fields: dict[str, np.ndarray]) -> None:
        """Write randomized model fields, stacked by world (``fields[name][k]`` goes to world
        ``worlds[k]``), as :class:`~manip_rl.envs.randomization.DomainRandomizer` left them in
        a host model."""
        for name, view in self.fields.items():
            self._write(view, worlds, fields[name])

    def write_state(self, worlds: torch.Tensor, state: dict[str, np.ndarray]) -> None:
        """Write host states stacked by world: ``qpos``, ``qvel``, ``ctrl``, ``act``,
        ``qacc_warmstart`` and ``time``."""
        for name in STATE_FIELDS:
            self._write(getattr(self.state, name), worlds, state[name])

    def _write(self, view: torch.Tensor, worlds: torch.Tensor, host: np.ndarray) -> None:
        value = torch.as_tensor(host, dtype=view.dtype).reshape((len(host), *view.shape[1:]))
        view[worlds] = value.to(self.torch_device)

    # ------------------------------------------------------------------ physics
    def step(self, substeps: int) -> None:
        """``substeps`` physics steps of every world, then the kinematics of the reached state
        (``mj_step`` leaves body positions at the start of its last substep; the CPU env calls
        ``mj_kinematics`` after it for the same reason, Gymnasium #821)."""
        with wp.ScopedDevice(self.device), self._stream():
            if self._graph is not None:
                wp.capture_launch(self._graph)
                return
            for _ in range(substeps):
                mjw.step(self.model, self.data)
            mjw.kinematics(self.model, self.data)
            if self.torch_device.type == "cuda":
                # On a GPU the many small kernels of a control step are launched as one CUDA
                # graph (as mjlab does), captured after this first, uncaptured step has loaded
                # every kernel. Untested here, where no GPU is lent (docs/warp.md).
                with wp.ScopedCapture() as capture:
                    for _ in range(substeps):
                        mjw.step(self.model, self.data)
                    mjw.kinematics(self.model, self.data)
                self._graph = capture.graph

    def kinematics(self) -> None:
        """Positions, axes and sites of every world from its qpos (after writing states)."""
        with wp.ScopedDevice(self.device), self._stream():
            mjw.kinematics(self.model, self.data)

    def _stream(self) -> contextlib.AbstractContextManager:
        """On a GPU, Warp runs on torch's current stream, so the torch writes into the views
        (controls, reset states) and the physics are ordered."""
        if self.torch_device.type != "cuda":
            return contextlib.nullcontext()
        return wp.ScopedStream(wp.stream_from_torch(torch.cuda.current_stream(self.torch_device)))

    # ------------------------------------------------------------------ contacts
    def contact_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(geom pairs (K, 2), world of each (K,)) of the contacts of the last physics step,
        those within their margin, as MuJoCo's CPU ``d.contact`` holds."""
        n = int(self._nacon[0].item())
        n = min(n, self._contact_geom.shape[0])
        active = self._contact_dist[:n] <= self._contact_margin[:n]
        return self._contact_geom[:n][active], self._contact_world[:n][active]
