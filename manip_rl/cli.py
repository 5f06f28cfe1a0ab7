"""The ``manip-rl`` command. Each subcommand lives in its own module, imported only when used (so
``manip-rl --help`` does not pay for torch or rclpy), and exposes ``add_arguments(parser)`` and
``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("manip_rl.demo", "the main job, end to end on embedded defaults"),
    "rollout": (
        "manip_rl.envs.rollout",
        "run a scripted or random controller, print success, write a video",
    ),
    "envs": ("manip_rl.envs.listing", "list the registered environments and their spaces"),
    "train": ("manip_rl.policies.train", "train a policy (PPO by default) on a task"),
    "sweep": (
        "manip_rl.distributed.sweep",
        "runs over seeds and hyperparameters on Ray Tune (grid or Optuna), summary and plot",
    ),
    "eval": ("manip_rl.policies.evaluate", "success rate of a run with a 95%% interval"),
    "video": ("manip_rl.policies.video", "MP4/GIF of a run's policy"),
    "plot": ("manip_rl.policies.plot", "learning curves of one or more runs as PNG"),
    "export": ("manip_rl.export.cli", "freeze a run's policy into one TorchScript file"),
    "robustness": (
        "manip_rl.transfer.cli",
        "success against shifted dynamics and sensing, several policies, PNG and table",
    ),
    "sim-arm": ("manip_rl.ros_bridge.sim_arm", "the simulated Panda as a ROS 2 node"),
    "serve": ("manip_rl.ros_bridge.policy_bridge", "serve a policy file to an arm over ROS 2"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manip-rl",
        description="Domain-randomized manipulation: train, export and serve policies.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text.replace("%%", "%")
        )  # help= is %-formatted
        if name == command:
            _load(name).add_arguments(p)
    return parser


def _load(name: str):
    module, _ = COMMANDS[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("manip_rl"):
            raise SystemExit(
                f"manip-rl {name}: this command is not part of this build yet ({e.name})"
            ) from e
        raise SystemExit(
            f"manip-rl {name}: a dependency is missing ({e.name}); install the project with "
            f"`pip install -e .[ros,onnx,ray,warp]` (see README)"
        ) from e


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(_load(args.command).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
