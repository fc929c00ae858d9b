"""The official `openai` Python SDK through `sluice serve` in front of `sluice mock`: only the
base_url changes, and the SDK behaves as it does against the real service."""

import json

import openai
import pytest

from conftest import Mock, Sluice

UPSTREAM = """
auth = "listed"
[[keys]]
key = "sk-upstream-good-0001"
[[keys]]
key = "sk-upstream-broke-002"
quota_exhausted = true
"""


class Gateway(Sluice):
    """`sluice serve` in front of `upstream_url`, with one virtual key for the app."""

    def __init__(self, upstream_url: str, upstream_key: str, models_check: str = "1h"):
        super().__init__(["serve"], f"""
listen = "127.0.0.1:0"
[upstream]
base_url = "{upstream_url}"
keys = [{{ value = "{upstream_key}" }}]
[[virtual_keys]]
name = "app"
key = "sk-app-virtual-0001"
[models]
check_upstream_every = "{models_check}"
""")


@pytest.fixture(scope="module")
def upstream():
    m = Mock(UPSTREAM)
    yield m
    m.close()


@pytest.fixture(scope="module")
def gateway(upstream):
    g = Gateway(upstream.base_url, "sk-upstream-good-0001")
    yield g
    g.close()


@pytest.fixture(scope="module")
def broke_gateway(upstream):
    # No model-list check at start: its GET /models would meet the broke key first and
    # quarantine it, and this fixture is for what a caller sees on the first quota refusal.
    g = Gateway(upstream.base_url, "sk-upstream-broke-002", models_check="0s")
    yield g
    g.close()


def client(g, key="sk-app-virtual-0001"):
    return openai.OpenAI(base_url=g.base_url, api_key=key, max_retries=0, timeout=20)


def test_chat(gateway):
    r = client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=10)
    assert r.choices[0].message.content
    assert r.usage.completion_tokens <= 10
    assert r._request_id.startswith("req_")


def test_stream_without_and_with_usage(gateway):
    c = client(gateway)
    chunks = list(c.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}], stream=True))
    assert all(ch.usage is None for ch in chunks), "no usage chunk unless asked"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    chunks = list(c.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}], stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens > 0


def test_tool_call_stream(gateway):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}}}}]
    args = ""
    for ch in client(gateway).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], tools=tools,
            tool_choice="required", stream=True):
        for c in ch.choices:
            for tc in c.delta.tool_calls or []:
                args += tc.function.arguments or ""
    assert "a" in json.loads(args)


def test_embeddings_and_models(gateway):
    c = client(gateway)
    e = c.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 1536
    assert "gpt-4o-mini" in [m.id for m in c.models.list()]


def test_errors_map_to_sdk_exceptions(gateway, broke_gateway):
    with pytest.raises(openai.AuthenticationError):
        client(gateway, key="sk-not-my-key").models.list()
    with pytest.raises(openai.NotFoundError):
        client(gateway).chat.completions.create(
            model="gpt-4-32k", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client(gateway).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "w " * 130000}])
    with pytest.raises(openai.RateLimitError) as e:
        client(broke_gateway).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "insufficient_quota"
    assert e.value.response.headers["x-should-retry"] == "false"


