//! The Responses API beyond one answer: function tools (unary and streamed), stored answers
//! (`GET`, `DELETE`, `input_items`), `store: false`, and `previous_response_id` — whose earlier
//! turns are input again and counted again, as the real service bills them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

fn weather_tool() -> Value {
    json!([{"type": "function", "name": "get_weather", "strict": true,
            "parameters": {"type": "object", "additionalProperties": false, "required": ["city", "unit"],
                           "properties": {"city": {"type": "string"},
                                          "unit": {"type": "string", "enum": ["c", "f"]}}}}])
}

fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn a_required_tool_is_called_with_arguments_that_fit_its_schema() {
    let mock = start("").await;
    let body = json!({"model": "gpt-4o-mini", "input": "weather in Paris?",
                      "tools": weather_tool(), "tool_choice": "required"});
    let r = post(&mock, "/v1/responses", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "completed");
    assert_eq!(v["tools"], weather_tool(), "the tools are echoed");
    let item = &v["output"][0];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["name"], "get_weather");
    assert!(item["id"].as_str().unwrap().starts_with("fc_"));
    assert!(item["call_id"].as_str().unwrap().starts_with("call_"));
    let args: Value = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string());
    assert!(
        ["c", "f"].contains(&args["unit"].as_str().unwrap()),
        "{args}"
    );
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);
    // Without a tool the same input is answered in text; naming an unknown function is a 400.
    let auto = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "weather in Paris?", "tools": weather_tool()}),
    )
    .await
    .json();
    assert_eq!(auto["output"][0]["type"], "message");
    let unknown = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "x", "tools": weather_tool(),
               "tool_choice": {"type": "function", "name": "nope"}}),
    )
    .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["error"]["param"], "tool_choice");
    let nameless = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "x", "tools": [{"type": "function"}]}),
    )
    .await;
    assert_eq!(nameless.json()["error"]["param"], "tools[0].name");

    // Streamed: the call's item, its argument deltas, their done, the item done, completed.
    let mut s = body.clone();
    s["stream"] = json!(true);
    let r = post(&mock, "/v1/responses", s).await;
    let ev = events(&r.text);
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.first().copied(),
        Some("response.created"),
        "{kinds:?}"
    );
    assert_eq!(ev[2]["item"]["type"], "function_call");
    assert_eq!(ev[2]["item"]["arguments"], "");
    let deltas: String = ev
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| e["delta"].as_str().unwrap().to_string())
        .collect();
    let done = ev
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(deltas, done["arguments"].as_str().unwrap());
    assert_eq!(deltas, item["arguments"].as_str().unwrap(), "same as unary");
    assert_eq!(
        &kinds[kinds.len() - 2..],
        &["response.output_item.done", "response.completed"]
    );
}

#[tokio::test]
async fn stored_answers_are_retrieved_listed_continued_and_deleted() {
    let mock = start("").await;
    let first = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "My name is Ada. Say hi."}),
    )
    .await
    .json();
    let id = first["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_"), "{id}");
    assert_eq!(first["store"], true);
    let got = get(&mock, &format!("/v1/responses/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), first, "retrieved as answered");
    let items = get(&mock, &format!("/v1/responses/{id}/input_items"))
        .await
        .json();
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["type"], "message");
    assert_eq!(
        items["data"][0]["content"][0]["text"],
        "My name is Ada. Say hi."
    );
    assert_eq!(items["has_more"], false);

    // The next turn: the earlier input and answer are input again, and billed again.
    let alone = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "What is my name?"}),
    )
    .await
    .json();
    let next = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "What is my name?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text);
    let next = next.json();
    assert_eq!(next["previous_response_id"], json!(id));
    let (with, without) = (
        next["usage"]["input_tokens"].as_u64().unwrap(),
        alone["usage"]["input_tokens"].as_u64().unwrap(),
    );
    assert!(
        with > without + first["usage"]["output_tokens"].as_u64().unwrap(),
        "the earlier turn counts: {with} vs {without}"
    );
    // A function call's output is accepted as input of a later turn.
    let called = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "weather?", "tools": weather_tool(), "tool_choice": "required"}),
    )
    .await
    .json();
    let call_id = called["output"][0]["call_id"].as_str().unwrap();
    let answered = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "previous_response_id": called["id"], "tools": weather_tool(),
               "input": [{"type": "function_call_output", "call_id": call_id, "output": "{\"temp\": 21}"}]}),
    )
    .await;
    assert_eq!(answered.status, 200, "{}", answered.text);
    assert_eq!(answered.json()["output"][0]["type"], "message");

    // Unknown, unstored and deleted answers are not found.
    let unknown = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "x", "previous_response_id": "resp_nope"}),
    )
    .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(
        unknown.json()["error"]["code"],
        "previous_response_not_found"
    );
    let unstored = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "x", "store": false}),
    )
    .await
    .json();
    assert_eq!(unstored["store"], false);
    let r = get(
        &mock,
        &format!("/v1/responses/{}", unstored["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.status, 404);
    let del = client()
        .delete(format!("http://{}/v1/responses/{id}", mock.addr()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let del: Value = del.json().await.unwrap();
    assert_eq!(
        del,
        json!({"id": id, "object": "response", "deleted": true})
    );
    assert_eq!(get(&mock, &format!("/v1/responses/{id}")).await.status, 404);
}

#[tokio::test]
async fn a_streamed_answer_is_stored_when_it_completes() {
    let mock = start("").await;
    let r = post(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "hello", "stream": true}),
    )
    .await;
    let ev = events(&r.text);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    let id = last["response"]["id"].as_str().unwrap();
    let got = get(&mock, &format!("/v1/responses/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), last["response"]);
}
