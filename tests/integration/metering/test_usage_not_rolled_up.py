"""The usage API says when its figures leave out usage ingested but not rolled up yet: they
are as of the last rollup, and a report that read as whole a minute after a burst of requests
left a tenant (or an invoice reconciliation) counting on a total that was short."""

from __future__ import annotations

from integration.metering.test_usage_and_export_api import account
from trunkline.metering.rollups import rollup_usage
from unit.controlplane.cp_support import World
from unit.metering.usage_support import at, event, ingest

T = "/api/v1/tenants"


def test_a_report_counts_the_hours_not_rolled_up_yet(world: World) -> None:
    factory = world.runtime.session_factory
    key = world.create_key("acme-dev", "acme", "demo")["key"]["key_id"]
    acme_dev = account(world, "acme", "demo", key, "gold")
    ingest(factory, [event(acme_dev, when=at(3))])
    late = [event(acme_dev, when=at(3)), event(acme_dev, when=at(4)), event(acme_dev, when=at(5))]
    ingest(factory, late, rollup=False)
    acme = world.tenant("acme")
    for who in ("acme-admin", "acme-dev"):
        report = world.api(who).get(f"{T}/{acme}/usage", params={"period": "2026-11"})
        assert (report["total"]["requests"], report["pending_hours"]) == (1, 3), who
    october = world.api("acme-admin").get(f"{T}/{acme}/usage", params={"period": "2026-10"})
    assert october["pending_hours"] == 0
    globex = world.api("globex-admin").get(
        f"{T}/{world.tenant('globex')}/usage", params={"period": "2026-11"}
    )
    assert globex["pending_hours"] == 0  # acme's hours are acme's

    rollup_usage(factory)
    report = world.api("acme-admin").get(f"{T}/{acme}/usage", params={"period": "2026-11"})
    assert (report["total"]["requests"], report["pending_hours"]) == (4, 0)
