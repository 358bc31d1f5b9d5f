"""A fake E-HPC API behind the engine's ``ApiClient`` interface (a fake at the transport seam).

api = FakeApi.with_clusters(3)
api.script("c-1", "drop", "ok")          # first call applies then drops, second succeeds
api.clusters["c-1"].vnc_password         # what the "cluster" really has now
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rotator.ehpc.codes import error_for_code
from rotator.ehpc.models import Cluster, ModifyResult
from rotator.errors import AmbiguousApiError, ApiError
from rotator.secret import Secret

__all__ = ["FakeApi", "FakeCluster", "Step"]

Step = str | ApiError | Callable[[], Awaitable[None]]
"""``"ok"``, ``"drop"`` (apply, then lose the answer), ``"lost"`` (lose it before applying),
``"apply_then_500"`` (apply, then answer UnknownError), an ApiError to raise, or a coroutine
function to await before answering ok."""

_ids = itertools.count(1)


@dataclass(slots=True)
class FakeCluster:
    id: str
    region: str
    root_password: str
    vnc_password: str = "init00"
    status: str = "running"
    changes: int = 0


@dataclass(slots=True)
class FakeApi:
    clusters: dict[str, FakeCluster]
    steps: dict[str, list[Step]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    """(cluster_id, password sent) per call, in order."""

    @classmethod
    def with_clusters(cls, count: int, *, region: str = "cn-hangzhou") -> FakeApi:
        clusters = {
            f"c-{i}": FakeCluster(id=f"c-{i}", region=region, root_password=f"root-pw-{i}-xyz")
            for i in range(1, count + 1)
        }
        return cls(clusters=clusters)

    def script(self, cluster_id: str, *steps: Step) -> None:
        self.steps.setdefault(cluster_id, []).extend(steps)

    def sent(self, cluster_id: str) -> list[str]:
        return [password for cid, password in self.calls if cid == cluster_id]

    async def modify_visual_service_passwd(
        self,
        *,
        region: str,
        cluster_id: str,
        runas_password: Secret,
        new_password: Secret,
        runas_user: str = "root",
    ) -> ModifyResult:
        self.calls.append((cluster_id, new_password.reveal()))
        cluster = self.clusters.get(cluster_id)
        if cluster is None:
            raise error_for_code("ClusterNotFound", "", http_status=404, cluster_id=cluster_id)
        queue = self.steps.get(cluster_id) or []
        step: Step = queue.pop(0) if queue else "ok"
        if isinstance(step, ApiError):
            raise step
        if step == "lost":
            raise AmbiguousApiError("no answer", code="Timeout", cluster_id=cluster_id)
        if runas_password.reveal() != cluster.root_password:
            raise error_for_code("IncorrectCredential", "", http_status=403, cluster_id=cluster_id)
        if callable(step):
            await step()
        cluster.vnc_password = new_password.reveal()
        cluster.changes += 1
        if step == "drop":
            raise AmbiguousApiError("dropped", code="ConnectionDropped", cluster_id=cluster_id)
        if step == "apply_then_500":
            raise error_for_code("UnknownError", "", http_status=500, cluster_id=cluster_id)
        await asyncio.sleep(0)
        return ModifyResult(cluster_id=cluster_id, request_id=f"REQ-{next(_ids)}")

    async def list_clusters(self, region: str) -> list[Cluster]:
        return [
            Cluster(id=c.id, region=c.region, status=c.status)
            for c in self.clusters.values()
            if c.region == region
        ]
