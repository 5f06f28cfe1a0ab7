"""The lecture's comparison, measured: the policy-gradient family on one task.

1. Learning curves at equal environment steps, several seeds each, of REINFORCE (reward-to-go,
   without and with a learned baseline), A2C, TRPO, PPO with the adaptive KL penalty and PPO
   with clipping, all through the same pipeline (``manip_rl.policies.train``: same envs,
   randomization, VecNormalize, evaluation).
2. The variance of the policy-gradient estimate for one policy, over independent batches of
   complete episodes, with each weighting of the log-probabilities: the whole episode's return,
   reward-to-go, reward-to-go minus the batch mean, minus a learned V(s), and the critic's
   GAE(0.95) advantage. Variance = E||g - mean g||^2 over batches (trace of the covariance).

Writes ``OUT/algorithms.png`` and ``OUT/algorithms.md`` (tables), and prints the tables.

    python bench/algorithms.py                                  # PandaReach, 60k steps x 3 seeds
    python bench/algorithms.py --steps 200000 --seeds 3 --task PandaReach
    python bench/algorithms.py --variance-only
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

# name -> (algo, overrides)
VARIANTS = {
    "REINFORCE": ("reinforce", ["hyperparams.baseline=none"]),
    "REINFORCE + baseline": ("reinforce", ["hyperparams.baseline=value"]),
    "A2C": ("a2c", []),
    "TRPO": ("trpo", []),
    "PPO-KL": ("ppo_kl", []),
    "PPO-clip": ("ppo", []),
}


# ------------------------------------------------------------------------------ learning curves
def train_variant(task: str, name: str, seed: int, steps: int, out: str) -> str:
    from manip_rl.policies import config as cfgmod
    from manip_rl.policies import rundir
    from manip_rl.policies.train import train

    algo, overrides = VARIANTS[name]
    cfg = cfgmod.load_config(task, algo)
    evals = max(steps // 6, 1)
    cfg = cfgmod.apply_overrides(
        cfg,
        [*overrides, f"seed={seed}", f"total_timesteps={steps}", f"eval.freq={evals}",
         "eval.episodes=20", f"checkpoint_freq={steps}"],
    )  # fmt: skip
    cfg["randomization"] = cfgmod.randomization_dict(cfg)
    cfgmod.validate(cfg)
    path = os.path.join(
        out, "runs", f"{algo}{'_nobase' if 'none' in str(overrides) else ''}_s{seed}"
    )
    if os.path.isfile(os.path.join(path, "final", "model.zip")):
        return path  # finished earlier: reuse
    os.makedirs(path, exist_ok=True)
    rundir.write_config(path, cfg)
    train(path, cfg, progress=False)
    return path


def curves(task: str, steps: int, seeds: int, out: str) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = {n: [] for n in VARIANTS}
    for seed in range(seeds):  # seeds outermost: a cut-short bench still compares every method
        for name in VARIANTS:
            t0 = time.monotonic()
            runs[name].append(train_variant(task, name, seed, steps, out))
            print(f"  {name} seed {seed}: {time.monotonic() - t0:.0f} s", flush=True)
    return runs


def summarize_curves(runs: dict[str, list[str]], out: str, task: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from manip_rl.fileio import atomic_path
    from manip_rl.policies.plot import load_curves

    fig, (ax_s, ax_r) = plt.subplots(1, 2, figsize=(12, 4.5))
    lines = [
        f"Learning curves on {task} (randomized training and evaluation), mean over seeds:",
        "",
        "| method | seeds | env steps | success randomized (final) | success nominal (final) "
        "| best randomized | env steps/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (name, paths) in enumerate(runs.items()):
        evs = [load_curves(p)["eval"] for p in paths]
        evs = [e for e in evs if e]
        if not evs:
            continue
        n = min(len(e["timesteps"]) for e in evs)
        x = evs[0]["timesteps"][:n]
        sr = np.stack([e["success_randomized"][:n] for e in evs])
        sn = np.stack([e["success_nominal"][:n] for e in evs])
        c = f"C{i}"
        ax_s.plot(x, sr.mean(0), color=c, label=name)
        ax_s.fill_between(x, sr.min(0), sr.max(0), color=c, alpha=0.15)
        trs = [load_curves(p)["train"] for p in paths]
        for j, tr in enumerate(trs):
            ok = ~np.isnan(tr["rollout/ep_rew_mean"])
            ax_r.plot(tr["time/total_timesteps"][ok], tr["rollout/ep_rew_mean"][ok], color=c,
                      alpha=0.7, label=name if j == 0 else None)  # fmt: skip
        fps = [
            tr["time/total_timesteps"][-1]
            / max(tr["time/wall_s"][~np.isnan(tr["time/wall_s"])][-1], 1e-9)
            for tr in trs
            if "time/wall_s" in tr
        ]
        lines.append(
            f"| {name} | {len(evs)} | {int(x[-1])} | {sr[:, -1].mean():.0%} ± {sr[:, -1].std():.0%} "
            f"| {sn[:, -1].mean():.0%} ± {sn[:, -1].std():.0%} | {sr.max(1).mean():.0%} "
            f"| {np.mean(fps):.0f} |"
        )
    ax_s.set(xlabel="environment steps", ylabel="success rate (randomized eval)", ylim=(-0.02, 1.02),
             title="success: mean, band = min..max over seeds")  # fmt: skip
    ax_r.set(xlabel="environment steps", ylabel="training episode return", title="return")
    for ax in (ax_s, ax_r):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Policy-gradient family on {task}")
    fig.tight_layout()
    with atomic_path(os.path.join(out, "algorithms.png")) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return "\n".join(lines)


# ------------------------------------------------------------------------------ gradient variance
def gradient_variance(task: str, batches: int, value_batches: int, n_envs: int, seed: int) -> str:
    import torch as th
    from stable_baselines3.common.vec_env import DummyVecEnv

    from manip_rl.policies import config as cfgmod
    from manip_rl.policies.reinforce import REINFORCE, monte_carlo_returns

    th.manual_seed(seed)
    cfg = cfgmod.load_config(task, "reinforce")
    cfg["randomization"] = cfgmod.randomization_dict(cfg)
    venv = DummyVecEnv([cfgmod.env_factory(cfg, seed=seed + i) for i in range(n_envs)])
    gamma = float(cfg["hyperparams"]["gamma"])
    model = REINFORCE("MlpPolicy", venv, policy_kwargs=cfgmod.policy_kwargs(cfg), seed=seed,
                      device="cpu")  # fmt: skip
    policy = model.policy
    horizon = venv.envs[0].spec.max_episode_steps

    def collect():
        obs = venv.reset()
        obs_l, act_l, rew_l = [], [], []
        for _ in range(horizon):
            with th.no_grad():
                act, _, _ = policy(th.as_tensor(obs))
            a = act.numpy()
            obs_l.append(obs)
            act_l.append(a)
            obs, r, _, _ = venv.step(np.clip(a, -1, 1))
            rew_l.append(r)
        starts = np.zeros((horizon, n_envs))
        starts[0] = 1
        return np.stack(obs_l), np.stack(act_l), np.stack(rew_l).astype(np.float64), starts

    data = [collect() for _ in range(batches + value_batches)]
    fit, test = data[:value_batches], data[value_batches:]

    # Learned baseline: regress V(s) on reward-to-go over batches not used below.
    obs_fit = th.as_tensor(np.concatenate([d[0].reshape(-1, d[0].shape[-1]) for d in fit]))
    ret_fit = th.as_tensor(np.concatenate(
        [monte_carlo_returns(d[2], d[3], gamma).reshape(-1) for d in fit]), dtype=th.float32)  # fmt: skip
    vparams = list(policy.mlp_extractor.value_net.parameters()) + list(
        policy.value_net.parameters()
    )
    opt = th.optim.Adam(vparams, lr=3e-3)
    for _ in range(500):
        opt.zero_grad()
        v = policy.value_net(policy.mlp_extractor.forward_critic(obs_fit)).flatten()
        loss = ((v - ret_fit) ** 2).mean()
        loss.backward()
        opt.step()
    explained = 1 - float(((v.detach() - ret_fit) ** 2).mean() / ret_fit.var())

    actor = [p for n, p in policy.named_parameters() if "value" not in n]

    def grad(obs, actions, weights) -> np.ndarray:
        _, logp, _ = policy.evaluate_actions(th.as_tensor(obs), th.as_tensor(actions))
        loss = -(th.as_tensor(weights, dtype=th.float32) * logp).mean()
        gs = th.autograd.grad(loss, actor)
        return th.cat([g.flatten() for g in gs]).numpy().astype(np.float64)

    estimators = {
        "episode return G_0": [],
        "reward-to-go G_t": [],
        "G_t - mean": [],
        "G_t - V(s_t) (learned)": [],
        "GAE(0.95) advantage (critic)": [],
    }
    for obs, act, rew, starts in test:
        flat_obs = obs.reshape(-1, obs.shape[-1]).astype(np.float32)
        flat_act = act.reshape(-1, act.shape[-1]).astype(np.float32)
        g0 = monte_carlo_returns(rew, starts, gamma, reward_to_go=False)
        gt = monte_carlo_returns(rew, starts, gamma, reward_to_go=True)
        with th.no_grad():
            v = policy.value_net(policy.mlp_extractor.forward_critic(th.as_tensor(flat_obs)))
        v = v.numpy().reshape(gt.shape).astype(np.float64)
        v_next = np.concatenate([v[1:], np.zeros((1, n_envs))])  # episode ends at the horizon
        delta = rew + gamma * v_next - v
        gae = np.zeros_like(delta)
        acc = np.zeros(n_envs)
        for t in reversed(range(len(delta))):
            acc = delta[t] + gamma * 0.95 * acc
            gae[t] = acc
        for name, w in (
            ("episode return G_0", g0),
            ("reward-to-go G_t", gt),
            ("G_t - mean", gt - gt.mean()),
            ("G_t - V(s_t) (learned)", gt - v),
            ("GAE(0.95) advantage (critic)", gae),
        ):
            estimators[name].append(grad(flat_obs, flat_act, w.reshape(-1)))
    venv.close()

    base = None
    lines = [
        f"Policy-gradient estimate for one (initial) policy on {task}: {batches} independent batches "
        f"of {n_envs} complete episodes ({n_envs * horizon} steps) each; the baseline V was fitted on "
        f"{value_batches} other batches (explained variance {explained:.2f}).",
        "",
        "| weighting of log π(a_t|s_t) | variance E‖g − ḡ‖² | relative to G_0 | ‖ḡ‖² |",
        "|---|---|---|---|",
    ]
    for name, gs in estimators.items():
        g = np.stack(gs)
        var = float(((g - g.mean(0)) ** 2).sum(1).mean())
        base = base or var
        lines.append(
            f"| {name} | {var:.3e} | {var / base:.3f} | {float((g.mean(0) ** 2).sum()):.3e} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="PandaReach")
    p.add_argument("--steps", type=int, default=60000, help="environment steps per run")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="runs/bench_algorithms", help="runs, PNG and tables go here")
    p.add_argument("--batches", type=int, default=40, help="batches for the variance estimate")
    p.add_argument("--variance-only", action="store_true")
    p.add_argument("--curves-only", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    parts = []
    if not args.curves_only:
        t0 = time.monotonic()
        parts.append(gradient_variance(args.task, args.batches, 10, 8, seed=0))
        print(parts[-1], f"\n({time.monotonic() - t0:.0f} s)\n", flush=True)
    if not args.variance_only:
        runs = curves(args.task, args.steps, args.seeds, args.out)
        parts.append(summarize_curves(runs, args.out, args.task))
        print(parts[-1], flush=True)
    from manip_rl.fileio import atomic_write_text

    atomic_write_text(os.path.join(args.out, "algorithms.md"), "\n\n".join(parts) + "\n")
    print(
        f"\nwrote {args.out}/algorithms.md"
        + ("" if args.variance_only else f" and {args.out}/algorithms.png")
    )


if __name__ == "__main__":
    main()
