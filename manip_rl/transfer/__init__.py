"""Sim-to-real transfer: automatic domain randomization, robustness sweeps, held-out sets and
boundary audits (docs/transfer.md).

Modules are imported on use, one job each:

- ADR (``manip-rl train --dr adr``): ``adr`` (settings, state and the update rule; no Gymnasium
  or SB3), ``adr_run`` (the files of an ADR run), ``adr_env`` (the env wrapper and its picklable
  factory), ``adr_callback`` (the SB3 training callback), ``adr_plot`` (the ranges' plot).
- Robustness (``manip-rl robustness``): ``shifts`` (swept quantities, shift configs, held-out
  sets), ``actors`` (policy files, run directories, the scripted controller), ``sweep`` (the
  runner and the sweep), ``boundaries`` (boundary audits), ``reports`` (CSV, markdown, plots),
  ``cli`` (the command).
"""
