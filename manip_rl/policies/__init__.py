"""Training, evaluation, videos and plots of policies; the policy-gradient family as SB3 algorithms.

Modules are imported on use: ``rundir`` (the run directory contract), ``algorithms`` (the
``--algo`` table), ``reinforce`` and ``ppo_kl`` (written here), ``train``, ``evaluate``,
``video``, ``plot``.
"""