def test_budget_refusal_is_not_retried_by_the_sdk(upstream):
    """A virtual key over its budget gets 429 insufficient_quota with x-should-retry: false:
    the SDK raises RateLimitError at once even with retries on, instead of hammering."""
    g = Sluice(["serve"], f"""
listen = "127.0.0.1:0"
[upstream]
base_url = "{upstream.base_url}"
keys = [{{ value = "sk-upstream-good-0001" }}]
[models]
on_retired = "substitute"
[[virtual_keys]]
name = "capped"
key = "sk-app-capped-0001"
budget = {{ day = "0.0003" }}
""")
    try:
        c = openai.OpenAI(base_url=g.base_url, api_key="sk-app-capped-0001", max_retries=3, timeout=20)
        # A retired model is sent to its replacement, and the SDK sees the headers.
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4-32k", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-sluice-model-substituted"] == "gpt-4-32k -> gpt-4o"
        assert raw.headers["x-sluice-model-deprecated"].startswith("gpt-4-32k; shutdown=2025-06-06")
        assert raw.parse().model == "gpt-4o-2024-08-06", "answered by the alias's snapshot"
        before = upstream.stats()["requests"]
        with pytest.raises(openai.RateLimitError) as e:
            for _ in range(50):
                c.chat.completions.create(
                    model="gpt-4o-mini", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        assert e.value.code == "budget_exceeded"
        assert e.value.response.headers["x-should-retry"] == "false"
        # The refusal itself reached no upstream: every upstream request was an answered one.
        sent = upstream.stats()["requests"] - before
        assert sent < 50
    finally:
        g.close()


def test_responses_through_the_gateway(gateway):
    c = client(gateway)
    r = c.responses.create(model="gpt-4o-mini", input="hello through the gateway")
    assert r.status == "completed" and r.output_text
    events = list(c.responses.create(model="gpt-4o-mini", input="hello through the gateway", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    with c.responses.stream(model="gpt-4o-mini", input="hello through the gateway") as s:
        final = s.get_final_response()
    assert final.output_text == r.output_text
    assert final.usage.output_tokens == r.usage.output_tokens


def test_responses_tools_and_stored_conversations_through_the_gateway(gateway):
    """A function call, its output sent back on the next turn by `previous_response_id`, and
    the stored answers retrieved, listed and deleted: every Responses route the SDK calls."""
    c = client(gateway)
    tools = [{"type": "function", "name": "get_weather", "strict": True,
              "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                             "properties": {"city": {"type": "string"}}}}]
    r = c.responses.create(model="gpt-4o-mini", input="weather in Paris?", tools=tools,
                           tool_choice="required")
    call = r.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)
    follow = c.responses.create(
        model="gpt-4o-mini", previous_response_id=r.id, tools=tools,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}])
    assert follow.previous_response_id == r.id and follow.output_text
    assert follow.usage.input_tokens > r.usage.input_tokens, "the earlier turn is billed again"
    assert c.responses.retrieve(r.id).output[0].call_id == call.call_id
    items = c.responses.input_items.list(follow.id)
    assert [i.type for i in items.data] == ["function_call_output"]
    c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    streamed = list(c.responses.create(model="gpt-4o-mini", input="weather?", tools=tools,
                                       tool_choice="required", stream=True))
    kinds = [e.type for e in streamed]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-1] == "response.completed"


def test_through_the_gateway_to_azure_openai():
    """An app keeps the plain OpenAI client; the gateway speaks Azure's dialect upstream:
    deployment URLs, `api-version`, the key in `api-key`."""
    azure = Mock("""
auth = "listed"
[[keys]]
key = "azure-key-0000000001"
[azure]
deployments = { "prod-4o-mini" = "gpt-4o-mini", "prod-embed" = "text-embedding-3-small" }
""")
    endpoint = azure.base_url.removesuffix("/v1")
    g = Sluice(["serve"], f"""
listen = "127.0.0.1:0"
[[upstreams]]
name = "azure-east"
kind = "azure"
endpoint = "{endpoint}"
api_version = "2024-10-21"
deployments = {{ "gpt-4o-mini" = "prod-4o-mini", "text-embedding-3-small" = "prod-embed" }}
keys = [{{ value = "azure-key-0000000001" }}]
[[virtual_keys]]
name = "app"
key = "sk-app-virtual-0001"
[models]
check_upstream_every = "0s"
""")
    try:
        c = client(g)
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-sluice-upstream"] == "azure-east"
        assert raw.parse().choices[0].message.content
        chunks = list(
            c.chat.completions.create(
                model="gpt-4o-mini",
                max_tokens=8,
                stream=True,
                messages=[{"role": "user", "content": "hi"}],
            )
        )
        assert any(ch.choices and ch.choices[0].delta.content for ch in chunks)
        e = c.embeddings.create(model="text-embedding-3-small", input="hello")
        assert len(e.data[0].embedding) > 0
        seen = azure.stats()["azure"]
        assert seen.get("prod-4o-mini chat/completions api-version=2024-10-21 auth=api-key") == 2, seen
        assert seen.get("prod-embed embeddings api-version=2024-10-21 auth=api-key") == 1, seen
    finally:
        g.close()
        azure.close()
