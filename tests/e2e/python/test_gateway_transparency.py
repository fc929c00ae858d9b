"""The official `openai` Python SDK through `sluice serve` in front of a recording upstream:
the Responses API (unary, stream, `responses.stream()`), multipart uploads, batches for a key
allowed to, headers both ways, chat streams from an upstream that writes spaced JSON, and the
gateway's own errors — what the SDK sees is what the upstream sent."""

import io

import openai
import pytest

from conftest import Sluice
from recording_upstream import RATE_HEADERS, TEXT, Recorder


@pytest.fixture(scope="module")
def upstream():
    r = Recorder()
    yield r
    r.close()


@pytest.fixture(scope="module")
def gateway(upstream):
    g = Sluice(["serve"], f"""
listen = "127.0.0.1:0"
[upstream]
base_url = "{upstream.base_url}"
keys = [{{ value = "sk-upstream-good-0001" }}]
[models]
check_upstream_every = "0s"
[[virtual_keys]]
name = "app"
key = "sk-app-virtual-0001"
[[virtual_keys]]
name = "batcher"
key = "sk-batcher-virtual-01"
models = ["gpt-4o-mini"]
routes = ["files", "batches"]
[[virtual_keys]]
name = "restricted"
key = "sk-restricted-virt-01"
models = ["gpt-4o-mini"]
""")
    yield g
    g.close()


def client(g, key="sk-app-virtual-0001"):
    return openai.OpenAI(base_url=g.base_url, api_key=key, max_retries=0, timeout=20)


def test_responses_unary_with_usage_and_rate_limit_headers(gateway, upstream):
    raw = client(gateway).responses.with_raw_response.create(model="gpt-4o-mini", input="hi")
    r = raw.parse()
    assert r.output_text == TEXT
    assert r.usage.input_tokens == 11 and r.usage.output_tokens == 5
    for name in ["x-ratelimit-remaining-requests", "x-ratelimit-limit-tokens", "openai-processing-ms"]:
        assert raw.headers[name] == RATE_HEADERS[name]
    assert raw.headers["x-request-id"] == "req_recording_1"
    assert raw.headers["x-sluice-cost-usd"].startswith("0.")


def test_responses_stream_ends_at_completed_without_error(gateway):
    events = list(client(gateway).responses.create(model="gpt-4o-mini", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_responses_stream_helper(gateway):
    with client(gateway).responses.stream(model="gpt-4o-mini", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == TEXT
    assert final.output_text == TEXT
    assert final.usage.output_tokens_details.reasoning_tokens == 2


def test_files_create_arrives_as_multipart_byte_for_byte(gateway, upstream):
    content = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    f = client(gateway).files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch")
    assert f.id == "file-rec-1"
    seen = upstream.last("/v1/files")
    assert seen["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert content in seen["body"]
    assert b'name="purpose"' in seen["body"]
    assert seen["headers"]["authorization"] == "Bearer sk-upstream-good-0001"


def test_batches_pass_for_a_key_allowed_to_and_not_for_others(gateway, upstream):
    b = client(gateway, key="sk-batcher-virtual-01").batches.create(
        input_file_id="file-rec-1", endpoint="/v1/chat/completions", completion_window="24h")
    assert b.id == "batch_rec_1" and b.status == "validating"
    before = len(upstream.paths())
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(gateway, key="sk-restricted-virt-01").batches.create(
            input_file_id="file-rec-1", endpoint="/v1/chat/completions", completion_window="24h")
    assert e.value.code == "route_not_allowed"
    assert len(upstream.paths()) == before, "the refused request never reached the upstream"


def test_openai_beta_and_custom_headers_reach_the_upstream(gateway, upstream):
    client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
        extra_headers={"OpenAI-Beta": "assistants=v2", "X-Trace-Id": "trace-42"})
    seen = upstream.last("/v1/chat/completions")
    assert seen["headers"]["openai-beta"] == "assistants=v2"
    assert seen["headers"]["x-trace-id"] == "trace-42"
    assert seen["headers"]["authorization"] == "Bearer sk-upstream-good-0001"


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_streams_from_a_spaced_json_upstream(gateway, include_usage):
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there"
    usage = [c.usage for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage) == 1 and usage[0].completion_tokens == 2
    else:
        assert usage == [], "the usage chunk the gateway asked for is hidden"
        assert all(c.choices for c in chunks)


def test_the_gateways_own_401_carries_its_request_id(gateway):
    with pytest.raises(openai.AuthenticationError) as e:
        client(gateway, key="sk-not-a-key").models.list()
    assert e.value.response.headers["x-request-id"].startswith("req_sluice_")
    assert e.value.response.headers["x-should-retry"] == "false"
    assert e.value.request_id.startswith("req_sluice_")


def test_a_restricted_key_sees_only_its_models(gateway):
    ids = [m.id for m in client(gateway, key="sk-restricted-virt-01").models.list()]
    assert ids == ["gpt-4o-mini"]
