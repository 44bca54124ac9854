"""A chat request's messages and tools as vLLM 0.32 hands them to the chat template
(``renderers/chat_utils.py``: ``_parse_chat_message_content``, ``_postprocess_messages``; tools
as ``ChatCompletionToolsParam.model_dump()``), so the gateway renders the text the engine
renders. Only string content is modelled (a list of parts gives no conversation)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["vllm_conversation", "vllm_tools"]


def vllm_conversation(messages: object) -> list[dict[str, Any]] | None:
    """The messages as the template sees them in vLLM: only the fields vLLM keeps, null content
    as "", tool-call arguments decoded to objects; None when a content is not a string."""
    if not isinstance(messages, list):
        return None
    conversation = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(content, str | None):
            return None
        role = message.get("role")
        out: dict[str, Any] = {"role": role, "content": content or ""}
        if role == "assistant":
            calls = message.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list):
                    out["tool_calls"] = calls
                elif calls:  # an empty list is dropped
                    out["tool_calls"] = [_tool_call(call) for call in calls]
            if message.get("reasoning") is not None:
                out["reasoning"] = out["reasoning_content"] = message["reasoning"]
        elif role == "tool" and "tool_call_id" in message:
            out["tool_call_id"] = message["tool_call_id"]
        for key in ("name", "task"):
            if isinstance(message.get(key), str):
                out[key] = message[key]
        if role == "developer":
            out["tools"] = message.get("tools")
        conversation.append(out)
    return conversation


def _tool_call(call: object) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(call, dict) or not isinstance(function, dict):
        raise ValueError("vLLM refuses a tool call that is not a function")
    arguments = function.get("arguments")
    if arguments and isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = {}  # vLLM keeps the conversation going with empty arguments
    if not arguments or not isinstance(arguments, dict):
        arguments = {}
    return {**call, "function": {**function, "arguments": arguments}}


def vllm_tools(tools: object) -> list[dict[str, Any]] | None:
    """The request's tools as vLLM dumps them for the template (absent fields as null, unknown
    ones dropped, its field order); None without tools."""
    if not isinstance(tools, list):
        return None
    dumped = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or not isinstance(function, dict):
            raise ValueError("vLLM refuses a tool that is not a function")
        defer = tool.get("defer_loading")
        out = {
            "name": function.get("name"),
            "description": function.get("description"),
            "parameters": function.get("parameters"),
        }
        if function.get("strict") is not None:
            out["strict"] = function["strict"]
        function_defer = function.get("defer_loading")
        if function_defer is None:  # the tool's own setting stands for its function's
            function_defer = defer
        if function_defer is not None:
            out["defer_loading"] = function_defer
        entry: dict[str, Any] = {"type": "function", "function": out}
        if defer is not None:
            entry["defer_loading"] = defer
        dumped.append(entry)
    return dumped
