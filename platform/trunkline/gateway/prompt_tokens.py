"""A request's prompt as the engine's token ids, for the precise prefix index.

vLLM turns a chat request into tokens by rendering the model's chat template
(``add_generation_prompt`` on unless the client turned it off) and tokenizing the text without
adding special tokens; a completion's text prompt is tokenized with them (the BOS) unless the
client set ``add_special_tokens`` false. With the
model's Hugging Face tokenizer the gateway does the same, so the blocks it hashes
(:class:`~trunkline.gateway.routing.token_prompt.TokenPrompt`) are the blocks the engine's
KV-cache events name. Chat messages whose content is not a string (multi-part, images) are
not tokenized: their request has no token view and is routed by load.

Tokenizers are loaded from local directories (``TRUNKLINE_GATEWAY__TOKENIZERS``: served model
name to directory), never downloaded; ``transformers`` is needed only then.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from trunkline.errors import ConfigurationError
from trunkline.gateway.chat_conversation import vllm_conversation, vllm_tools
from trunkline.gateway.pipeline import ParsedRequest
from trunkline.gateway.routing.token_prompt import TokenPrompt
from trunkline.gateway.routing.vllm_hashes import VllmHashing

__all__ = [
    "MAX_QUEUE_WAIT_S",
    "HfPromptTokenizer",
    "PromptTokenizer",
    "PromptTokens",
    "PromptTokensCollector",
    "load_tokenizers",
]

MAX_QUEUE_WAIT_S = 0.05
"""A prompt that waited longer than this for the tokenizer thread is not tokenized: its request
is routed without a token view (by load and the approximate index). A burst of long prompts
then adds at most this to any request's routing (besides its own prompt's tokenization, once
started), instead of a queue of every prompt ahead."""

log = logging.getLogger(__name__)


class PromptTokenizer(Protocol):
    def prompt_ids(self, kind: str, body: Mapping[str, Any]) -> list[int] | None:
        """The prompt's token ids as the engine computes them (None: cannot tell)."""
        ...


class HfPromptTokenizer:
    """A model's Hugging Face tokenizer and chat template, from a local directory."""

    def __init__(self, path: str) -> None:
        import jinja2  # noqa: F401 - chat templates; missing, every chat would go untokenized
        from transformers import AutoTokenizer

        self.path = path
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)

    def prompt_ids(self, kind: str, body: Mapping[str, Any]) -> list[int] | None:
        try:
            if kind == "chat":
                return self._chat(body)
            if kind == "completions":
                special = body.get("add_special_tokens") is not False  # vLLM's default: on
                return self._completion(body.get("prompt"), special)
        except Exception:  # a template that refuses the conversation: the engine will say so
            log.debug("could not tokenize the prompt", exc_info=True)
        return None

    def _chat(self, body: Mapping[str, Any]) -> list[int] | None:
        conversation = vllm_conversation(body.get("messages"))
        options = _template_options(body)
        if conversation is None or options is None:
            return None
        text = self._tokenizer.apply_chat_template(conversation, tokenize=False, **options)
        special = body.get("add_special_tokens") is True
        ids: list[int] = self._tokenizer(text, add_special_tokens=special)["input_ids"]
        return ids

    def _completion(self, prompt: object, special: bool) -> list[int] | None:
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids: list[int] = self._tokenizer(prompt, add_special_tokens=special)["input_ids"]
            return ids
        if isinstance(prompt, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt
        ):
            return list(prompt)
        return None


_CLIENT_TEMPLATE_KWARGS = frozenset({"chat_template", "tokenize"})
"""``chat_template_kwargs`` vLLM refuses (``chat_template`` unless the engine trusts request
templates): a client's template is never rendered in the gateway, where a loop-heavy one (nested
``range(100000)`` loops pass the sandbox) would hold the event loop for minutes."""


