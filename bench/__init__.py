"""``make bench``: rotator against what a user would write today, on one machine, in one run.

    python -m bench.run                 # 2,000 clusters, about 2.5 minutes on 2 cores
    python -m bench.run --quick         # a smoke test

The orchestrator (:mod:`bench.run`) starts a TLS OpenBao dev server and the TLS simulator as
subprocesses, then runs every contender in a fresh subprocess of its own (``python -m
bench.contender_rotator`` / ``bench.contender_sdk``) so that CPU time and peak RSS are the
contender's alone. Each contender prints one JSON result line; the orchestrator prints ratios.
"""
