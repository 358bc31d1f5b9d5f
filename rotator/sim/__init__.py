"""A faithful E-HPC simulator: the OpenAPI gateway's signature checks and error shapes, the
``ListClusters`` and ``ModifyVisualServicePasswd`` rules, fault injection and an admin API.

    async with Simulator(SimConfig(clusters=20, faults=FaultConfig(drop_rate=0.1))) as sim:
        ...  # point a client at sim.base_url; inspect with GET sim.base_url/_sim/clusters

    rotator sim --clusters 200 --tls        # the same, as a process (see rotator.sim.cli)
"""

from __future__ import annotations

from rotator.sim.cli import add_arguments, run
from rotator.sim.config import FaultConfig, SimConfig
from rotator.sim.server import Simulator

__all__ = ["FaultConfig", "SimConfig", "Simulator", "add_arguments", "run"]
