"""Azure OpenAI clients through the gateway: they send the key as ``api-key`` and a model's
requests to its deployment's path, which names the model."""

from __future__ import annotations

import msgspec
import openai
import pytest
from tests.unit.gateway.conftest import TENANT_A, Harness
from tests.unit.gateway.test_gateway import _ready, _wait_for_version, assert_openai_error, auth
from tests.unit.gateway.upstreams import chat_any

HELLO = [{"role": "user", "content": "hello"}]


def _azure(gw: Harness, key: str, **options: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        api_key=key, api_version="2024-10-21", http_client=gw.client, max_retries=0, **options
    )


@pytest.mark.parametrize(
    "options",
    [{"azure_endpoint": "http://testserver.local"}, {"base_url": "http://testserver.local/v1"}],
)
def test_an_azure_openai_client_chats_embeds_and_lists_models(make_gateway, options) -> None:  # type: ignore[no-untyped-def]
    """Every call but the model list went to ``…/deployments/{model}/…`` and was a 404: the
    gateway took Azure's ``api-key`` header, and no Azure client could call a model."""
    gw, key = _ready(make_gateway)
    client = _azure(gw, key, **options)
    answer = client.chat.completions.create(model="llama", messages=HELLO)  # type: ignore[arg-type]
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    chunks = client.chat.completions.create(model="llama", messages=HELLO, stream=True)  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert client.completions.create(model="llama", prompt="hi").choices
    assert client.embeddings.create(model="bge", input="hi").data[0].embedding
    assert [m.id for m in client.models.list()] == ["bge", "llama"]
    assert client.models.retrieve("llama").id == "llama"
    assert [r.alias for r in gw.drain_usage()] == ["llama", "llama", "llama", "bge"]


def test_the_deployment_in_the_path_is_the_model_whatever_the_body_names(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """As Azure takes it: ``AzureOpenAI(azure_deployment=…)`` sends any model name (or none)."""
    gw, key = _ready(make_gateway)
    pinned = _azure(gw, key, azure_endpoint="http://testserver.local", azure_deployment="llama")
    assert pinned.chat.completions.create(model="anything", messages=HELLO).choices  # type: ignore[arg-type]
    path = "/openai/deployments/llama/chat/completions?api-version=2024-10-21"
    assert gw.client.post(path, json={"messages": HELLO}, headers=auth(key)).status_code == 200
    assert [r.alias for r in gw.drain_usage()] == ["llama", "llama"]
    sent = len(gw.upstream)
    unknown = "/openai/deployments/gpt-9/chat/completions"
    refused = gw.client.post(unknown, json={"model": "llama", "messages": HELLO}, headers=auth(key))
    assert_openai_error(refused, 404, "model_not_found")  # not the body's model served instead
    assert len(gw.upstream) == sent


def test_an_alias_holding_a_slash_is_a_deployment_too(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """Aliases may be named as vLLM serves models, ``org/model``; the Azure client writes the
    deployment into its path as it is, and every such call was a 404 ``unknown_url``."""
    gw: Harness = make_gateway(chat_any)
    named = "meta-llama/llama"
    gw.world.aliases[named] = msgspec.structs.replace(gw.world.aliases["llama"], alias=named)
    acme = gw.world.tenants[TENANT_A]
    gw.world.tenants[TENANT_A] = msgspec.structs.replace(acme, aliases=acme.aliases | {named})
    key = gw.world.add_key()
    gw.world.publish()
    _wait_for_version(gw)
    for options in ({"azure_endpoint": "http://testserver.local"},
                    {"base_url": "http://testserver.local/v1"}):  # fmt: skip
        client = _azure(gw, key, **options)
        assert client.chat.completions.create(model=named, messages=HELLO).choices  # type: ignore[arg-type]
        assert client.completions.create(model=named, prompt="hi").choices
    assert [r.alias for r in gw.drain_usage()] == [named] * 4
    path = f"/openai/deployments/{named}/responses"
    refused = gw.client.post(path, json={"input": "hi"}, headers=auth(key))
    assert_openai_error(refused, 404, "unknown_url")
    # Cut at the endpoint: deployment "chat", its completions, as by path segments before.
    path = "/openai/deployments/chat/completions"
    refused = gw.client.post(path, json={"prompt": "hi"}, headers=auth(key))
    assert "'chat'" in assert_openai_error(refused, 404, "model_not_found")["message"]
