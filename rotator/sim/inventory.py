"""The simulated fleet: clusters spread round-robin over regions, deterministic from a seed.

inventory = build_inventory(count=20, regions=("cn-hangzhou", "cn-shanghai"), seed=0)
cluster = inventory.get("ehpc-hz-Ab3dE5fG7h")
page = inventory.in_region("cn-hangzhou")[0:10]
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

__all__ = ["STATUSES", "Inventory", "SimCluster", "build_inventory", "region_code"]

# The values the E-HPC reference lists for ClusterInfoSimple.Status, and no others.
STATUSES = ("uninit", "creating", "init", "running", "exception", "releasing")
_ALNUM = string.ascii_letters + string.digits
_ROOT_ALPHABET = _ALNUM + "!@#%^*-_=+"
_KNOWN_CODES = {
    "cn-hangzhou": "hz",
    "cn-shanghai": "sh",
    "cn-beijing": "bj",
    "cn-shenzhen": "sz",
    "cn-zhangjiakou": "zjk",
    "cn-huhehaote": "hhht",
    "cn-wulanchabu": "wlcb",
    "cn-qingdao": "qd",
    "cn-chengdu": "cd",
    "cn-hongkong": "hk",
}
# Every NOT_RUNNING_EVERY-th cluster (by position) is not running, alternately in exception and
# still initialising, so any fleet of that size or more has one to test InvalidClusterStatus with.
NOT_RUNNING_EVERY = 20
_NOT_RUNNING_OFFSET = 7


def region_code(region: str) -> str:
    """``cn-hangzhou`` -> ``hz``; other regions: initials of their parts (``ap-se-1``: ``as1``)."""
    known = _KNOWN_CODES.get(region)
    if known is not None:
        return known
    parts = [p for p in region.lower().split("-") if p]
    return "".join(p[0] for p in parts if p[0].isalnum()) or "x"


@dataclass(slots=True)
class SimCluster:
    """One cluster's mutable state (``busy_until`` is a ``time.monotonic()`` instant)."""

    id: str
    name: str
    region: str
    zone: str
    status: str
    root_password: str = field(repr=False)
    vnc_password: str = field(repr=False)
    create_time: str
    change_count: int = 0
    busy_until: float = 0.0
    login_node: str = "127.0.0.1"
    """What ListClusters reports as LoginNodes: where the simulated visual service listens."""

    def admin_view(self) -> dict[str, object]:
        """The admin API's view, passwords included (the only place they leave the simulator)."""
        return {
            "id": self.id,
            "name": self.name,
            "region": self.region,
            "zone": self.zone,
            "status": self.status,
            "root_password": self.root_password,
            "vnc_password": self.vnc_password,
            "change_count": self.change_count,
        }

    def api_view(self) -> dict[str, object]:
        """``ClusterInfoSimple`` as ListClusters returns it."""
        return {
            "Id": self.id,
            "Name": self.name,
            "RegionId": self.region,
            "ZoneId": self.zone,
            "Status": self.status,
            "Description": f"simulated cluster {self.name}",
            "CreateTime": self.create_time,
            "OsTag": "CentOS_7.9_64",
            "SchedulerType": "pbs",
            "AccountType": "nis",
            "DeployMode": "Simple",
            "HasVpcConfig": True,
            "LoginNodes": self.login_node,
        }


@dataclass(slots=True)
class Inventory:
    """All clusters, in a stable order, indexed by id and by region."""

    clusters: list[SimCluster]
    by_id: dict[str, SimCluster] = field(init=False)
    by_region: dict[str, list[SimCluster]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {c.id: c for c in self.clusters}
        self.by_region = {}
        for cluster in self.clusters:
            self.by_region.setdefault(cluster.region, []).append(cluster)

    def get(self, cluster_id: str) -> SimCluster | None:
        return self.by_id.get(cluster_id)

    def in_region(self, region: str | None) -> list[SimCluster]:
        """The clusters of ``region`` (all of them for ``None``), in stable order."""
        if region is None:
            return self.clusters
        return self.by_region.get(region, [])

    def running(self) -> list[SimCluster]:
        return [c for c in self.clusters if c.status == "running"]


def _vnc_password(rng: random.Random) -> str:
    letters = [rng.choice(string.ascii_letters) for _ in range(3)]
    digits = [rng.choice(string.digits) for _ in range(3)]
    chars = letters + digits
    rng.shuffle(chars)
    return "".join(chars)


def build_inventory(*, count: int, regions: tuple[str, ...], seed: int) -> Inventory:
    """``count`` clusters round-robin over ``regions``; the same seed gives the same fleet."""
    rng = random.Random(seed)
    clusters: list[SimCluster] = []
    seen: set[str] = set()
    for index in range(count):
        region = regions[index % len(regions)]
        code = region_code(region)
        cluster_id = ""
        while not cluster_id or cluster_id in seen:
            cluster_id = f"ehpc-{code}-" + "".join(rng.choice(_ALNUM) for _ in range(10))
        seen.add(cluster_id)
        status = "running"
        if index % NOT_RUNNING_EVERY == _NOT_RUNNING_OFFSET:
            status = "init" if (index // NOT_RUNNING_EVERY) % 2 == 0 else "exception"
        day = 1 + index % 28
        clusters.append(
            SimCluster(
                id=cluster_id,
                name=f"{code}-cluster-{index:05d}",
                region=region,
                zone=f"{region}-a",
                status=status,
                root_password="".join(rng.choice(_ROOT_ALPHABET) for _ in range(16)),
                vnc_password=_vnc_password(rng),
                create_time=f"2024-01-{day:02d}T08:00:00.000Z",
            )
        )
    return Inventory(clusters)
