"""Which tier a key's requests run in: its pin, never above its tenant's tier."""

from __future__ import annotations

import pytest

from trunkline.gateway.authn import key_tier
from trunkline.snapshot import TierEntry

GOLD = TierEntry("gold", 100, 500, 50, True)
GOLD_EU = TierEntry("gold-eu", 100, 500, 50, True)
SILVER = TierEntry("silver", 50, 2000, 100, False)
BRONZE = TierEntry("bronze", 10, 10000, None, False)


@pytest.mark.parametrize(
    ("pinned", "tenants", "runs_in"),
    [
        (None, SILVER, SILVER),  # no pin: the tenant's tier
        (BRONZE, SILVER, BRONZE),  # a batch key below its tenant
        (SILVER, SILVER, SILVER),
        (GOLD, SILVER, SILVER),  # pinned to gold, the tenant since moved down to silver
        (GOLD_EU, GOLD, GOLD),  # the same priority is not below: its pools may be kept for it
        (BRONZE, None, BRONZE),  # the tenant's tier is not configured: the pin still holds
        (None, None, None),
    ],
)
def test_a_key_runs_in_its_pinned_tier_only_at_or_below_its_tenants(
    pinned: TierEntry | None, tenants: TierEntry | None, runs_in: TierEntry | None
) -> None:
    assert key_tier(pinned, tenants) == runs_in
