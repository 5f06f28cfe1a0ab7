"""Past one machine on Ray: rollout workers for one run (:mod:`.ray_vec_env`) and sweeps of
runs over seeds and hyperparameters (:mod:`.sweep`). Needs the ``ray`` extra
(``pip install -e .[ray]``); see docs/distributed.md."""
