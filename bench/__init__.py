"""``make bench``: rotator against what a user would write today, on one machine, in one run.

    python -m bench.run                 # 1,000 clusters and the quota case: about 4-5 minutes
    python -m bench.run --quick         # a smoke test

The orchestrator (:mod:`bench.run`) starts a TLS OpenBao dev server and the TLS simulator as
subprocesses, then runs every contender in a fresh subprocess of its own: rotator through its
public CLI (``rotator rotate --all --config FILE``, :mod:`bench.contender_rotator` writes the
file), the SDK scripts as ``python -m bench.contender_sdk``. :mod:`bench.procs` measures each
from outside over the window of its work; :mod:`bench.report` prints ratios from the one run.
"""
