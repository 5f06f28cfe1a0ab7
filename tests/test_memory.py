"""Policies with memory and a privileged critic, end to end: tiny real trainings (SB3 and
sb3-contrib on PandaReach), their export to TorchScript and ONNX, step-by-step parity over
whole episodes, the state a loaded file carries and resets, and the bridge runner's resets."""

import copy
import os

import gymnasium as gym
import numpy as np
import pytest
from training_helpers import tiny_config

from manip_rl import policy_io
from manip_rl.export import PolicyFileError, export_policy, load_policy
from manip_rl.export.build import source_from_run
from manip_rl.export.metadata import validate_metadata
from manip_rl.export.verification import check_closed_loop, check_episode_parity, check_parity
from manip_rl.policies import config as cfgmod
from manip_rl.policies import rundir
from manip_rl.policies.memory import HistoryStack, PrivilegedObservation, privileged_vector
from manip_rl.policies.train import train

# name -> (algo, config overrides). Tiny: 200 steps; one torch thread (an LSTM update on an
# oversubscribed machine's thread pool measured 60x slower than on one thread).
RUNS = {
    "lstm": ("recurrent_ppo", {}),
    "history": ("ppo", {"history": 3}),
    "privileged": ("ppo", {"privileged_critic": True}),
    "lstm_privileged": ("recurrent_ppo", {"privileged_critic": True}),
}


def _train(root, name: str) -> str:
    algo, over = RUNS[name]
    path = os.path.join(root, name)
    os.makedirs(path)
    cfg = tiny_config(algo, steps=200, update_threads=1, **over)
    cfg["eval"] = {"freq": 0, "episodes": 1}
    if algo == "recurrent_ppo":
        cfg["policy_kwargs"]["lstm_hidden_size"] = 16
    cfg = cfgmod.validate(cfg)
    rundir.write_config(path, cfg)
    train(path, cfg, progress=False)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory_runs")
    return {name: _train(str(root), name) for name in RUNS}


@pytest.fixture(scope="module")
def files(runs, tmp_path_factory):
    """Each run exported to TorchScript and ONNX: {(name, fmt): path}."""
    root = tmp_path_factory.mktemp("memory_files")
    out = {}
    for name, path in runs.items():
        source = source_from_run(path, "final")
        for fmt, ext in (("torchscript", "pt"), ("onnx", "onnx")):
            out[name, fmt] = str(root / f"{name}.{ext}")
            export_policy(source, out[name, fmt], fmt=fmt)
    return out


def _episode_obs(env_id: str, n: int = 30, seed: int = 3) -> np.ndarray:
    env = gym.make(env_id, randomization="default")
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(n):
        out.append(policy_io.flatten_observation(obs))
        obs, *_ = env.step(env.action_space.sample())
    env.close()
    return np.stack(out)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("name", list(RUNS))
def test_exported_files_match_sb3_step_by_step_over_whole_episodes(runs, files, name, fmt):
    source = source_from_run(runs[name], "final")
    policy = load_policy(files[name, fmt])
    md = policy.metadata
    layout = policy.layout
    # The actor alone: the file takes the robot's observation, never the privileged entry.
    assert policy.obs_dim == layout.flat_dim
    assert md["provenance"]["critic"] == ("privileged" if "privileged" in name else "observation")
    if name == "privileged":
        assert not policy.stateful and md["schema_version"] == 1 and "memory" not in md
        report = check_parity(policy, source, n=3000)
    else:
        assert policy.stateful and md["schema_version"] == 2
        report = check_episode_parity(policy, source, episodes=2, sequences=4, length=50)
        assert report["n"] == 2 * 50 + 4 * 50  # PandaReach episodes are 50 steps
    assert report["ok"], report
    if name.startswith("lstm"):
        assert md["memory"]["kind"] == "lstm"
        assert [(s["name"], s["shape"]) for s in md["memory"]["state"]] == [
            ("h", [1, 16]),
            ("c", [1, 16]),
        ]
    elif name == "history":
        assert md["memory"] == {
            "kind": "history",
            "history": 3,
            "state": [
                {
                    "name": "history",
                    "shape": [2 * layout.flat_dim],
                    "dtype": "float32",
                    "reset": "zeros",
                }  # fmt: skip
            ],
        }
        assert len(md["normalization"]["mean"]) == 3 * layout.flat_dim


def test_closed_loop_check_resets_the_memory_at_each_episode(runs, files):
    source = source_from_run(runs["lstm"], "final")
    report = check_closed_loop(load_policy(files["lstm", "torchscript"]), source, episodes=2)
    # Same episodes, same policy, each starting from zeros: the same successes.
    assert report["sb3"]["successes"] == report["file"]["successes"]


