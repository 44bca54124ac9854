"""Quotas: per key, project and tenant limits on requests, tokens, concurrency and spend.

Gateway side (no ORM, importable by the data plane):

    limits      resolved ``Limits`` per scope and the snapshot's ``QuotaBook``
    windows     UTC minute / day / month windows of an instant
    rules       the pure admission check both stores implement
    estimate    how many tokens a request reserves before it is sent
    store       the ``QuotaStore`` protocol; ``memory`` and ``redis_store`` implement it
    fallback    keeps serving under a per-process limiter while the shared store is away
    enforcer    what the gateway calls: reserve before sending, settle after
    headers     OpenAI's ``x-ratelimit-*`` headers

Control-plane side (ORM): ``schemas``, ``policy``, ``repository``, ``service``, ``book``,
``controllers``. Nothing is imported here, so the gateway never loads the control-plane half.
"""
