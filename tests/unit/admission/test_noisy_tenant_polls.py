"""What a noisy tenant's held excess costs each poll of the held requests (run at every load
change, on the event loop every request shares)."""

from __future__ import annotations

from tests.unit.admission.helpers import SILVER, endpoint, request

from trunkline.gateway.admission import ADMITTED, AdmissionPolicy
from trunkline.gateway.routing import EndpointLoad, EndpointView, RequestView

THIRD_FULL = EndpointLoad(running=80.0, kv_usage=0.3)


def test_a_noisy_tenants_held_requests_are_judged_once_per_poll_not_each() -> None:
    """Every held request of a tenant waiting for room was judged at every poll, each over
    every endpoint: 77 of them over 8 endpoints took 4.5 ms a poll (measured 2026-12-07), and a
    poll runs at every load change. Its requests leave in their own order, so once its first
    has no room, the others wait without being judged."""
    policy = AdmissionPolicy()
    for index in range(100):
        tenant = "noisy" if index % 10 < 8 else f"quiet-{index % 2}"
        policy.decide(request(f"w{index}", tenant), SILVER, [endpoint()], index * 0.05)
    third_full = [endpoint(load=THIRD_FULL)]
    for index in range(5):
        policy.decide(request(f"n{index}", "noisy"), SILVER, third_full, 5.0)
    assert policy.held() == 5
    judged: list[str] = []
    predict = policy.predictor.predict

    def counted(request: RequestView, endpoint: EndpointView, **extra: float) -> object:
        judged.append(request.request_id)
        return predict(request, endpoint, **extra)

    policy.predictor.predict = counted  # type: ignore[method-assign,assignment]
    assert policy.poll(5.01, {"pool/0": THIRD_FULL}) == []
    assert set(judged) == {"n0"}
    # Its peer still goes straight in.
    policy.predictor.predict = predict  # type: ignore[method-assign]
    assert policy.decide(request("q", "quiet-1"), SILVER, third_full, 5.02).outcome == ADMITTED
