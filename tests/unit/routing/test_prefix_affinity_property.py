"""Property: prefix-affinity scores the share of the prompt an endpoint holds. In a fleet of one
block size that is the share of the prompt's full blocks, exactly as before endpoints of
different sizes were scored by tokens; across sizes, holding more of the prompt's tokens scores
more, and every score stays in [0, 1] — whatever was routed where, under which salt, for text
prompts and token-id prompts alike."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.routing.helpers import endpoint

from trunkline.gateway.routing import ApproxPrefixIndex, RequestView, TextPrompt
from trunkline.gateway.routing.prefix_scorer import PrefixAffinityScorer
from trunkline.gateway.routing.token_prompt import TokenPrompt
from trunkline.gateway.routing.vllm_hashes import VllmHashing

HASHING = VllmHashing()
SIZES = (1, 2, 3, 4, 16)
SALTS = (None, "tenant-1", "tenant-2")
# Prompts share a long common start, so what was routed before holds some of what is asked.
COMMON = [7, 1, 4, 2, 8, 5, 7, 1, 3, 9] * 8

prompts = st.tuples(st.integers(0, len(COMMON)), st.lists(st.integers(0, 3), max_size=12)).map(
    lambda cut: COMMON[: cut[0]] + cut[1]
)
history = st.lists(
    st.tuples(prompts, st.integers(0, 3), st.sampled_from(SALTS)), min_size=1, max_size=12
)


def asking(kind: str, tokens: list[int], salt: str | None) -> RequestView:
    prompt: TextPrompt | TokenPrompt
    if kind == "text":  # four characters a token, as the gateway counts them
        prompt = TextPrompt("".join(f"{t:04d}" for t in tokens), cache_salt=salt)
    else:
        prompt = TokenPrompt(tokens, HASHING, cache_salt=salt)
    return RequestView(
        "r", "tenant", "silver", "chat", prompt.num_tokens, prompt=prompt, cache_salt=salt
    )


def held(scorer: PrefixAffinityScorer, request: RequestView, size: int, key: str) -> int:
    """How many of the prompt's leading blocks at ``size`` the endpoint holds."""
    assert request.prompt is not None
    hashes = request.prompt.block_hashes(size)
    return scorer.index.matches(hashes, request.cache_salt, [key])[0]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["text", "tokens"]),
    st.sampled_from(SIZES),
    history,
    prompts,
    st.sampled_from(SALTS),
)
def test_one_block_size_scores_the_share_of_the_prompts_blocks_as_before(
    kind: str, size: int, routed: list[tuple[list[int], int, str | None]], asked: list[int],
    salt: str | None,
) -> None:  # fmt: skip
    scorer = PrefixAffinityScorer(ApproxPrefixIndex(1_000_000))
    views = [endpoint(f"e{i}", block_size=size) for i in range(4)]
    for tokens, target, routed_salt in routed:
        scorer.routed(asking(kind, tokens, routed_salt), views[target])
    request = asking(kind, asked, salt)
    assert request.prompt is not None
    blocks = len(request.prompt.block_hashes(size))

    scores = scorer.score(request, views)

    # The formula before endpoints of different sizes were scored by tokens, bit for bit.
    assert scores == [held(scorer, request, size, v.key) / blocks if blocks else 0.0 for v in views]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["text", "tokens"]),
    st.lists(st.sampled_from(SIZES), min_size=2, max_size=4, unique=True),
    history,
    prompts,
    st.sampled_from(SALTS),
)
def test_across_block_sizes_more_of_the_prompt_held_scores_more(
    kind: str, sizes: list[int], routed: list[tuple[list[int], int, str | None]],
    asked: list[int], salt: str | None,
) -> None:  # fmt: skip
    scorer = PrefixAffinityScorer(ApproxPrefixIndex(1_000_000))
    views = [endpoint(f"e{i}", block_size=sizes[i % len(sizes)]) for i in range(4)]
    for tokens, target, routed_salt in routed:
        scorer.routed(asking(kind, tokens, routed_salt), views[target])
    request = asking(kind, asked, salt)

    scores = scorer.score(request, views)

    assert all(0.0 <= score <= 1.0 for score in scores)
    tokens = [held(scorer, request, v.block_size, v.key) * v.block_size for v in views]
    for a, b in combinations(range(len(views)), 2):
        if tokens[a] == tokens[b]:
            assert scores[a] == scores[b]
        else:
            assert (scores[a] > scores[b]) == (tokens[a] > tokens[b])
