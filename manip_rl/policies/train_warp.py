"""``manip-rl train --backend warp``: PPO over batched MuJoCo Warp worlds with rsl_rl.

SB3 steps numpy vector envs one call per env batch and copies every observation to the host; with
thousands of worlds on a GPU that copy and its Python loop are the bottleneck, so the batched
backend trains with rsl_rl's PPO (the one Isaac Lab and mjlab use), whose rollout stays in torch
on the device. The run is still a manip_rl run: after each PPO iteration the actor, critic and
observation statistics are copied into an SB3 ``PPO`` of the same architecture and a
``VecNormalize`` (:class:`SB3Mirror`), so the run directory, the periodic evaluation on CPU envs
(:class:`~manip_rl.policies.callbacks.RunCallback`), best/final models, ``manip-rl eval`` and
``manip-rl export`` work unchanged, and the bridge sees an ordinary policy file.

The observation and reward normalization are SB3 ``VecNormalize``'s formulas, run on the device
(:class:`TorchVecNormalize`), so the exported file bakes in exactly the statistics training used.
ADR (``--dr adr``) draws each world's episode ranges in the CPU env that resets it.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from typing import Any

import numpy as np
import torch

from manip_rl.envs import registry
from manip_rl.policies import config as cfgmod
from manip_rl.policies import rundir
from manip_rl.policies.train import sigterm_as_interrupt

try:  # the warp extra; train.py imports this module only for --backend warp
    from rsl_rl.env import VecEnv as _RslVecEnv
except ImportError:  # pragma: no cover - reported by train_warp()
    _RslVecEnv = object


class TorchVecNormalize:
    """SB3 ``VecNormalize``'s running statistics and normalization, in torch on the device:
    observations ``clip((x - mean) / sqrt(var + eps))``, rewards divided by the running std of
    the discounted return."""

    def __init__(self, dim: int, n: int, device: torch.device, norm: dict | None, gamma: float):
        self.norm_obs = bool((norm or {}).get("norm_obs", False))
        self.norm_reward = bool((norm or {}).get("norm_reward", False))
        self.clip_obs = float((norm or {}).get("clip_obs", 10.0))
        self.clip_reward = float((norm or {}).get("clip_reward", 10.0))
        self.eps, self.gamma = 1e-8, float(gamma)
        f64 = {"dtype": torch.float64, "device": device}
        self.mean, self.var, self.count = torch.zeros(dim, **f64), torch.ones(dim, **f64), 1e-4
        self.ret_var, self.ret_mean, self.ret_count = (
            torch.ones((), **f64),
            torch.zeros((), **f64),
            1e-4,
        )
        self.returns = torch.zeros(n, **f64)

    _STATE = ("mean", "var", "count", "ret_mean", "ret_var", "ret_count")

    def state(self) -> dict:
        """The running statistics (a resumed run restores them; returns restart with the
        worlds)."""
        return {k: getattr(self, k) for k in self._STATE}

    def load_state(self, state: dict) -> None:
        for k in self._STATE:
            v = state[k]
            setattr(self, k, v.to(self.mean.device) if isinstance(v, torch.Tensor) else v)

    def observation(self, x: torch.Tensor, update: bool) -> torch.Tensor:
        if not self.norm_obs:
            return x
        if update:
            self.mean, self.var, self.count = _update(self.mean, self.var, self.count, x.double())
        z = (x.double() - self.mean) / torch.sqrt(self.var + self.eps)
        return z.clamp(-self.clip_obs, self.clip_obs).to(torch.float32)

    def reward(self, r: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        if not self.norm_reward:
            return r
        self.returns = self.returns * self.gamma + r.double()
        self.ret_mean, self.ret_var, self.ret_count = _update(
            self.ret_mean, self.ret_var, self.ret_count, self.returns[:, None]
        )
        self.returns = torch.where(dones, 0.0, self.returns)
        out = r.double() / torch.sqrt(self.ret_var + self.eps)
        return out.clamp(-self.clip_reward, self.clip_reward).to(torch.float32)


def _update(mean, var, count, batch: torch.Tensor):
    """SB3 RunningMeanStd.update (parallel mean/variance, Chan et al.)."""
    b_mean, b_var, b_count = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
    delta = b_mean - mean
    total = count + b_count
    new_mean = mean + delta * b_count / total
    m2 = var * count + b_var * b_count + delta**2 * count * b_count / total
    return new_mean, m2 / total, total


class RslEnv(_RslVecEnv):
    """The batched env as rsl_rl's ``VecEnv``: normalized flat observations (the policy file's
    ``achieved_goal | desired_goal | observation``) in the ``policy`` group, time-limit
    truncations as ``time_outs`` (bootstrapped, never terminal: SB3 #633)."""

    def __init__(self, env: Any, norm: TorchVecNormalize) -> None:
        self.env, self.norm = env, norm
        self.num_envs = env.num_envs
        self.num_actions = env.action_spec.dim
        self.max_episode_length = env.max_episode_steps
        self.device = env.device
        self.cfg: dict = {}
        self.episode_returns = torch.zeros(self.num_envs, device=self.device)
        self.finished: list[tuple[float, float]] = []  # (return, success) of ended episodes
        self.world_done: Any = None  # called with (worlds, successes) of ended episodes

    @property
    def episode_length_buf(self) -> torch.Tensor:
        return self.env.episode_steps

    @episode_length_buf.setter
    def episode_length_buf(self, value: torch.Tensor) -> None:
        self.env.episode_steps[:] = value

    def reset(self, seed: int) -> Any:
        self.env.reset(seed=seed)
        return self.get_observations()

    def get_observations(self, update: bool = False) -> Any:
        from tensordict import TensorDict

        x = self.norm.observation(self.env.flat_obs, update)
        return TensorDict({"policy": x}, batch_size=[self.num_envs], device=self.device)

    def step(self, actions: torch.Tensor):
        _, reward, terminated, truncated, info = self.env.step(actions)
        dones = terminated | truncated
        self.episode_returns += reward
        if bool(dones.any()):
            ended = torch.nonzero(dones).flatten()
            success = info["final_info"]["is_success"][ended]
            self.finished += list(
                zip(self.episode_returns[ended].tolist(), success.tolist(), strict=True)
            )
            if self.world_done is not None:
                self.world_done(ended.tolist(), success.tolist())
            self.episode_returns[ended] = 0.0
        extras = {"time_outs": truncated & ~terminated}
        r = self.norm.reward(reward, dones)
        return self.get_observations(update=True), r, dones.to(torch.long), extras


class SB3Mirror:
    """An SB3 ``PPO`` and ``VecNormalize`` shaped as the run's config would make them, holding
    the rsl_rl networks' weights and the normalizer's statistics: what the run directory,
    evaluation and export read."""

    def __init__(self, cfg: dict, seed: int) -> None:
        from stable_baselines3.common.vec_env import VecNormalize

        from manip_rl.policies.algorithms import algorithm_class, policy_class
        from manip_rl.policies.train import make_vec_env

        one = {**cfg, "n_envs": 1, "vec_env": "dummy"}
        venv = make_vec_env(one, seed)
        norm = cfg.get("normalize") or None
        if norm:
            venv = VecNormalize(venv, gamma=cfg["hyperparams"].get("gamma", 0.99), **norm)
        hp = {k: v for k, v in cfg.get("hyperparams", {}).items() if k != "n_steps"}
        self.model = algorithm_class("ppo")(
            policy_class("ppo", cfg.get("policy", "MlpPolicy"), False), venv,
            policy_kwargs=cfgmod.policy_kwargs(cfg), seed=seed, device="cpu", verbose=0,
            n_steps=2, batch_size=2, **{k: v for k, v in hp.items() if k != "batch_size"},
        )  # fmt: skip
        self.vecnorm = venv if norm else None

    def sync(self, actor: torch.nn.Module, critic: torch.nn.Module, norm: TorchVecNormalize):
        """Copy the rsl_rl actor and critic (MLP layers in order, the action std) and the
        observation statistics."""
        p = self.model.policy
        pairs = (
            (_linears(actor.mlp), [*_linears(p.mlp_extractor.policy_net), p.action_net]),
            (_linears(critic.mlp), [*_linears(p.mlp_extractor.value_net), p.value_net]),
        )
        with torch.no_grad():
            for src, dst in pairs:
                for s, d in zip(src, dst, strict=True):
                    d.weight.copy_(s.weight.detach().cpu())
                    d.bias.copy_(s.bias.detach().cpu())
            std = actor.distribution.std_param.detach().cpu()
            p.log_std.copy_(torch.log(std.clamp(min=1e-6)))
        if self.vecnorm is not None:
            rms = self.vecnorm.obs_rms
            rms.mean = norm.mean.cpu().numpy().astype(np.float64)
            rms.var = norm.var.cpu().numpy().astype(np.float64)
            rms.count = float(norm.count)
            self.vecnorm.ret_rms.var = np.asarray(float(norm.ret_var), dtype=np.float64)
            self.vecnorm.ret_rms.mean = np.asarray(float(norm.ret_mean), dtype=np.float64)


RSL_STATE = "rsl_{}.pt"  # in checkpoints/, beside model_N.zip: what rsl_rl needs to resume


def save_rsl_state(path: str, alg: Any, norm: TorchVecNormalize, steps: int) -> None:
    """rsl_rl's actor, critic and optimizer, the normalizer and torch's RNG at ``steps``,
    written atomically before the checkpoint's ``latest.json`` can name the step."""
    from manip_rl.fileio import atomic_path

    state = {
        "steps": int(steps),
        "actor": alg.actor.state_dict(),
        "critic": alg.critic.state_dict(),
        "optimizer": alg.optimizer.state_dict(),
        "normalizer": norm.state(),
        "torch_rng": torch.get_rng_state(),
    }
    ckdir = os.path.join(path, rundir.CHECKPOINT_DIR)
    os.makedirs(ckdir, exist_ok=True)
    with atomic_path(os.path.join(ckdir, RSL_STATE.format(steps))) as tmp:
        torch.save(state, tmp)
    for name in os.listdir(ckdir):  # keep the states whose checkpoints rundir keeps
        if name.startswith("rsl_") and name.endswith(".pt") and name != RSL_STATE.format(steps):
            n = name[len("rsl_") : -len(".pt")]
            if not os.path.exists(os.path.join(ckdir, f"model_{n}.zip")):
                os.remove(os.path.join(ckdir, name))


def load_rsl_state(path: str, resume_from: dict) -> dict:
    """The rsl_rl state of the checkpoint ``resume_from`` (``latest.json``'s entry)."""
    steps = int(resume_from["timesteps"])
    f = os.path.join(path, rundir.CHECKPOINT_DIR, RSL_STATE.format(steps))
    if not os.path.isfile(f):
        raise rundir.RunError(
            f"{path}: the checkpoint at {steps} steps has no rsl_rl state ({f} is missing: "
            "written by every --backend warp checkpoint since resume was added); start a new "
            "run. Its models are ordinary SB3 files for eval and export"
        )
    return torch.load(f, map_location="cpu", weights_only=False)


def _linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def check_config(cfg: dict) -> None:
    """What the warp backend trains: ppo, a memoryless flat-observation MLP; the error names
    the key."""
    problems = {
        "algo": (cfg["algo"] != "ppo", "only ppo (rsl_rl's PPO)"),
        "history": (int(cfg.get("history", 1)) != 1, "only history: 1"),
        "privileged_critic": (bool(cfg.get("privileged_critic")), "not a privileged critic"),
        "flatten_obs": (not cfg.get("flatten_obs", True), "only flatten_obs: true (MlpPolicy)"),
        "env_kwargs": (bool(cfg.get("env_kwargs")), "the registered envs only (env_kwargs: {})"),
    }
    net = (cfg.get("policy_kwargs") or {}).get("net_arch", [64, 64])
    problems["policy_kwargs.net_arch"] = (
        not isinstance(net, list),
        "a list of hidden sizes shared by actor and critic",
    )
    for key, (bad, allowed) in problems.items():
        if bad:
            raise cfgmod.ConfigError(
                f"{key}={cfg.get(key.split('.')[0])!r}: backend warp trains {allowed}"
            )


def rsl_config(cfg: dict, n_envs: int) -> dict:
    """rsl_rl's runner/algorithm/model configuration from the run's PPO settings (SB3 names)."""
    hp, pk = cfg.get("hyperparams", {}), cfg.get("policy_kwargs") or {}
    n_steps = int(hp.get("n_steps", 24))
    # SB3's batch_size is a minibatch in samples; rsl_rl counts minibatches per epoch. Capped
    # at 8: with thousands of worlds a small batch_size would mean hundreds of tiny updates.
    minibatches = max(1, min(8, n_steps * n_envs // int(hp.get("batch_size", 64))))
    model = {
        "hidden_dims": list(pk.get("net_arch", [64, 64])),
        "activation": pk.get("activation_fn", "tanh"),
        "obs_normalization": False,  # TorchVecNormalize normalizes, as VecNormalize would
    }
    return {
        "num_steps_per_env": n_steps,
        "save_interval": 10**9,
        "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
        "multi_gpu": None,
        "actor": {
            "class_name": "MLPModel",
            **model,
            "distribution_cfg": {
                "class_name": "GaussianDistribution",
                "std_type": "scalar",
                "init_std": math.exp(float(pk.get("log_std_init", 0.0))),
            },
        },  # fmt: skip
        "critic": {"class_name": "MLPModel", **model},
        "algorithm": {
            "class_name": "PPO",
            "num_learning_epochs": int(hp.get("n_epochs", 10)),
            "num_mini_batches": minibatches,
            "clip_param": float(hp.get("clip_range", 0.2)),
            "gamma": float(hp.get("gamma", 0.99)),
            "lam": float(hp.get("gae_lambda", 0.95)),
            "value_loss_coef": float(hp.get("vf_coef", 0.5)),
            "entropy_coef": float(hp.get("ent_coef", 0.0)),
            "learning_rate": float(hp.get("learning_rate", 3e-4)),
            "max_grad_norm": float(hp.get("max_grad_norm", 0.5)),
            "schedule": "fixed",  # SB3's constant learning rate
            "use_clipped_value_loss": False,  # SB3's default (clip_range_vf None)
        },
    }


def train_warp(
    path: str, cfg: dict, progress: bool = True, resume_from: dict | None = None
) -> None:
    """Train the run at ``path`` (config.yaml written) on ``cfg["n_envs"]`` Warp worlds on
    ``cfg["device"]``; writes the same run directory as the SB3 path."""
    check_config(cfg)
    saved = load_rsl_state(path, resume_from) if resume_from is not None else None
    done_steps = int(saved["steps"]) if saved else 0
    try:
        from rsl_rl.algorithms import PPO

        from manip_rl.envs.warp import check_device
        from manip_rl.envs.warp.vec_env import WarpVecEnv
    except ModuleNotFoundError as e:
        raise cfgmod.ConfigError(
            f"backend=warp needs {e.name}: install the warp extra (`pip install -e .[warp]`)"
        ) from e
    from stable_baselines3.common.logger import configure

    from manip_rl.policies.callbacks import RunCallback
    from manip_rl.policies.run_logs import ResumableCSV
    from manip_rl.transfer.adr_callback import AdrCallback

    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    seed, n = int(cfg["seed"]), int(cfg["n_envs"])
    torch.manual_seed(seed)
    device = cfg.get("device", "cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = check_device(device)
    spec = registry.get(cfg["env_id"])
    reward_type = (
        "dense" if cfg["env_id"].split("/")[-1].split("-v")[0].endswith("Dense") else "sparse"
    )
    adr = AdrCallback.for_run(path, cfg, resume_from)
    hook, world_done = _adr_hooks(adr, cfg, spec.key, n, seed) if adr else (None, None)
    # A resumed run's worlds start afresh from seeds it has not used (as the SB3 path does).
    env_seed = seed + done_steps
    env = WarpVecEnv(
        spec.name, n, device=device, reward_type=reward_type,
        action_mode=cfg.get("action_mode"), randomization=cfgmod.randomization_dict(cfg),
        seed=env_seed, before_reset=hook, batch_randomization=True if adr else None,
        **(cfg.get("train_env_kwargs") or {}),
    )  # fmt: skip
    gamma = float(cfg["hyperparams"].get("gamma", 0.99))
    norm = TorchVecNormalize(env.layout.flat_dim, n, env.device, cfg.get("normalize"), gamma)
    renv = RslEnv(env, norm)
    obs = renv.reset(env_seed)
    obs = renv.get_observations(update=True)  # VecNormalize counts the reset observations too
    rcfg = rsl_config(cfg, n)
    with contextlib.redirect_stdout(io.StringIO()):  # rsl_rl prints the model summaries
        alg = PPO.construct_algorithm(obs, renv, rcfg, str(env.device))
    mirror = SB3Mirror(cfg, seed)
    if saved is not None:
        from manip_rl.policies.run_logs import truncate_logs

        alg.actor.load_state_dict(saved["actor"])
        alg.critic.load_state_dict(saved["critic"])
        alg.optimizer.load_state_dict(saved["optimizer"])
        norm.load_state(saved["normalizer"])
        torch.set_rng_state(saved["torch_rng"])
        obs = renv.get_observations()  # the fresh worlds under the restored statistics
        mirror.model.num_timesteps = done_steps
        mirror.sync(alg.actor, alg.critic, norm)
        truncate_logs(path, done_steps)
    logger = configure(os.path.join(path, rundir.LOG_DIR), ["tensorboard"])
    logger.output_formats.append(ResumableCSV(os.path.join(path, rundir.LOG_DIR, "progress.csv")))
    mirror.model.set_logger(logger)
    cb = RunCallback(path, cfg, resume_from)
    cb.init_callback(mirror.model)
    cb.checkpoint_hooks.append(lambda steps: save_rsl_state(path, alg, norm, steps))
    if adr is not None:
        adr.init_callback(mirror.model)
        renv.world_done = lambda worlds, success: world_done(worlds, success, mirror.model)
        cb.checkpoint_hooks.append(adr.save_state)
    per_iteration = n * rcfg["num_steps_per_env"]
    iterations = max(1, math.ceil(cfg["total_timesteps"] / per_iteration))
    t_start = time.monotonic()
    steps = done_steps
    restore_sigterm = sigterm_as_interrupt()  # SIGTERM ends the run with a checkpoint, as Ctrl-C
    try:
        for it in range(done_steps // per_iteration, iterations):
            t0 = time.monotonic()
            with torch.inference_mode():
                for _ in range(rcfg["num_steps_per_env"]):
                    obs, reward, dones, extras = renv.step(alg.act(obs))
                    alg.process_env_step(obs, reward, dones, extras)
                alg.compute_returns(obs)
            collect_s = time.monotonic() - t0
            losses = alg.update()
            steps = (it + 1) * per_iteration
            mirror.model.num_timesteps = steps
            mirror.sync(alg.actor, alg.critic, norm)
            _log(
                logger,
                renv,
                losses,
                steps,
                per_iteration,
                collect_s,
                time.monotonic() - t0,
                t_start,
            )
            if adr is not None:
                adr._on_rollout_end()
            cb._on_rollout_start()  # evaluation, checkpoint and the time limit, as under SB3
            if cb.out_of_time:
                break
    except KeyboardInterrupt:
        cb.save_checkpoint()
        env.close()
        print(f"\ninterrupted at {mirror.model.num_timesteps} steps; continue with "
              f"`manip-rl train --resume {path}`")  # fmt: skip
        raise SystemExit(130) from None
    finally:
        restore_sigterm()
    cb.finish()
    env.close()
    return {"actor": alg.actor, "normalizer": norm, "sb3": mirror, "steps": steps}


def _log(logger, renv: RslEnv, losses: dict, steps: int, per_it: int, collect_s: float,
         it_s: float, t_start: float) -> None:  # fmt: skip
    if renv.finished:
        returns, success = zip(*renv.finished[-100:], strict=True)
        logger.record("rollout/ep_rew_mean", float(np.mean(returns)))
        logger.record("rollout/success_rate", float(np.mean(success)))
    for k, v in losses.items():
        logger.record(f"train/{k}_loss", float(v))
    logger.record("time/fps", int(per_it / max(it_s, 1e-9)))
    logger.record("time/collect_fps", int(per_it / max(collect_s, 1e-9)))
    logger.record("time/total_timesteps", steps)
    logger.record("time/elapsed_s", round(time.monotonic() - t_start, 2))
    logger.dump(steps)


def _adr_hooks(adr: Any, cfg: dict, task: str, n: int, seed: int):
    """ADR on the batched worlds, as AdrWrapper and AdrCallback do on CPU envs: each world's
    reset draws its episode's ranges (maybe one boundary pinned) into the CPU env that resets
    it; an ended episode that evaluated a boundary records its success in the ADR state."""
    import dataclasses

    from manip_rl.envs.randomization import RandomizationConfig
    from manip_rl.transfer.adr_env import default_noise, set_env_randomization

    rng = np.random.default_rng(seed)
    base = RandomizationConfig.from_dict(cfg["randomization"]) if cfg.get("randomization") else None
    noise_ref = default_noise(task)
    current: list[tuple[str, float] | None] = [None] * n
    ended: list[tuple[str, float] | None] = [None] * n

    def before_reset(world: int, host: Any) -> None:
        config, boundary, value = adr.state.sample_episode(rng, base, noise_ref)
        set_env_randomization(host, config)
        ended[world], current[world] = current[world], (boundary, value) if boundary else None

    def world_done(worlds: list[int], success: list[float], model: Any) -> None:
        changed = False
        for w, s in zip(worlds, success, strict=True):
            if ended[w] is None:
                continue
            adr.boundary_episodes += 1
            u = adr.state.record(ended[w][0], ended[w][1], float(s > 0.5))
            if u is not None:
                adr.events.append({"timesteps": model.num_timesteps, **dataclasses.asdict(u)})
                changed = True
        if changed:
            adr._write_events()

    return before_reset, world_done
