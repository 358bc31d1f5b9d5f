"""Records the E-HPC client returns."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["API_VERSION", "RUNNING", "Cluster", "ModifyResult"]

API_VERSION = "2018-04-12"
RUNNING = "running"


@dataclass(frozen=True, slots=True)
class Cluster:
    """One entry of ``ListClusters`` (``ClusterInfoSimple``)."""

    id: str
    region: str
    name: str = ""
    zone: str = ""
    status: str = RUNNING
    login_node: str = ""
    """The first of ``LoginNodes`` (the VNC check's ``{host}`` when no vnc_host is set)."""

    @property
    def is_running(self) -> bool:
        return self.status == RUNNING


@dataclass(frozen=True, slots=True)
class ModifyResult:
    """A successful ``ModifyVisualServicePasswd``: the RequestId is the audit trail."""

    cluster_id: str
    request_id: str
