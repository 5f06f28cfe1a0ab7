"""A tiny, fast training configuration shared by the training tests."""

from manip_rl.policies import config as cfgmod


def tiny_config(algo: str, steps: int = 400, **over) -> dict:
    cfg = cfgmod.load_config("PandaReach", algo)
    cfg.update(
        total_timesteps=steps, n_envs=2, vec_env="dummy", checkpoint_freq=200, log_interval=1
    )
    cfg["eval"] = {"freq": 200, "episodes": 2}
    cfg["policy_kwargs"] = {"net_arch": [16, 16], "activation_fn": "tanh"}
    if algo == "recurrent_ppo":
        # A small LSTM on one thread: an LSTM update over a busy machine's torch thread pool
        # measured 60x slower per call than on one thread.
        cfg["policy_kwargs"]["lstm_hidden_size"] = 16
        cfg["update_threads"] = 1
    hp = cfg["hyperparams"]
    hp["n_steps"] = 50
    if "batch_size" in hp:
        hp["batch_size"] = 50
    if "n_epochs" in hp:
        hp["n_epochs"] = 2
    cfg.update(over)
    cfg["randomization"] = cfgmod.randomization_dict(cfg)
    cfgmod.validate(cfg)
    return cfg
