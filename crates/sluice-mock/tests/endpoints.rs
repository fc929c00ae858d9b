//! Each endpoint answers with OpenAI's shapes, deterministically, with exact usage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::*;
use serde_json::json;

#[tokio::test]
async fn chat_completion_shape_and_exact_usage() {
    let mock = start("").await;
    let r = post(&mock, "/v1/chat/completions", chat("hello world")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    // An alias is answered by its current dated snapshot, as upstream answers.
    assert_eq!(v["model"], "gpt-4o-mini-2024-07-18");
    let asked = start("answer_model = \"requested\"").await;
    let r = post(&asked, "/v1/chat/completions", chat("hello world")).await;
    assert_eq!(
        r.json()["model"],
        "gpt-4o-mini",
        "the kinder scenario option"
    );
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let content = choice["message"]["content"].as_str().unwrap();
    // Prompt: 3 framing + "user" + "hello world" (2) + 3 priming, per OpenAI's recipe.
    let bpe = tiktoken_rs::o200k_base().unwrap();
    let expected_prompt = 3 + 1 + bpe.encode_ordinary("hello world").len() + 3;
    assert_eq!(v["usage"]["prompt_tokens"], expected_prompt);
    // Completion tokens are what the text tokenizes to.
    assert_eq!(
        v["usage"]["completion_tokens"],
        bpe.encode_ordinary(content).len()
    );
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        v["usage"]["prompt_tokens"].as_u64().unwrap()
            + v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

#[tokio::test]
async fn cl100k_models_count_with_their_own_encoding() {
    let mock = start("").await;
    let text = "Tokenizers differ: ½ of 🦀 emoji and naïve café.";
    let r = post(
        &mock,
        "/v1/chat/completions",
        json!({"model":"gpt-4-turbo","messages":[{"role":"user","content":text}]}),
    )
    .await;
    let bpe = tiktoken_rs::cl100k_base().unwrap();
    let expected = 3 + 1 + bpe.encode_ordinary(text).len() + 3;
    assert_eq!(r.json()["usage"]["prompt_tokens"], expected);
}

#[tokio::test]
async fn same_request_same_answer() {
    let mock = start("").await;
    let a = post(&mock, "/v1/chat/completions", chat("determinism please")).await;
    let b = post(&mock, "/v1/chat/completions", chat("determinism please")).await;
    let c = post(&mock, "/v1/chat/completions", chat("something else")).await;
    let content = |r: &Reply| r.json()["choices"][0]["message"]["content"].clone();
    assert_eq!(content(&a), content(&b));
    assert_ne!(content(&a), content(&c));
}

#[tokio::test]
async fn n_choices_and_token_limits() {
    let mock = start("[output]\nmin_tokens = 20\nmax_tokens = 40\n").await;
    let mut body = chat("many answers");
    body["n"] = json!(3);
    let v = post(&mock, "/v1/chat/completions", body.clone())
        .await
        .json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    assert_ne!(
        choices[0]["message"]["content"],
        choices[1]["message"]["content"]
    );
    let total: usize = choices
        .iter()
        .map(|c| {
            tiktoken_rs::o200k_base()
                .unwrap()
                .encode_ordinary(c["message"]["content"].as_str().unwrap())
                .len()
        })
        .sum();
    assert_eq!(v["usage"]["completion_tokens"], total);

    body["max_tokens"] = json!(5);
    let v = post(&mock, "/v1/chat/completions", body.clone())
        .await
        .json();
    for c in v["choices"].as_array().unwrap() {
        assert_eq!(c["finish_reason"], "length");
    }
    assert_eq!(v["usage"]["completion_tokens"], 15);

    let mut body = chat("newer parameter");
    body["max_completion_tokens"] = json!(7);
    let v = post(&mock, "/v1/chat/completions", body).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 7);
}

#[tokio::test]
async fn content_filter_trigger() {
    let mock = start("[faults]\ncontent_filter_words = [\"forbidden\"]\n").await;
    let v = post(
        &mock,
        "/v1/chat/completions",
        chat("tell me the FORBIDDEN thing"),
    )
    .await
    .json();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    let v = post(&mock, "/v1/chat/completions", chat("tell me a fine thing"))
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

fn weather_tools() -> serde_json::Value {
    json!([{"type":"function","function":{"name":"get_weather","parameters":{
        "type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},
        "required":["city"]}}},
        {"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{}}}}])
}

#[tokio::test]
async fn tool_calls_named_and_required() {
    let mock = start("").await;
    let mut body = chat("weather in Paris?");
    body["tools"] = weather_tools();
    body["tool_choice"] = json!({"type":"function","function":{"name":"get_weather"}});
    let v = post(&mock, "/v1/chat/completions", body.clone())
        .await
        .json();
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls");
    assert!(c["message"]["content"].is_null());
    let call = &c["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_weather");
    let args: serde_json::Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string());
    assert!(args["days"].is_u64());

    body["tool_choice"] = json!("required");
    let v = post(&mock, "/v1/chat/completions", body.clone())
        .await
        .json();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );

    body["tool_choice"] = json!("auto");
    let v = post(&mock, "/v1/chat/completions", body.clone())
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    body["tool_choice"] = json!({"type":"function","function":{"name":"nope"}});
    let r = post(&mock, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "tool_choice");
}

#[tokio::test]
async fn legacy_completions() {
    let mock = start("").await;
    let v = post(
        &mock,
        "/v1/completions",
        json!({"model":"gpt-3.5-turbo-instruct","prompt":["one","two"],"n":2}),
    )
    .await
    .json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"].as_array().unwrap().len(), 4);
    // Legacy default max_tokens is 16.
    for c in v["choices"].as_array().unwrap() {
        let t = c["text"].as_str().unwrap();
        assert!(tiktoken_rs::cl100k_base().unwrap().encode_ordinary(t).len() <= 16);
    }
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    // A chat model on the legacy endpoint is refused.
    let r = post(
        &mock,
        "/v1/completions",
        json!({"model":"gpt-4o","prompt":"x"}),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn embeddings_float_base64_dimensions() {
    let mock = start("").await;
    let v = post(
        &mock,
        "/v1/embeddings",
        json!({"model":"text-embedding-3-small","input":"hello world"}),
    )
    .await
    .json();
    assert_eq!(v["object"], "list");
    let e = v["data"][0]["embedding"].as_array().unwrap();
    assert_eq!(e.len(), 1536);
    let norm: f64 = e.iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-3);
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    assert_eq!(v["usage"]["total_tokens"], 2);

    let v = post(
        &mock,
        "/v1/embeddings",
        json!({"model":"text-embedding-3-small","input":["hello world","bye"],
               "dimensions":256,"encoding_format":"base64"}),
    )
    .await
    .json();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data[0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 256 * 4);

    // Same input, same vector.
    let again = post(
        &mock,
        "/v1/embeddings",
        json!({"model":"text-embedding-3-small","input":"hello world","dimensions":256,"encoding_format":"base64"}),
    )
    .await
    .json();
    assert_eq!(again["data"][0]["embedding"], data[0]["embedding"]);

    let r = post(
        &mock,
        "/v1/embeddings",
        json!({"model":"text-embedding-3-small","input":"x","dimensions":4000}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "dimensions");
}

#[tokio::test]
async fn models_list_and_get() {
    let mock = start("").await;
    let v = get(&mock, "/v1/models").await.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"gpt-4o-mini"));
    assert!(!ids.contains(&"gpt-4-32k"), "retired models are not listed");
    let m = get(&mock, "/v1/models/gpt-4o").await;
    assert_eq!(m.status, 200);
    assert_eq!(m.json()["object"], "model");
    let gone = get(&mock, "/v1/models/gpt-4-32k").await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error_code(), "model_not_found");
    // Dated snapshots are models of their own, listed and answering with their own id.
    assert!(ids.contains(&"gpt-4o-mini-2024-07-18"));
    let mut body = chat("hi");
    body["model"] = json!("gpt-4o-mini-2024-07-18");
    let r = post(&mock, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["model"], "gpt-4o-mini-2024-07-18");
}

#[tokio::test]
async fn unknown_path_is_openai_shaped_404() {
    let mock = start("").await;
    let r = post(&mock, "/v1/nope", json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn prefix_cache_reports_cached_tokens() {
    let mock = start("[cache]\nenabled = true\nmin_tokens = 1024\nblock = 128\n").await;
    let long = "lorem ipsum dolor sit amet ".repeat(300);
    let first = post(&mock, "/v1/chat/completions", chat(&long))
        .await
        .json();
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let second = post(&mock, "/v1/chat/completions", chat(&long))
        .await
        .json();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let prompt = second["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(cached >= 1024 && cached <= prompt, "{cached} of {prompt}");
    assert_eq!((cached - 1024) % 128, 0);
    // A short prompt never hits.
    let short = post(&mock, "/v1/chat/completions", chat("short"))
        .await
        .json();
    assert_eq!(short["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

#[test]
fn example_scenarios_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mock");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            sluice_mock::Scenario::from_toml(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(
        n >= 3,
        "the realistic tier, chaos drill and throughput examples"
    );
}

#[tokio::test]
async fn moderations_flag_the_configured_words_deterministically() {
    let mock =
        start("[moderations]\nwords = { violence = [\"attack\"], hate = [\"hateword\"] }\n").await;
    let r = post(
        &mock,
        "/v1/moderations",
        json!({"input": ["We attack at dawn", "a quiet afternoon"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["model"], "omni-moderation-latest");
    assert!(v["id"].as_str().unwrap().starts_with("modr-"));
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["flagged"], true);
    assert_eq!(results[0]["categories"]["violence"], true);
    assert_eq!(results[0]["categories"]["hate"], false);
    assert!(results[0]["category_scores"]["violence"].as_f64().unwrap() >= 0.9);
    assert_eq!(results[1]["flagged"], false);
    assert!(results[1]["category_scores"]["violence"].as_f64().unwrap() < 0.01);
    assert_eq!(
        results[1]["category_applied_input_types"]["hate"],
        json!(["text"])
    );
    // The same text scores the same every time.
    let again = post(
        &mock,
        "/v1/moderations",
        json!({"input": "a quiet afternoon"}),
    )
    .await;
    assert_eq!(
        again.json()["results"][0]["category_scores"],
        results[1]["category_scores"]
    );
    let bad = post(
        &mock,
        "/v1/moderations",
        json!({"model": "gpt-4o", "input": "x"}),
    )
    .await;
    assert_eq!(bad.status, 404);
    let missing = post(&mock, "/v1/moderations", json!({})).await;
    assert_eq!(missing.status, 400);
    assert!(
        sluice_mock::Scenario::from_toml("[moderations]\nwords = { nope = [\"x\"] }\n").is_err()
    );
}

#[tokio::test]
async fn structured_outputs_follow_the_schema_streamed_or_not() {
    let mock = start("").await;
    // A Pydantic-style schema: $defs, $ref, an Optional (anyOf with null), an enum, strict.
    let schema = json!({
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
            "final_answer": {"type": "string"},
            "confidence": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "mood": {"enum": ["calm", "busy"]}
        },
        "required": ["steps", "final_answer", "confidence", "mood"],
        "additionalProperties": false,
        "$defs": {"Step": {"type": "object", "properties": {
            "explanation": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["explanation", "n"], "additionalProperties": false}}
    });
    let mut body = chat("solve it");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "solution", "strict": true, "schema": schema}});
    let r = post(&mock, "/v1/chat/completions", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let answer: serde_json::Value = serde_json::from_str(&content).unwrap();
    assert!(answer["steps"][0]["explanation"].is_string());
    assert!(answer["steps"][0]["n"].is_i64());
    assert!(answer["final_answer"].is_string());
    assert!(answer["confidence"].is_number());
    assert_eq!(answer["mood"], "calm");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Each content token is one stream chunk; together they are the same JSON.
    body["stream"] = json!(true);
    let r = post(&mock, "/v1/chat/completions", body.clone()).await;
    let streamed: String = r
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(streamed, content);
    // Cut by max_tokens: the JSON is unfinished and the reason says so.
    body["stream"] = json!(false);
    body["max_tokens"] = json!(5);
    let r = post(&mock, "/v1/chat/completions", body.clone()).await;
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
    // Refused shapes, as the real endpoint refuses them.
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"schema": {}}});
    assert_eq!(
        post(&mock, "/v1/chat/completions", body.clone())
            .await
            .status,
        400
    );
    body["response_format"] = json!({"type": "json_object"});
    assert_eq!(
        post(&mock, "/v1/chat/completions", body.clone())
            .await
            .status,
        400,
        "no 'json' in the messages"
    );
    body["messages"] = json!([{"role": "user", "content": "answer in JSON"}]);
    let r = post(&mock, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn responses_answer_and_stream_as_the_real_api() {
    let mock = start("[output]\nmin_tokens = 12\nmax_tokens = 12\n").await;
    let body = json!({"model": "gpt-4o-mini", "instructions": "Be brief.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hello there"}]}]});
    let r = post(&mock, "/v1/responses", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["id"].as_str().unwrap().starts_with("resp"));
    let text = v["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(!text.is_empty());
    assert_eq!(v["usage"]["output_tokens"], 12);
    assert_eq!(
        v["usage"]["total_tokens"],
        v["usage"]["input_tokens"].as_u64().unwrap() + 12
    );
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 0);
    // Streamed: named events with sequence numbers, ending at response.completed, no [DONE].
    let mut s = body.clone();
    s["stream"] = json!(true);
    let r = post(&mock, "/v1/responses", s).await;
    assert_eq!(r.status, 200);
    let events: Vec<&str> = r
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"response.created"));
    assert_eq!(events.last(), Some(&"response.completed"));
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == "response.output_text.delta")
            .count(),
        12
    );
    assert!(!r.text.contains("[DONE]"));
    let seqs: Vec<u64> = r
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["sequence_number"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let deltas: String = r
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, text, "the stream says what the unary answer says");
    let missing = post(&mock, "/v1/responses", json!({"model": "gpt-4o-mini"})).await;
    assert_eq!(missing.status, 400);
}

#[tokio::test]
async fn a_response_cut_by_max_output_tokens_is_incomplete() {
    let mock = start("[output]\nmin_tokens = 40\nmax_tokens = 40\n").await;
    let r = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 16}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(v["usage"]["output_tokens"], 16);
    let r = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 16, "stream": true}),
    )
    .await;
    assert!(r.text.contains("event: response.incomplete"));
}