def test_parity_fails_for_a_file_that_forgets_its_state(runs, files):
    """The episode check can fail: a file whose state is dropped every step differs."""
    source = source_from_run(runs["lstm"], "final")
    policy = load_policy(files["lstm", "torchscript"])
    remembering = policy.act

    def forgetful(obs):
        policy.reset()
        return remembering(obs)

    policy.act = forgetful
    report = check_episode_parity(policy, source, episodes=1, sequences=2, length=20)
    assert not report["ok"] and report["max_abs_diff"] > 1e-4


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_lstm_file_carries_its_state_and_reset_starts_an_episode(files, fmt):
    policy = load_policy(files["lstm", fmt])
    obs = _episode_obs(policy.env_id)
    assert policy.state is None
    first = np.stack([policy.act(o) for o in obs])
    state = policy.state
    assert set(state) == {"h", "c"} and state["h"].shape == (1, 1, 16)
    assert np.abs(state["h"]).max() > 0
    again = np.stack([policy.act(o) for o in obs])  # no reset: the memory of the first pass
    assert np.abs(again - first).max() > 1e-6
    policy.reset()
    assert policy.state is None
    np.testing.assert_array_equal(np.stack([policy.act(o) for o in obs]), first)
    # peek acts from the current state without moving it on.
    before = policy.state
    a = policy.peek(obs[0])
    np.testing.assert_array_equal(policy.state["h"], before["h"])
    np.testing.assert_array_equal(a, policy.act(obs[0]))
    # A batch carries one state per row; another batch size needs a reset.
    with pytest.raises(ValueError, match="reset"):
        policy.act(obs[:2])
    policy.reset()
    batch = policy.act(np.stack([obs[0], obs[0]]))
    np.testing.assert_allclose(batch[0], first[0], atol=1e-6)
    other = load_policy(files["lstm", "onnx" if fmt == "torchscript" else "torchscript"])
    np.testing.assert_allclose(np.stack([other.act(o) for o in obs]), first, atol=1e-5)


def test_a_history_file_holds_the_training_stack_as_its_state(files):
    policy = load_policy(files["history", "torchscript"])
    obs = _episode_obs(policy.env_id, n=4)
    stack = HistoryStack(3, policy.obs_dim)
    for o in obs:
        stacked = stack.push(o)
        policy.act(o)
        # The state is the two newest observations: what the next step stacks behind it.
        np.testing.assert_array_equal(policy.state["history"][0], stacked[: 2 * policy.obs_dim])
    policy.reset()
    policy.act(obs[0])
    assert not policy.state["history"][0][policy.obs_dim :].any()  # zeros behind the first


def test_shipped_memoryless_files_still_load_and_reset_is_a_no_op():
    here = os.path.join(os.path.dirname(policy_io.__file__), "policies", "pretrained")
    policy = load_policy(os.path.join(here, "panda_reach.pt"))
    assert policy.metadata["schema_version"] == 1 and not policy.stateful
    obs = np.zeros(policy.obs_dim, dtype=np.float32)
    a = policy.act(obs)
    policy.reset()
    np.testing.assert_array_equal(policy.act(obs), a)
    np.testing.assert_array_equal(policy.peek(obs), a)


def test_bad_memory_metadata_is_refused_naming_the_field(files):
    md = load_policy(files["lstm", "torchscript"]).metadata
    path = "lstm.pt"
    validate_metadata(copy.deepcopy(md), path)

    def refused(edit, field):
        bad = copy.deepcopy(md)
        edit(bad)
        with pytest.raises(PolicyFileError, match=field.replace("[", r"\[").replace("]", r"\]")):
            validate_metadata(bad, path)

    refused(lambda m: m["memory"].update(kind="gru"), "memory.kind")
    refused(lambda m: m["memory"]["state"].pop(), "memory.state")
    refused(lambda m: m["memory"]["state"][0].update(shape=[1, 17]), "memory.state[0].shape")
    refused(lambda m: m["memory"]["state"][0].update(shape=16), "memory.state[0].shape")
    refused(lambda m: m["memory"]["state"][1].update(name="h"), "memory.state[1].name")
    refused(lambda m: m["memory"]["state"][1].update(reset="keep"), "memory.state[1].reset")
    refused(lambda m: m["memory"]["state"][0].update(dtype="float64"), "memory.state[0].dtype")
    refused(lambda m: m["memory"]["lstm"].update(hidden_size=0), "memory.lstm.hidden_size")
    refused(lambda m: m.update(schema_version=1), "memory")
    hist = load_policy(files["history", "onnx"]).metadata
    bad = copy.deepcopy(hist)
    bad["memory"]["history"] = 1
    with pytest.raises(PolicyFileError, match="memory.history"):
        validate_metadata(bad, "history.onnx", "onnx")


def test_memory_settings_are_checked_naming_the_key():
    ppo = tiny_config("ppo")
    rec = tiny_config("recurrent_ppo")
    for cfg, over, key in (
        (rec, {"history": 4}, "history=4 with algo=recurrent_ppo"),
        (ppo, {"history": 0}, "history=0"),
        (ppo, {"privileged_critic": "yes"}, "privileged_critic"),
        (tiny_config("a2c"), {"privileged_critic": True}, "privileged_critic=true with algo=a2c"),
        (ppo, {"policy_kwargs": {"lstm_hidden_size": 8}}, "policy_kwargs.lstm_hidden_size"),
        (rec, {"policy_kwargs": {"n_lstm_layers": 0}}, "policy_kwargs.n_lstm_layers"),
        (ppo, {"history": 2, "flatten_obs": False, "policy": "MultiInputPolicy"},
         "history=2 needs flatten_obs"),
    ):  # fmt: skip
        with pytest.raises(cfgmod.ConfigError, match=key):
            cfgmod.validate({**cfg, **over})


