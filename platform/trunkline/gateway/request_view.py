"""What routing sees of a parsed request: :func:`request_view` builds its ``RequestView``.

:func:`prompt_text` is the prompt's text for prefix affinity: chat messages' contents in order
(text parts of multi-part contents), or the completions prompt / embeddings input (token ids as
digits).
"""

from __future__ import annotations

from trunkline.gateway.authn import Principal
from trunkline.gateway.pipeline import ParsedRequest
from trunkline.gateway.routing import PromptView, RequestView
from trunkline.gateway.routing.text_prompt import TextPrompt
from trunkline.quota.estimate import chat_conversations, completion_maximum
from trunkline.snapshot import AliasEntry

__all__ = ["prompt_text", "request_view"]


def request_view(
    request_id: str,
    principal: Principal,
    alias: AliasEntry,
    request: ParsedRequest,
    prompt_tokens: int,
    prompt: PromptView | None = None,
) -> RequestView:
    """The request as routing policies and admission see it; ``prompt`` is its token view when
    the gateway has one (else its text is hashed for the approximate index)."""
    tenant, tier = principal.tenant, principal.tier
    return RequestView(
        request_id, tenant.id, tier.name, alias.alias,
        prompt_tokens=prompt_tokens,
        max_tokens=completion_maximum(request.kind, request.body),
        prompt=prompt or TextPrompt(prompt_text(request), cache_salt=tenant.cache_salt),
        cache_salt=tenant.cache_salt,
        regions=tenant.regions,
        may_use_burst=tier.may_use_burst,
        model=alias.model,
    )  # fmt: skip


def prompt_text(request: ParsedRequest) -> str:
    """The prompt's text for prefix affinity: chat messages' contents in order (text parts of
    multi-part contents; an embeddings request's messages too), or the completions prompt /
    embeddings input (token ids as digits)."""
    conversations = chat_conversations(request.kind, request.body)
    if conversations is not None:
        return "\n".join(
            _content_text(m.get("content"))
            for messages in conversations
            for m in messages
            if isinstance(m, dict)
        )
    if request.kind == "chat":
        return ""
    payload = request.body.get("prompt" if request.kind == "completions" else "input")
    return _content_text(payload)


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    if all(isinstance(token, int) for token in content):
        return ",".join(map(str, content))  # one prompt as token ids
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])  # a text part of a multi-part chat message
        elif isinstance(part, list):
            parts.append(",".join(map(str, part)))
    return "\n".join(parts)
