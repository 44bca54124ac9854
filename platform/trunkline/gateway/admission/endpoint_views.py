"""Endpoint views as admission judges them: with the loads of the latest scrape, with their
pool's mean measured service rates, or idle at their own rates."""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Mapping, Sequence

from trunkline.gateway.routing.views import EndpointLoad, EndpointView

__all__ = ["current_views", "fresh_view", "idle_view", "pooled_rates"]


def pooled_rates(views: Sequence[EndpointView]) -> list[EndpointView]:
    """``views`` with each replica's service rates replaced by its pool's mean measured rates
    (over the replicas that measured one), those not measured yet included. Replicas of a pool
    run one model on one kind of hardware: their measured rates differ by noise, and comparing
    replicas by that noise moved requests off the replica the router chose for no gain; a replica
    not yet measured would be judged at its accelerator's preset, which may be far from the
    engine's real speed. Load still tells them apart (running, waiting, queued prompt tokens)."""
    sums: dict[str, list[float]] = {}
    for view in views:
        total = sums.setdefault(view.pool, [0.0, 0.0, 0.0, 0.0])
        if view.load.prefill_tokens_per_s > 0:
            total[0] += view.load.prefill_tokens_per_s
            total[1] += 1
        if view.load.decode_step_s > 0:
            total[2] += view.load.decode_step_s
            total[3] += 1
    if all(t[1] == 0 and t[3] == 0 for t in sums.values()):
        return list(views)  # nothing measured yet
    out = []
    for view in views:
        prefill, measured_prefill, step, measured_steps = sums[view.pool]
        load = dataclasses.replace(
            view.load,
            prefill_tokens_per_s=prefill / measured_prefill if measured_prefill else 0.0,
            decode_step_s=step / measured_steps if measured_steps else 0.0,
        )
        out.append(dataclasses.replace(view, load=load))
    return out


def fresh_view(view: EndpointView, loads: Mapping[str, EndpointLoad]) -> EndpointView:
    load = loads.get(view.key)
    return view if load is None else dataclasses.replace(view, load=load)


def current_views(
    ranked: Sequence[EndpointView],
    loads: Mapping[str, EndpointLoad],
    out_of_service: Container[str],
    gone: Container[str] = (),
) -> list[EndpointView]:
    """A held request's ranking as it stands now: latest loads, and the endpoints out of
    service since it was ranked marked unhealthy (an ejected engine is no longer scraped and its
    requests leave it, so its load looks light). When none is in service, those only ejected
    stay as routing marked them: routing then tries them all (fail open), and so does a held
    request; those ``gone`` from the configuration (in ``out_of_service`` too) never are."""
    views = [fresh_view(view, loads) for view in ranked]
    out = [view.key in out_of_service for view in views]
    if all(out):
        out = [view.key in gone for view in views]
    if not any(out):
        return views
    return [
        dataclasses.replace(v, healthy=False) if o else v for v, o in zip(views, out, strict=True)
    ]


def idle_view(view: EndpointView) -> EndpointView:
    """The endpoint with nothing running or queued, at its measured service rates: an idle
    endpoint's speed is its own, not its accelerator's preset (the gateway may not know the
    hardware, and a preset far faster than the engine made every measured prediction look slow
    beside it, so the top tier always fell back to the soonest endpoint). The measured decode
    step is that of the current batch, a little longer than an idle engine's: the idle figure
    errs towards leniency by a fraction of one step."""
    load = view.load
    return dataclasses.replace(
        view,
        load=EndpointLoad(
            prefill_tokens_per_s=load.prefill_tokens_per_s,
            decode_step_s=load.decode_step_s,
            kv_capacity_tokens=load.kv_capacity_tokens,
        ),
    )
