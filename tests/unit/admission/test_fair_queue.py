from __future__ import annotations

from tests.unit.admission.helpers import BRONZE, GOLD, SILVER, endpoint, request

from trunkline.gateway.admission import FairQueue, Held
from trunkline.snapshot import TierEntry


def held(ticket: int, tenant: str, tier: TierEntry) -> Held:
    return Held(ticket, request(f"r{ticket}", tenant, tier.name), tier, (endpoint(),), 0.0, 10.0)


def drain(queue: FairQueue) -> list[int]:
    order = []
    while (head := queue.next()) is not None:
        order.append(head.ticket)
        queue.remove(head.ticket)
    return order


def test_higher_tiers_are_served_first_whatever_the_arrival_order() -> None:
    queue = FairQueue()
    for ticket, tier in ((1, BRONZE), (2, SILVER), (3, GOLD), (4, BRONZE), (5, GOLD)):
        queue.push(held(ticket, f"t{ticket}", tier))
    assert drain(queue) == [3, 5, 2, 1, 4]


def test_a_flooding_tenant_gets_one_turn_per_round_like_its_peers() -> None:
    queue = FairQueue()
    for ticket in range(1, 11):
        queue.push(held(ticket, "noisy", SILVER))
    queue.push(held(11, "quiet-a", SILVER))
    queue.push(held(12, "quiet-b", SILVER))
    # The noisy tenant came first, so it goes first — then its peers, before its backlog.
    assert drain(queue)[:4] == [1, 11, 12, 2]


def test_counts_what_a_request_would_wait_behind() -> None:
    queue = FairQueue()
    queue.push(held(1, "a", GOLD))
    queue.push(held(2, "b", SILVER))
    queue.push(held(3, "c", BRONZE))
    assert [queue.held_at_or_above(t.priority) for t in (GOLD, SILVER, BRONZE)] == [1, 2, 3]


def test_the_request_to_shed_is_the_newest_of_the_lowest_tiers_biggest_backlog() -> None:
    queue = FairQueue()
    queue.push(held(1, "a", BRONZE))
    queue.push(held(2, "b", BRONZE))
    queue.push(held(3, "b", BRONZE))
    queue.push(held(4, "c", GOLD))
    victim = queue.lowest()
    assert victim is not None and victim.ticket == 3


def test_removing_a_request_that_is_not_at_the_head_keeps_the_turn() -> None:
    queue = FairQueue()
    for ticket, tenant in ((1, "a"), (2, "b"), (3, "a")):
        queue.push(held(ticket, tenant, SILVER))
    queue.remove(3)  # "a" cancelled its second request: still "a"'s turn
    assert 3 not in queue
    assert drain(queue) == [1, 2]


def test_the_service_order_interleaves_tenants_and_ranks_tiers() -> None:
    queue = FairQueue()
    for ticket, tenant, tier in (
        (1, "a", SILVER),
        (2, "a", SILVER),
        (3, "b", SILVER),
        (4, "c", GOLD),
    ):
        queue.push(held(ticket, tenant, tier))
    assert [h.ticket for h in queue.in_order()] == [4, 1, 3, 2]


def test_a_new_request_waits_behind_one_request_per_tenant_of_its_tier_not_every_one() -> None:
    queue = FairQueue()
    for index in range(10):
        queue.push(held(index, "flood", SILVER))
    queue.push(held(20, "peer", SILVER))
    queue.push(held(30, "g", GOLD))
    # Gold's one, then one turn each of "flood" and "peer" before a newcomer's first turn.
    assert queue.ahead_of(SILVER.priority, SILVER.name, "new") == 3
    assert queue.ahead_of(SILVER.priority, SILVER.name, "peer") == 1 + 1 + 2
    # A tenant passed over while it waits for room does not count.
    assert queue.ahead_of(SILVER.priority, SILVER.name, "new", skip={("silver", "flood")}) == 2


def test_a_tier_whose_priority_changed_is_served_at_its_new_priority() -> None:
    """The queue kept the priority a tier had when it first held a request: a silver raised
    above gold by the platform still went after gold until the gateway restarted."""
    queue = FairQueue()
    queue.push(held(1, "a", SILVER))
    assert drain(queue) == [1]
    raised = TierEntry(SILVER.name, GOLD.priority + 1, SILVER.ttft_slo_ms, None, False)
    queue.push(held(2, "b", GOLD))
    queue.push(held(3, "c", raised))
    assert drain(queue) == [3, 2]
