"""The pure quota math, table-driven: windows, the admission check, local limits, estimates,
prices, headers and the resolution of tier, tenant and key documents."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trunkline.quota.estimate import (
    MAX_COMPLETION_BUDGET,
    MEDIA_PART_TOKENS,
    completion_budget,
    estimate_prompt_tokens,
)
from trunkline.quota.headers import format_duration, rate_limit_headers, retry_headers
from trunkline.quota.limits import (
    CONCURRENCY,
    DAY_TOKENS,
    MONTH_COST,
    MONTH_TOKENS,
    REQUESTS,
    TOKENS,
    Limits,
    Price,
)
from trunkline.quota.policy import merge, resolve, to_limits
from trunkline.quota.rules import (
    ADMITTED,
    Verdict,
    check,
    demand,
    local_limits,
    retry_after_ms,
)
from trunkline.quota.schemas import QuotaLimits, ScopeLimits
from trunkline.quota.windows import month_label, windows_at

N = -1  # no limit


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "month", "minute_end", "day_end", "month_end"),
    [
        (ms(2027, 6, 15, 12), "2027-06", ms(2027, 6, 15, 12, 1), ms(2027, 6, 16), ms(2027, 7, 1)),
        (ms(2027, 6, 15, 12, 0, 59) + 999, "2027-06",
         ms(2027, 6, 15, 12, 1), ms(2027, 6, 16), ms(2027, 7, 1)),
        (ms(2028, 2, 29, 23, 59, 59), "2028-02", ms(2028, 3, 1), ms(2028, 3, 1), ms(2028, 3, 1)),
        (ms(2027, 2, 28, 8), "2027-02", ms(2027, 2, 28, 8, 1), ms(2027, 3, 1), ms(2027, 3, 1)),
        (ms(2027, 12, 31, 23, 59, 30), "2027-12", ms(2028, 1, 1), ms(2028, 1, 1), ms(2028, 1, 1)),
        (ms(2028, 1, 1), "2028-01", ms(2028, 1, 1, 0, 1), ms(2028, 1, 2), ms(2028, 2, 1)),
    ],
)  # fmt: skip
def test_windows_are_utc_minutes_days_and_calendar_months(
    now: int, month: str, minute_end: int, day_end: int, month_end: int
) -> None:
    w = windows_at(now)
    assert month_label(w.month) == month
    assert (w.minute_end_ms, w.day_end_ms, w.month_end_ms) == (minute_end, day_end, month_end)
    assert all(ttl > 0 for ttl in w.ttls_ms())


LIMITS = (5, 1000, 2, 10_000, 100_000, 50)
USED = (0, 0, 0, 0, 0, 0)
NONE = (N, N, N, N, N, N)
ONE_RPM = (1, N, N, N, N, N)


@pytest.mark.parametrize(
    ("limits", "used", "need", "verdict"),
    [
        ([LIMITS], [USED], demand(100, 1), ADMITTED),
        ([LIMITS], [(4, 900, 1, 0, 0, 0)], demand(100, 1), ADMITTED),
        ([LIMITS], [(5, 0, 0, 0, 0, 0)], demand(1, 0), Verdict(REQUESTS, 0, False)),
        ([LIMITS], [(0, 901, 0, 0, 0, 0)], demand(100, 0), Verdict(TOKENS, 0, False)),
        ([LIMITS], [USED], demand(1001, 0), Verdict(TOKENS, 0, True)),
        ([LIMITS], [(0, 0, 2, 0, 0, 0)], demand(1, 0), Verdict(CONCURRENCY, 0, False)),
        ([LIMITS], [(0, 0, 0, 9_950, 0, 0)], demand(100, 0), Verdict(DAY_TOKENS, 0, False)),
        ([LIMITS], [(0, 0, 0, 0, 99_999, 0)], demand(2, 0), Verdict(MONTH_TOKENS, 0, False)),
        ([LIMITS], [(0, 0, 0, 0, 0, 50)], demand(1, 1), Verdict(MONTH_COST, 0, False)),
        # a spent budget answers before a full minute: waiting a minute would not help
        ([LIMITS], [(5, 1000, 2, 0, 0, 50)], demand(1, 1), Verdict(MONTH_COST, 0, False)),
        # every scope must admit; the narrowest refusing scope is named
        ([NONE, ONE_RPM], [USED, (1, 0, 0, 0, 0, 0)], demand(1, 0), Verdict(REQUESTS, 1, False)),
        ([ONE_RPM, ONE_RPM], [(1, *USED[1:])] * 2, demand(1, 0), Verdict(REQUESTS, 0, False)),
        ([(N,) * 6], [(10**9,) * 6], demand(10**9, 10**9), ADMITTED),
        ([(0, N, N, N, N, N)], [USED], demand(1, 0), Verdict(REQUESTS, 0, True)),
    ],
)  # fmt: skip
def test_the_admission_check(limits: list, used: list, need: tuple, verdict: Verdict) -> None:  # type: ignore[type-arg]
    assert check(limits, used, need) == verdict


@pytest.mark.parametrize(
    ("verdict", "now", "wait"),
    [
        (Verdict(TOKENS, 0, False), ms(2027, 6, 15, 12, 0, 45), 15_000),
        (Verdict(REQUESTS, 1, False), ms(2027, 6, 15, 12, 0, 59) + 999, 1),
        (Verdict(CONCURRENCY, 0, False), ms(2027, 6, 15, 12, 0, 0), 1000),
        (Verdict(TOKENS, 0, True), ms(2027, 6, 15, 12, 0, 0), None),
        (Verdict(DAY_TOKENS, 0, False), ms(2027, 6, 15, 12, 0, 0), None),
        (Verdict(MONTH_COST, 0, False), ms(2027, 6, 15, 12, 0, 0), None),
        (ADMITTED, ms(2027, 6, 15, 12, 0, 0), None),
    ],
)
def test_how_long_to_wait(verdict: Verdict, now: int, wait: int | None) -> None:
    assert retry_after_ms(verdict, windows_at(now)) == wait


FULL = (100, 10_000, 8, 1000, 5000, 900)


@pytest.mark.parametrize(
    ("limits", "share", "last_used", "local"),
    [
        (FULL, 1.0, None, FULL),
        (FULL, 0.25, None, (25, 2500, 2, 250, 1250, 225)),
        (FULL, 0.5, (50, 9000, 3, 600, 4000, 300), (50, 5000, 4, 200, 500, 300)),
        ((1, 3, 1, 10, 10, 0), 0.1, (0, 0, 0, 10, 12, 0), (1, 1, 1, 0, 0, 0)),
        ((N, N, N, N, N, N), 0.5, None, (N, N, N, N, N, N)),
    ],
)  # fmt: skip
def test_local_limits_keep_a_share_and_what_budgets_had_left(
    limits: tuple,
    share: float,
    last_used: tuple | None,
    local: tuple,  # type: ignore[type-arg]
) -> None:
    assert local_limits(limits, share, last_used) == local


def user(content: object) -> dict[str, object]:
    return {"role": "user", "content": content}


def image(url: str) -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.mark.parametrize(
    ("kind", "body", "tokens"),
    [
        ("chat", {"messages": [user("hello")]}, 2 + 8 + 8),
        ("chat", {"messages": [user("x" * 300)]}, 100 + 8 + 8),
        ("chat", {"messages": [user([{"type": "text", "text": "abcdef"}])]}, 2 + 8 + 8),
        # A 1.2 MB base64 image reserves a fixed share, not 400k tokens of text.
        ("chat", {"messages": [user([{"type": "text", "text": "what is it?"},
                                     image("data:image/png;base64," + "A" * 1_200_000)])]},
         4 + MEDIA_PART_TOKENS + 8 + 8),
        ("chat", {"messages": [user([image("https://x/a.png"), image("https://x/b.png")])]},
         2 * MEDIA_PART_TOKENS + 8 + 8),
        # Text by other part types vLLM renders as text (a Responses-style history, an
        # assistant's refusal or thinking sent back) is counted as text, not as an image each.
        ("chat", {"messages": [user([{"type": "input_text", "text": "abcdef"}]),
                               {"role": "assistant", "content": [
                                   {"type": "output_text", "text": "abc"},
                                   {"type": "refusal", "refusal": "abcdef"},
                                   {"type": "thinking", "thinking": "abc"}]}]},
         2 + 1 + 2 + 1 + 2 * 8 + 8),
        # Tool calls and their results are rendered: arguments and results count, the role not.
        ("chat", {"messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "f", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "18C"}]},
         -(-(2 + 8 + 1 + 16 + 2 + 3) // 3) + 2 * 8 + 8),
        # Tool definitions are rendered as JSON, keys included.
        ("chat", {"messages": [user("hi")], "tools": [{"type": "function",
                                                       "function": {"name": "f"}}]},
         -(-(2 + len('[{"type":"function","function":{"name":"f"}}]')) // 3) + 8 + 8),
        # A RAG template renders the documents (as JSON here: keys included, erring high).
        ("chat", {"messages": [user("hi")], "documents": [{"text": "x" * 300}]},
         -(-(2 + len('[{"text":""}]') + 300) // 3) + 8 + 8),
        ("chat", {"messages": [user("ééé"), {"role": "user"}]}, 2 + 16 + 8),
        ("completions", {"prompt": "abcdefghi"}, 3),
        ("completions", {"prompt": [1, 2, 3, 4]}, 4),
        ("completions", {"prompt": [[1, 2], [3], "abc"]}, 4),
        ("embeddings", {"input": ["hello world!", "x"]}, 5),
        # vLLM's chat embeddings render conversations (messages, or an input of messages) by
        # the template: counted as a chat's, where an input of messages counted nothing.
        ("embeddings", {"input": [user("hello")]}, 2 + 8 + 8),
        ("embeddings", {"messages": [user("hello")]}, 2 + 8 + 8),
        ("embeddings", {"messages": [[user("hello")], [user("x" * 300)]]},
         (2 + 8 + 8) + (100 + 8 + 8)),
    ],
)  # fmt: skip
def test_prompt_estimate(kind: str, body: dict, tokens: int) -> None:  # type: ignore[type-arg]
    assert estimate_prompt_tokens(kind, body) == tokens


@pytest.mark.parametrize(
    ("kind", "body", "tokens"),
    [
        # vLLM runs a prompt's first truncate_prompt_tokens (-1: the context window, here
        # 1,000), each prompt of a list on its own, and refuses unrun one over the window.
        ("embeddings", {"input": ["x" * 3000, "y" * 300], "truncate_prompt_tokens": 512},
         512 + 100),
        ("embeddings", {"input": "x" * 6000, "truncate_prompt_tokens": -1}, 1000),
        ("embeddings", {"input": "x" * 6000}, 1000),
        ("completions", {"prompt": [list(range(700)), [1, 2]], "truncate_prompt_tokens": 600},
         600 + 2),
        ("completions", {"prompt": list(range(700)), "truncate_prompt_tokens": 600}, 600),
        ("chat", {"messages": [user("x" * 6000)], "truncate_prompt_tokens": 50}, 50),
        ("chat", {"messages": [user("x" * 300)], "truncate_prompt_tokens": True}, 100 + 8 + 8),
    ],
)  # fmt: skip
def test_prompt_estimate_counts_what_the_engine_runs(
    kind: str,
    body: dict,  # type: ignore[type-arg]
    tokens: int,
) -> None:
    assert estimate_prompt_tokens(kind, body, context_length=1000) == tokens


@pytest.mark.parametrize(
    ("kind", "body", "budget"),
    [
        ("chat", {"max_tokens": 100}, 100),
        ("chat", {"max_completion_tokens": 50, "max_tokens": 100}, 50),
        ("chat", {"max_tokens": 100, "n": 3}, 300),
        # A maximum the client set is reserved whole: the engine generates up to it.
        ("chat", {"max_tokens": 10_000}, 10_000),
        ("chat", {"max_tokens": 4000, "n": 5}, 20_000),
        # ...up to what Redis can count: a reserve of 10**20 failed in the script (a 500).
        ("chat", {"max_tokens": 10**20}, MAX_COMPLETION_BUDGET),
        ("completions", {"prompt": "a", "max_tokens": 2**30, "n": 10**6}, MAX_COMPLETION_BUDGET),
        ("completions", {"prompt": ["a", "b"], "max_tokens": 3000}, 6000),
        ("chat", {}, 4096),
        ("chat", {"n": 3}, 3 * 4096),  # the gateway's maximum is per answer
        ("chat", {"max_tokens": True, "n": "2"}, 4096),
        ("embeddings", {"max_tokens": 5}, 0),
        # Completions read max_tokens alone: a small max_completion_tokens beside a larger
        # max_tokens must not shrink the reservation below what vLLM generates.
        ("completions", {"prompt": "hi", "max_completion_tokens": 1, "max_tokens": 300}, 300),
        ("completions", {"prompt": "hi", "max_completion_tokens": 1, "max_tokens": None}, 4096),
        # Without max_tokens a completion's answer ends at 16 tokens (vLLM's and OpenAI's
        # default): reserving 4,096 each refused such requests under a token limit they fit.
        ("completions", {"prompt": "hi"}, 16),
        ("completions", {"prompt": ["a", "b"], "n": 2}, 4 * 16),
        # max_tokens null is no maximum: vLLM generates up to what the context leaves.
        ("completions", {"prompt": "hi", "max_tokens": None}, 4096),
        # One answer per prompt of a list (texts or token-id lists), times n.
        ("completions", {"prompt": ["a", "b", "c"], "max_tokens": 100}, 300),
        ("completions", {"prompt": [[1, 2], [3]], "max_tokens": 100, "n": 2}, 400),
        ("completions", {"prompt": [1, 2, 3], "max_tokens": 100}, 100),  # one prompt of ids
    ],
)
def test_completion_budget(kind: str, body: dict, budget: int) -> None:  # type: ignore[type-arg]
    assert completion_budget(kind, body, cap=4096) == budget


@pytest.mark.parametrize(
    ("kind", "body", "budget"),
    [
        # No answer is longer than the model's window (here 1,000 tokens), prompt included.
        ("chat", {"max_tokens": 100}, 100),
        ("chat", {"max_tokens": 10**20}, 1000),
        ("chat", {"max_tokens": 5000, "n": 3}, 3000),
        ("chat", {}, 1000),
        ("chat", {"n": 3}, 3000),
        ("completions", {"prompt": ["a", "b"], "max_tokens": None}, 2000),
        ("completions", {"prompt": ["a", "b"], "max_tokens": 10}, 20),
        ("embeddings", {}, 0),
    ],
)
def test_completion_budget_within_the_context_window(
    kind: str,
    body: dict,  # type: ignore[type-arg]
    budget: int,
) -> None:
    assert completion_budget(kind, body, cap=4096, context_length=1000) == budget


@pytest.mark.parametrize(
    ("prompt", "cached", "completion", "nano_usd"),
    [
        (1_000_000, 0, 0, 200_000_000),
        (1_000, 1_000, 0, 50_000),
        (0, 0, 1, 600),
        (100, 40, 10, 20_000),
        (7, 0, 0, 1_400),
        # a fraction of a nano-dollar rounds up, and only that: in micro-dollars one embedding
        # token at $0.02 a million was charged 50 times its price
        (1, 0, 0, 200),
    ],
)
def test_cost_in_nano_dollars_rounds_up(
    prompt: int, cached: int, completion: int, nano_usd: int
) -> None:
    price = Price(input=200_000, cached_input=50_000, output=600_000)  # $0.20 / 0.05 / 0.60
    assert price.cost(prompt, cached, completion) == nano_usd


def test_a_cost_rounds_up_to_a_whole_nano_dollar_at_most() -> None:
    embedding = Price(input=20_000, cached_input=20_000, output=0)  # $0.02 a million
    assert embedding.cost(1, 0, 0) == 20
    assert Price(input=1, cached_input=1, output=1).cost(1, 0, 0) == 1  # 0.001 nano -> 1


@pytest.mark.parametrize(
    ("ms_", "text"),
    [
        (0, "0ms"),
        (20, "20ms"),
        (1000, "1s"),
        (12_345, "12.345s"),
        (59_500, "59.5s"),
        (60_000, "1m0s"),
    ],
)
def test_durations_read_like_openai(ms_: int, text: str) -> None:
    assert format_duration(ms_) == text


def test_headers_describe_the_tightest_scope_and_how_to_retry() -> None:
    now = ms(2027, 6, 15, 12, 0, 30)
    limits = [(100, 10_000, N, N, N, N), (1000, 5000, N, N, N, N)]
    used = [(10, 1000, 0, 0, 0, 0), (600, 4900, 0, 0, 0, 0)]

    assert rate_limit_headers(limits, used, windows_at(now)) == {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "90",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "5000",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "30s",
    }
    assert rate_limit_headers([(N,) * 6], [(5,) * 6], windows_at(now)) == {}
    assert retry_headers(1500) == {"retry-after": "2", "retry-after-ms": "1500"}
    assert retry_headers(None) == {"x-should-retry": "false"}


TIER = QuotaLimits(
    tenant=ScopeLimits(requests_per_minute=600, tokens_per_month=1_000_000),
    key=ScopeLimits(requests_per_minute=60, concurrent_requests=4),
)
BRONZE = QuotaLimits(key=ScopeLimits(requests_per_minute=10))
GOLD_TENANT = Limits(600, tokens_per_month=1_000_000)


@pytest.mark.parametrize(
    ("tenant", "key_tier", "key", "expect_tenant", "expect_key"),
    [
        (None, None, None, GOLD_TENANT, Limits(60, concurrent_requests=4)),
        (
            QuotaLimits(tenant=ScopeLimits(tokens_per_month=None, cost_per_month=12.5)),
            None, None,
            Limits(600, cost_per_month=12_500_000_000), Limits(60, concurrent_requests=4),
        ),
        (
            QuotaLimits(key=ScopeLimits(tokens_per_minute=1000)),
            None, ScopeLimits(requests_per_minute=None, concurrent_requests=1),
            GOLD_TENANT, Limits(tokens_per_minute=1000, concurrent_requests=1),
        ),
        (None, BRONZE, None, GOLD_TENANT, Limits(10)),
    ],
)  # fmt: skip
def test_tier_defaults_tenant_and_key_overrides_resolve(
    tenant: QuotaLimits | None,
    key_tier: QuotaLimits | None,
    key: ScopeLimits | None,
    expect_tenant: Limits,
    expect_key: Limits,
) -> None:
    resolved = resolve(TIER, tenant, key_tier, key)
    assert to_limits(resolved.tenant) == expect_tenant
    assert to_limits(resolved.key) == expect_key
    assert to_limits(resolved.project).unlimited


def test_merge_changes_some_limits_and_forgets_others() -> None:
    current = ScopeLimits(requests_per_minute=5, tokens_per_day=7)
    merged = merge(current, ScopeLimits(tokens_per_minute=None), forget=("tokens_per_day",))
    assert merged == ScopeLimits(requests_per_minute=5, tokens_per_minute=None)


def test_a_cost_budget_under_a_micro_dollar_is_not_zero() -> None:
    """Counted in micro-dollars, $0.0000009 was 0: every request refused, "Limit $0.00"."""
    assert to_limits(ScopeLimits(cost_per_month=0.0000009)).cost_per_month == 900
    assert to_limits(ScopeLimits(cost_per_month=1e9)).cost_per_month == 10**18
    assert to_limits(ScopeLimits(cost_per_month=1e-10)).cost_per_month == 1  # rounded up
    assert to_limits(ScopeLimits(cost_per_month=0)).cost_per_month == 0
