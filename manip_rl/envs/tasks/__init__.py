"""One module per task: its ``TASK = TaskSpec(...)``, its env class and its scripted controller.
:mod:`manip_rl.envs.registry` discovers every module here that defines ``TASK``; adding a task
is adding a module (and its YAML under ``manip_rl/configs``)."""
