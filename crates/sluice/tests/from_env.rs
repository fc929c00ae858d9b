//! `Client::from_env()` reads the variables the official SDKs read. In its own test binary
//! (its own process), because it changes the environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice::{ChatMessage, ChatRequest, Client, ErrorKind};
use sluice_mock::{MockServer, Scenario};

#[tokio::test]
async fn from_env_reads_key_base_url_and_rereads_the_key() {
    let m = MockServer::start(
        Scenario::from_toml(
            "auth = \"listed\"\n[[keys]]\nkey = \"sk-env-key-one-00001\"\nname = \"one\"\n[[keys]]\nkey = \"sk-env-key-two-00002\"\nname = \"two\"\n",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    std::env::set_var("OPENAI_BASE_URL", m.base_url());
    std::env::set_var("OPENAI_API_KEY", "sk-env-key-one-00001");
    std::env::set_var("OPENAI_ORG_ID", "org-test");
    let c = Client::from_env().unwrap();
    let req = ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("x")]).max_tokens(3);
    c.chat().create(req.clone()).await.unwrap();
    // The key variable is read at every request: a change applies without a new client.
    std::env::set_var("OPENAI_API_KEY", "sk-env-key-two-00002");
    c.chat().create(req.clone()).await.unwrap();
    let s = m.stats();
    assert_eq!(s.by_key["one"], 1);
    assert_eq!(s.by_key["two"], 1);
    std::env::remove_var("OPENAI_API_KEY");
    let e = c.chat().create(req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Authentication);
    assert!(e.to_string().contains("OPENAI_API_KEY"));
}
