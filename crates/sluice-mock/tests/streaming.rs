//! SSE streams in OpenAI's order, with include_usage and tool-call fragments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

fn parsed(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test]
async fn chat_stream_order_and_content() {
    let mock = start("").await;
    let plain = post(&mock, "/v1/chat/completions", chat("stream me"))
        .await
        .json();
    let mut body = chat("stream me");
    body["stream"] = json!(true);
    let r = post(&mock, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    let events = r.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = parsed(&events);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(
            c.get("usage").is_none(),
            "no usage field without include_usage"
        );
    }
    // Role first, with empty content.
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    // Then one token per content chunk, then the finish chunk.
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    let content_chunks = &chunks[1..chunks.len() - 1];
    let bpe = tiktoken_rs::o200k_base().unwrap();
    let mut text = String::new();
    for c in content_chunks {
        assert!(c["choices"][0]["finish_reason"].is_null());
        let piece = c["choices"][0]["delta"]["content"].as_str().unwrap();
        assert_eq!(bpe.encode_ordinary(piece).len(), 1, "one token per chunk");
        text.push_str(piece);
    }
    // The stream says exactly what the non-streaming answer says.
    assert_eq!(
        text,
        plain["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        content_chunks.len() as u64,
        plain["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(mock.stats().streams.completed, 1);
}

#[tokio::test]
async fn include_usage_adds_a_final_usage_chunk() {
    let mock = start("").await;
    let mut body = chat("count my tokens");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body["max_tokens"] = json!(6);
    let events = post(&mock, "/v1/chat/completions", body).await.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = parsed(&events);
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    for c in rest {
        assert!(c["usage"].is_null(), "usage is null on every other chunk");
    }
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 6);
    let before_usage = rest.last().unwrap();
    assert_eq!(before_usage["choices"][0]["finish_reason"], "length");
    let prompt = usage_chunk["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        usage_chunk["usage"]["total_tokens"].as_u64().unwrap(),
        prompt + 6
    );
}

#[tokio::test]
async fn n_choices_stream_interleaved() {
    let mock = start("").await;
    let mut body = chat("two ways");
    body["stream"] = json!(true);
    body["n"] = json!(2);
    let chunks = parsed(
        &post(&mock, "/v1/chat/completions", body.clone())
            .await
            .events(),
    );
    let mut texts = [String::new(), String::new()];
    let mut finished = [false, false];
    for c in &chunks {
        let ch = &c["choices"][0];
        let i = ch["index"].as_u64().unwrap() as usize;
        if let Some(t) = ch["delta"]["content"].as_str() {
            texts[i].push_str(t);
        }
        if ch["finish_reason"].is_string() {
            finished[i] = true;
        }
    }
    assert_eq!(finished, [true, true]);
    body["stream"] = json!(false);
    let plain = post(&mock, "/v1/chat/completions", body).await.json();
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(
            t,
            plain["choices"][i]["message"]["content"].as_str().unwrap()
        );
    }
}

#[tokio::test]
async fn tool_call_arguments_stream_in_fragments() {
    let mock = start("").await;
    let mut body = chat("weather?");
    body["tools"] = json!([{"type":"function","function":{"name":"get_weather","parameters":{
        "type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]},
        "days":{"type":"integer"},"hourly":{"type":"boolean"}}}}}]);
    body["tool_choice"] = json!({"type":"function","function":{"name":"get_weather"}});
    let plain = post(&mock, "/v1/chat/completions", body.clone())
        .await
        .json();
    body["stream"] = json!(true);
    let chunks = parsed(&post(&mock, "/v1/chat/completions", body).await.events());
    assert!(chunks[0]["choices"][0]["delta"]["content"].is_null());
    let head = &chunks[1]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(head["index"], 0);
    assert_eq!(head["type"], "function");
    assert_eq!(head["function"]["name"], "get_weather");
    assert_eq!(head["function"]["arguments"], "");
    let id = head["id"].as_str().unwrap();
    let mut args = String::new();
    let mut fragments = 0;
    for c in &chunks[2..chunks.len() - 1] {
        let tc = &c["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(tc["index"], 0);
        assert!(
            tc.get("id").is_none(),
            "only the first fragment carries the id"
        );
        args.push_str(tc["function"]["arguments"].as_str().unwrap());
        fragments += 1;
    }
    assert!(fragments > 3, "arguments arrive in several fragments");
    let want = &plain["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(args, want["function"]["arguments"].as_str().unwrap());
    assert_eq!(id, want["id"].as_str().unwrap());
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    serde_json::from_str::<Value>(&args).unwrap();
}

#[tokio::test]
async fn legacy_completion_stream() {
    let mock = start("").await;
    let body = json!({"model":"gpt-3.5-turbo-instruct","prompt":"Once","stream":true,
        "stream_options":{"include_usage":true},"max_tokens":5});
    let events = post(&mock, "/v1/completions", body).await.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = parsed(&events);
    let texts: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert!(!texts.is_empty());
    assert_eq!(chunks[0]["object"], "text_completion");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 5);
}