def test_the_privileged_entry_is_the_draw_and_the_noiseless_state():
    env = PrivilegedObservation(gym.wrappers.FlattenObservation(
        gym.make("manip_rl/PandaPushDense-v0", randomization="default")))  # fmt: skip
    base = env.unwrapped
    obs, info = env.reset(seed=5)
    draw = info["randomization"]
    priv = obs["privileged"]
    assert priv.shape == env.observation_space["privileged"].shape
    # The first 7 values are the joint damping written into the model: nominal x the draw.
    nominal = base._randomizer._nominal["dof_damping"][base.ids.arm_dof]
    np.testing.assert_allclose(priv[:7], nominal * draw["joint_damping"], rtol=1e-6)
    # The last 7 values are the object's true pose; the robot's reading of it is noisy.
    obs, *_ = env.step(np.zeros(env.action_space.shape))
    o = base.ids.object_qpos
    true_pose = base.data.qpos[o : o + 7]
    np.testing.assert_allclose(obs["privileged"][-7:], true_pose, atol=1e-6)
    seen = obs["obs"][:3]  # achieved_goal: the object position as the robot reads it
    assert np.abs(seen - true_pose[:3]).max() > 1e-5
    nominal_env = gym.make("manip_rl/PandaPushDense-v0", randomization=None)
    nominal_env.reset(seed=5)
    assert privileged_vector(nominal_env.unwrapped).shape == priv.shape
    env.close()
    nominal_env.close()


def test_the_bridge_runner_resets_the_memory_on_enable_and_on_a_new_goal(files):
    from manip_rl.ros_bridge.runner import PolicyRunner

    policy = load_policy(files["lstm", "torchscript"])
    runner = PolicyRunner(policy)
    runner.dry_run()  # warm-up calls leave the memory as it was
    assert policy.state is None
    names = runner.joint_map.required
    home = np.asarray(policy.action_spec.home)
    goal = np.array([0.5, 0.1, 0.3])

    def episode(goal, n=5):
        out = []
        for i in range(n):
            reading = runner.joint_map.read(names, home + 0.01 * i, np.zeros(len(names)))
            out.append(runner.step(reading, goal).action)
        return np.stack(out)

    first = episode(goal)
    assert policy.state is not None
    runner.warm(np.zeros(policy.obs_dim, dtype=np.float32))  # the bridge's keep-warm call
    continued = episode(goal)
    assert np.abs(continued - first).max() > 1e-6  # the memory carried on
    runner.reset()  # what ~/enable calls
    assert policy.state is None
    np.testing.assert_array_equal(episode(goal), first)
    # A goal 5 cm away is a new episode: the memory restarts at its first step (the previous
    # action is the robot's and carries on; zero it here to compare with a fresh runner).
    episode(goal, 2)
    runner.prev_action = np.zeros(runner.spec.dim)
    moved = goal + np.array([0.05, 0.0, 0.0])
    np.testing.assert_array_equal(episode(moved, 1)[0], _first_step(files, moved, home))


def _first_step(files, goal, home):
    """The first action of a fresh runner (memory at zeros, previous action zero)."""
    from manip_rl.ros_bridge.runner import PolicyRunner

    runner = PolicyRunner(load_policy(files["lstm", "torchscript"]))
    names = runner.joint_map.required
    reading = runner.joint_map.read(names, home, np.zeros(len(names)))
    return runner.step(reading, goal).action


def test_a_stateful_torchscript_file_converts_to_onnx_with_sequence_parity(files, tmp_path):
    from manip_rl.export import convert_policy_file

    out = str(tmp_path / "lstm_converted.onnx")
    report = convert_policy_file(files["lstm", "torchscript"], out, samples=2000)
    assert report["ok"] and report["n"] >= 2000 - 50
    converted = load_policy(out)
    assert converted.state_spec == [("h", (1, 16)), ("c", (1, 16))]


def test_a_robustness_sweep_starts_a_stateful_file_afresh_each_batch(files):
    from manip_rl.episodes import run_episodes
    from manip_rl.transfer.actors import FileActor

    policy = load_policy(files["lstm", "torchscript"])
    env = policy.make_env(randomization="default")
    act = FileActor(policy, "lstm").bind([env])
    runs = []
    for _ in range(2):  # the same episode twice: the second must not start from the first's end
        actions = []
        run_episodes([env], lambda obs, a=actions: a.append(act(obs)) or a[-1], 1, seed=7)
        runs.append(np.concatenate(actions))
    env.close()
    np.testing.assert_array_equal(runs[0], runs[1])
