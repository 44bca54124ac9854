"""The control plane with its PostgreSQL stopped: 503 problem details saying to retry, not
500s with tracebacks; and back to normal, without a restart, once the database returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.bench.servers import start_postgres
from unit.controlplane.cp_support import build_world, make_runtime


def test_a_stopped_database_is_a_503_to_retry_and_recovery_needs_no_restart(
    tmp_path: Path,
) -> None:
    cluster = start_postgres(durable=False)
    try:
        runtime = make_runtime(cluster.create_database("outage"), tmp_path / "state")
        with TestClient[Any](create_controlplane_app(runtime)) as client:
            world = build_world(runtime, client)
            admin = world.admin.headers
            assert client.get("/api/v1/tenants", headers=admin).status_code == 200
            cluster.stop()
            for method, path, body in [
                ("GET", "/healthz", None),
                ("GET", "/api/v1/tenants", None),
                ("PUT", "/api/v1/tiers/gold/quota", {"tokens_per_minute": 1000}),
            ]:
                response = client.request(method, path, headers=admin, json=body)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.headers["retry-after"] == "2"
                problem = response.json()
                assert (problem["code"], problem["status"]) == ("unavailable", 503)
                assert "Traceback" not in response.text
            assert client.get("/livez").status_code == 200  # alive: no restart would help
            cluster.start()
            assert client.get("/healthz").status_code == 200
            assert client.get("/api/v1/tenants", headers=admin).status_code == 200
        runtime.close()
    finally:
        cluster.destroy()
