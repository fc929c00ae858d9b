"""The official `openai` Python SDK talks to `sluice mock` as it would to the real service."""

import json

import openai
import pytest

KEYS = """
auth = "listed"
[[keys]]
key = "sk-good-key-0000001"
[[keys]]
key = "sk-slow-key-0000002"
rpm = 60
burst = "1s"
[[keys]]
key = "sk-broke-key-000003"
quota_exhausted = true
"""


@pytest.fixture
def keyed(shared_mock_factory):
    return shared_mock_factory(KEYS)


def client(mock, key="sk-good-key-0000001"):
    return openai.OpenAI(base_url=mock.base_url, api_key=key, max_retries=0, timeout=10)


def test_chat(keyed):
    c = client(keyed)
    r = c.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=12,
    )
    assert r.object == "chat.completion"
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r._request_id.startswith("req_")


def test_stream_with_usage(keyed):
    c = client(keyed)
    plain = c.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream"}]
    )
    text, usage, finish = "", None, None
    with c.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for ch in chunk.choices:
                text += ch.delta.content or ""
                finish = ch.finish_reason or finish
    assert text == plain.choices[0].message.content
    assert finish == "stop"
    assert usage.completion_tokens == plain.usage.completion_tokens


def test_stream_tool_call(keyed):
    c = client(keyed)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}, "k": {"type": "integer"}}}}}]
    args, name = "", None
    for chunk in c.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "find it"}],
        tools=tools,
        tool_choice="required",
        stream=True,
    ):
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                name = tc.function.name or name
                args += tc.function.arguments or ""
    assert name == "lookup"
    assert set(json.loads(args)) == {"q", "k"}


def test_embeddings(keyed):
    c = client(keyed)
    # The SDK asks for base64 and decodes it; the vector must come back whole.
    r = c.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=64)
    assert len(r.data) == 2
    assert len(r.data[0].embedding) == 64
    assert abs(sum(x * x for x in r.data[0].embedding) - 1.0) < 1e-3
    r = c.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
    assert len(r.data[0].embedding) == 1536


def test_models(keyed):
    c = client(keyed)
    ids = [m.id for m in c.models.list()]
    assert "gpt-4o-mini" in ids
    assert c.models.retrieve("gpt-4o").id == "gpt-4o"


def test_rate_limit_error(keyed):
    c = client(keyed, key="sk-slow-key-0000002")
    c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "1"}])
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "2"}])
    assert e.value.code == "rate_limit_exceeded"
    assert int(e.value.response.headers["retry-after-ms"]) > 0


def test_quota_error_is_a_rate_limit_error_with_its_own_code(keyed):
    c = client(keyed, key="sk-broke-key-000003")
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "insufficient_quota"


def test_authentication_error(keyed):
    c = client(keyed, key="sk-not-a-real-key-99")
    with pytest.raises(openai.AuthenticationError) as e:
        c.models.list()
    assert e.value.code == "invalid_api_key"


def test_not_found_and_bad_request(keyed):
    c = client(keyed)
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4-32k", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "w " * 130000}])
    assert e.value.code == "context_length_exceeded"


def test_server_error_after_sdk_retries(mock_factory):
    mock = mock_factory("[faults]\nerror_503 = 1.0\n")
    c = openai.OpenAI(base_url=mock.base_url, api_key="sk-any-key-0000000", max_retries=1, timeout=10)
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])


def test_structured_output_parse_with_a_pydantic_model(keyed):
    from typing import List, Optional

    from pydantic import BaseModel

    class Step(BaseModel):
        explanation: str
        output: str

    class Solution(BaseModel):
        steps: List[Step]
        final_answer: str
        confidence: Optional[float]

    c = client(keyed)
    r = c.chat.completions.parse(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "solve 8x + 7 = -23"}],
        response_format=Solution,
        max_tokens=400,
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Solution)
    assert parsed.steps and isinstance(parsed.steps[0], Step)
    assert isinstance(parsed.final_answer, str)
    # The same question gets the same answer.
    again = c.chat.completions.parse(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "solve 8x + 7 = -23"}],
        response_format=Solution,
        max_tokens=400,
    )
    assert again.choices[0].message.parsed == parsed


