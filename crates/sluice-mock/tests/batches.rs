//! `/v1/files` and `/v1/batches` in-process: validation as upstream validates, the compressed
//! clock's statuses, cancel and expiry. (The happy path with the official SDK is in
//! tests/e2e/python/test_mock_with_openai_sdk.py.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

/// Upload `text` as `name` for `purpose`; returns the reply.
async fn upload(mock: &sluice_mock::MockServer, name: &str, purpose: &str, text: &str) -> Reply {
    let boundary = "sluice-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/jsonl\r\n\r\n{text}\r\n--{boundary}--\r\n"
    );
    let resp = client()
        .post(format!("http://{}/v1/files", mock.addr()))
        .bearer_auth(KEY)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Reply {
        status,
        headers,
        text: resp.text().await.unwrap(),
    }
}

fn line(id: &str, url: &str) -> String {
    json!({"custom_id": id, "method": "POST", "url": url,
           "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}})
    .to_string()
}

async fn create(mock: &sluice_mock::MockServer, file: &str) -> Value {
    post(
        mock,
        "/v1/batches",
        json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
    )
    .await
    .json()
}

#[tokio::test(start_paused = true)]
async fn lines_are_validated_statuses_move_and_cancel_and_expiry_hold() {
    let mock = start("[batches]\ncomplete_after = \"10s\"\nexpire_after = \"30s\"\n").await;
    // Refused uploads: not .jsonl, a line that is not an object, an unknown purpose.
    assert_eq!(
        upload(&mock, "in.txt", "batch", &line("a", "/v1/chat/completions"))
            .await
            .status,
        400
    );
    assert_eq!(
        upload(&mock, "in.jsonl", "batch", "not json").await.status,
        400
    );
    assert_eq!(upload(&mock, "in.jsonl", "nope", "{}").await.status, 400);
    // Lines that do not validate: the batch fails, each error naming its line.
    let text = [
        line("a", "/v1/chat/completions"),
        line("a", "/v1/chat/completions"),
        line("b", "/v1/embeddings"),
    ]
    .join("\n");
    let f = upload(&mock, "dup.jsonl", "batch", &text).await.json();
    let b = create(&mock, f["id"].as_str().unwrap()).await;
    assert_eq!(b["status"], "failed");
    let codes: Vec<&str> = b["errors"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["duplicate_custom_id", "mismatched_endpoint"]);
    assert_eq!(b["errors"]["data"][0]["line"], 2);
    // A good one moves validating -> in_progress -> finalizing -> completed on the clock.
    let text = [
        line("x", "/v1/chat/completions"),
        line("y", "/v1/chat/completions"),
    ]
    .join("\n");
    let f = upload(&mock, "ok.jsonl", "batch", &text).await.json();
    let id = create(&mock, f["id"].as_str().unwrap()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let status = |v: Value| v["status"].as_str().unwrap().to_string();
    assert_eq!(
        status(get(&mock, &format!("/v1/batches/{id}")).await.json()),
        "validating"
    );
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        status(get(&mock, &format!("/v1/batches/{id}")).await.json()),
        "in_progress"
    );
    tokio::time::advance(std::time::Duration::from_secs(7)).await;
    assert_eq!(
        status(get(&mock, &format!("/v1/batches/{id}")).await.json()),
        "finalizing"
    );
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    let done = get(&mock, &format!("/v1/batches/{id}")).await.json();
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["request_counts"],
        json!({"total": 2, "completed": 2, "failed": 0})
    );
    let out = get(
        &mock,
        &format!(
            "/v1/files/{}/content",
            done["output_file_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(out.text.lines().count(), 2);
    assert!(done["error_file_id"].is_null());
    // The batch's usage is the sum of its answers' (counts; the discount is in the price).
    let answers: Vec<Value> = out
        .text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["response"]["body"].clone())
        .collect();
    let sum = |k: &str| {
        answers
            .iter()
            .map(|a| a["usage"][k].as_u64().unwrap())
            .sum::<u64>()
    };
    let usage = &done["usage"];
    assert!(sum("prompt_tokens") > 0);
    assert_eq!(usage["input_tokens"].as_u64(), Some(sum("prompt_tokens")));
    assert_eq!(
        usage["output_tokens"].as_u64(),
        Some(sum("completion_tokens"))
    );
    assert_eq!(usage["total_tokens"].as_u64(), Some(sum("total_tokens")));
    assert!(usage["input_tokens_details"]["cached_tokens"].is_u64());
    assert!(usage["output_tokens_details"]["reasoning_tokens"].is_u64());
    // Cancel: cancelling, then cancelled; a finished batch cannot be cancelled.
    let id2 = create(&mock, f["id"].as_str().unwrap()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = post(&mock, &format!("/v1/batches/{id2}/cancel"), json!({}))
        .await
        .json();
    assert_eq!(c["status"], "cancelling");
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        status(get(&mock, &format!("/v1/batches/{id2}")).await.json()),
        "cancelled"
    );
    assert_eq!(
        post(&mock, &format!("/v1/batches/{id}/cancel"), json!({}))
            .await
            .status,
        409
    );
    // Listing sees all three, newest first.
    let list = get(&mock, "/v1/batches").await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    assert_eq!(get(&mock, "/v1/batches/batch_nope").await.status, 404);
}

#[tokio::test(start_paused = true)]
async fn a_batch_that_outlives_its_window_expires() {
    let mock = start("[batches]\ncomplete_after = \"60s\"\nexpire_after = \"5s\"\n").await;
    let f = upload(
        &mock,
        "in.jsonl",
        "batch",
        &line("a", "/v1/chat/completions"),
    )
    .await
    .json();
    let id = create(&mock, f["id"].as_str().unwrap()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::advance(std::time::Duration::from_secs(6)).await;
    assert_eq!(
        get(&mock, &format!("/v1/batches/{id}")).await.json()["status"],
        "expired"
    );
}