def _template_options(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The chat template's keyword arguments as vLLM merges them (``build_chat_params``): the
    request's ``tools`` under its ``chat_template_kwargs``, its own fields over both; None when
    the request brings a template of its own."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict) or kwargs.keys() & _CLIENT_TEMPLATE_KWARGS:
        return None
    if body.get("chat_template") is not None:
        return None
    continuing = body.get("continue_final_message") is True
    fields: dict[str, Any] = {
        "add_generation_prompt": body.get("add_generation_prompt", True) is not False
        and not continuing,
        "continue_final_message": continuing,
    }
    unset = (None, "auto")  # vLLM's merge_kwargs skips these
    # Rendered by templates that use them: a RAG template's documents, often most of the
    # prompt; a reasoning model's effort, and whether it thinks, which vLLM derives from it.
    fields.update(
        (k, body[k]) for k in ("documents", "reasoning_effort") if body.get(k) not in unset
    )
    effort = body.get("reasoning_effort")
    if effort is not None and "enable_thinking" not in kwargs:
        fields["enable_thinking"] = effort != "none"
    tools = vllm_tools(body.get("tools"))
    options: dict[str, Any] = {"tools": tools}
    options.update((k, v) for k, v in kwargs.items() if v not in unset)
    options.update(fields)
    return options


def load_tokenizers(paths: Mapping[str, str]) -> dict[str, PromptTokenizer]:
    """The tokenizer of each served model named in ``paths``; a directory that holds none is a
    configuration error naming the setting."""
    loaded: dict[str, PromptTokenizer] = {}
    for model, path in paths.items():
        try:
            loaded[model] = HfPromptTokenizer(path)
        except ImportError:
            raise ConfigurationError(
                "TRUNKLINE_GATEWAY__TOKENIZERS needs the transformers and jinja2 packages "
                "(pip install 'trunkline[tokenizers]')",
                param="tokenizers",
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"TRUNKLINE_GATEWAY__TOKENIZERS: no tokenizer for {model!r} in {path}: {exc}",
                param="tokenizers",
            ) from None
    return loaded


class PromptTokens:
    """Token views of prompts for the models whose tokenizer the gateway has."""

    def __init__(
        self,
        tokenizers: Mapping[str, PromptTokenizer],
        hashing: VllmHashing,
        *,
        max_queue_wait_s: float = MAX_QUEUE_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokenizers = tokenizers
        self.hashing = hashing
        self.max_queue_wait_s = max_queue_wait_s
        self._clock = clock
        self._count_lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        """Prompts by outcome: ``tokenized``, ``untokenizable`` (the engine would render them
        otherwise), ``queue_wait`` (waited too long for the tokenizer thread)."""
        # Off the event loop: a long prompt takes a second to render and tokenize, and every
        # other request would wait on it. One thread: a tokenizer is not shared across threads.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompt-tokens")

    async def view(
        self, model: str, request: ParsedRequest, cache_salt: str | None
    ) -> TokenPrompt | None:
        tokenizer = self.tokenizers.get(model)
        if tokenizer is None:
            return None
        job = self._worker.submit(self._tokenize, tokenizer, request, self._clock())
        done = asyncio.wrap_future(job)
        try:
            # Waited for until it starts at most: a prompt queued behind one that started in
            # time would otherwise wait out all of that one's tokenization too.
            ids = await asyncio.wait_for(asyncio.shield(done), self.max_queue_wait_s)
        except TimeoutError:
            if job.cancel():  # still queued: it never runs
                self._count("queue_wait")
                return None
            ids = await done  # its own tokenization started meanwhile
        except asyncio.CancelledError:  # the client left: a queued prompt is not tokenized
            job.cancel()
            raise
        return None if ids is None else TokenPrompt(ids, self.hashing, cache_salt=cache_salt)

    def _tokenize(
        self, tokenizer: PromptTokenizer, request: ParsedRequest, queued_at: float
    ) -> list[int] | None:
        """On the tokenizer thread."""
        if self._clock() - queued_at > self.max_queue_wait_s:
            self._count("queue_wait")
            return None
        ids = tokenizer.prompt_ids(request.kind, request.body)
        self._count("untokenizable" if ids is None else "tokenized")
        return ids

    def _count(self, outcome: str) -> None:
        # From the tokenizer thread and the event loop's: ``+=`` is a read then a write.
        with self._count_lock:
            self.outcomes[outcome] += 1

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


class PromptTokensCollector(Collector):
    """``trunkline_prompt_tokenizations_total{outcome}``, read at each scrape."""

    def __init__(self, tokens: PromptTokens) -> None:
        self._tokens = tokens

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "trunkline_prompt_tokenizations",
            "Prompts given to the gateway's tokenizers, by outcome: tokenized, untokenizable "
            "(rendered otherwise by the engine: routed without a token view), queue_wait "
            "(waited too long for the tokenizer thread: routed without a token view)",
            labels=["outcome"],
        )
        counts = self._tokens.outcomes
        for outcome in ("tokenized", "untokenizable", "queue_wait"):
            family.add_metric([outcome], float(counts[outcome]))
        yield family