def test_json_mode_answers_a_json_object_and_needs_the_word(keyed):
    c = client(keyed)
    r = c.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Reply in JSON: what is sluice?"}],
        response_format={"type": "json_object"},
        max_tokens=100,
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "what is sluice?"}],
            response_format={"type": "json_object"},
        )
    assert "json" in str(e.value)


def test_moderations(shared_mock_factory):
    mock = shared_mock_factory(KEYS + '\n[moderations]\nwords = { violence = ["attack"] }\n')
    c = client(mock)
    r = c.moderations.create(input=["We attack at dawn", "a quiet afternoon"])
    assert r.results[0].flagged is True
    assert r.results[0].categories.violence is True
    assert r.results[1].flagged is False
    assert r.model.startswith("omni-moderation")


def test_responses_create_stream_and_helper(keyed):
    c = client(keyed)
    r = c.responses.create(model="gpt-4o-mini", instructions="Be brief.", input="hello there")
    assert r.status == "completed"
    assert r.output_text
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    # Streamed with stream=True: typed events, ending at response.completed.
    types = []
    text = ""
    for ev in c.responses.create(model="gpt-4o-mini", input="hello there", instructions="Be brief.", stream=True):
        types.append(ev.type)
        if ev.type == "response.output_text.delta":
            text += ev.delta
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert text == r.output_text
    # The responses.stream() helper gathers the final response.
    with c.responses.stream(model="gpt-4o-mini", input="hello there", instructions="Be brief.") as s:
        for _ in s:
            pass
        final = s.get_final_response()
    assert final.output_text == r.output_text
    # Cut short: incomplete, and why.
    cut = c.responses.create(model="gpt-4o-mini", input="a long story please", max_output_tokens=16)
    assert cut.status in ("incomplete", "completed")
    if cut.status == "incomplete":
        assert cut.incomplete_details.reason == "max_output_tokens"


def test_files_and_batches(shared_mock_factory, tmp_path):
    import time

    mock = shared_mock_factory(KEYS + '\n[batches]\ncomplete_after = "1s"\n')
    c = client(mock)
    lines = [
        {"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 10}}
        for i in range(3)
    ]
    lines.append({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}})
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    f = c.files.create(file=open(path, "rb"), purpose="batch")
    assert f.purpose == "batch" and f.bytes == path.stat().st_size
    assert any(x.id == f.id for x in c.files.list(purpose="batch"))
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert b.status in ("validating", "in_progress")
    for _ in range(50):
        b = c.batches.retrieve(b.id)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            break
        time.sleep(0.1)
    assert b.status == "completed", b
    assert b.request_counts.total == 4
    assert (b.request_counts.completed, b.request_counts.failed) == (3, 1)
    out = [json.loads(l) for l in c.files.content(b.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == ["q0", "q1", "q2"]
    assert all(o["response"]["status_code"] == 200 for o in out)
    assert out[0]["response"]["body"]["object"] == "chat.completion"
    # The batch's usage (the SDK's BatchUsage) sums its answered lines.
    assert b.usage is not None
    assert b.usage.input_tokens == sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in out)
    assert b.usage.output_tokens == sum(o["response"]["body"]["usage"]["completion_tokens"] for o in out)
    assert b.usage.total_tokens == b.usage.input_tokens + b.usage.output_tokens
    errs = [json.loads(l) for l in c.files.content(b.error_file_id).text.splitlines()]
    assert errs[0]["custom_id"] == "bad" and errs[0]["response"]["status_code"] == 404
    # A non-JSONL upload for a batch is refused, as upstream refuses it.
    bad = tmp_path / "batch.txt"
    bad.write_text("hello")
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=open(bad, "rb"), purpose="batch")
    assert c.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)
