"""A production deployment for integration tests: the ``trunkline`` processes (migrate, the
gateway, the usage worker…) as children on real PostgreSQL and Redis, and the control plane's
runtime in the test to publish configuration."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from support.processes import TRUNKLINE, Proc, trunkline_env
from support.servers import free_port
from trunkline.apps.runtime import Runtime, build_runtime
from trunkline.auth.principal import Principal
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key
from trunkline.kit.db import transaction
from trunkline.models import Project, Tenant
from trunkline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SECRET = "integration-secret-" + "x" * 32
MESSAGES = [{"role": "user", "content": "hello"}]
SCRAPE_TOKEN = "integration-scrape-token-" + "y" * 32
SCRAPER = {"authorization": f"Bearer {SCRAPE_TOKEN}"}
"""What Prometheus sends to the production gateway's and control plane's ``/metrics``."""


def settings_env(postgres_url: str, redis_url: str) -> dict[str, str]:
    return {
        "TRUNKLINE_ENVIRONMENT": "production",
        "TRUNKLINE_DATABASE__URL": postgres_url,
        "TRUNKLINE_REDIS__URL": redis_url,
        "TRUNKLINE_SECURITY__KEY_HASH_SECRET": SECRET,
        "TRUNKLINE_SECURITY__DEV_LOGIN": "false",
        "TRUNKLINE_GATEWAY__SNAPSHOT_POLL_S": "0.5",
        "TRUNKLINE_GATEWAY__METRICS_TOKEN": SCRAPE_TOKEN,
        "TRUNKLINE_CONTROLPLANE__METRICS_TOKEN": SCRAPE_TOKEN,
        # Every test stops its servers with SIGTERM: without these each would serve on 5 s
        # first. The delay's own tests (tests/unit, in-process) set theirs.
        "TRUNKLINE_GATEWAY__SHUTDOWN_DELAY_S": "0",
        "TRUNKLINE_CONTROLPLANE__SHUTDOWN_DELAY_S": "0",
    }


class Platform:
    def __init__(self, tmp: Path, postgres_url: str, redis_url: str) -> None:
        self.tmp = tmp
        self.env = settings_env(postgres_url, redis_url)
        self.procs: list[Proc] = []
        self.runtime: Runtime = build_runtime(
            Settings(
                environment="production",
                database={"url": postgres_url},  # type: ignore[arg-type]
                redis={"url": redis_url},  # type: ignore[arg-type]
                security={"key_hash_secret": SECRET, "dev_login": False},  # type: ignore[arg-type]
                state_dir=tmp,
            )
        )

    def cli(self, *args: str) -> str:
        proc = self.spawn(f"cli-{args[0]}", *args)
        code = proc.popen.wait(120)
        assert code == 0, proc.output()
        return proc.output()

    def spawn(self, name: str, *args: str, **extra: str) -> Proc:
        env = trunkline_env(**{**self.env, **extra})  # extra's settings over the platform's
        proc = Proc([*TRUNKLINE, *args], env, self.tmp, self.tmp / f"{name}.log")
        self.procs.append(proc)
        return proc

    def gateway(self, name: str) -> str:
        port = free_port()
        proc = self.spawn(name, "gateway", TRUNKLINE_GATEWAY__PORT=str(port))
        proc.wait_http(f"http://127.0.0.1:{port}/health")
        return f"http://127.0.0.1:{port}/v1"

    def close(self) -> None:
        for proc in self.procs:
            proc.stop(signal.SIGTERM)
        self.runtime.close()


def issue_key(runtime: Runtime) -> str:
    with transaction(runtime.session_factory) as session:
        tenant = session.scalars(select(Tenant).where(Tenant.slug == "acme")).one()
        project = session.scalars(
            select(Project).where(Project.tenant_id == tenant.id, Project.name == "demo")
        ).one()
        created = create_key(
            session,
            Principal.system(),
            runtime.server_secret,
            tenant.id,
            ApiKeyCreate(project_id=project.id, name="integration"),
        )
    runtime.publish()
    return created.secret


def samples(url: str) -> dict[str, float]:
    """The metrics at ``url``, scraped as Prometheus is set up to (with the scrape token)."""
    answer = httpx.get(url, headers=SCRAPER, timeout=5)
    assert answer.status_code == 200, answer.text
    text = answer.text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def lists_models(client: openai.OpenAI) -> bool:
    try:
        return bool(client.models.list().data)
    except openai.AuthenticationError:
        return False
