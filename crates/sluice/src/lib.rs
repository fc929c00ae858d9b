//! sluice: a traffic controller for OpenAI-compatible LLM APIs.
//!
//! This crate is the engine every face of sluice shares (client library, gateway, batch runner)
//! and the Rust client on top of it. A request passes one ordered stack ([`Engine`]): total
//! deadline, retries with full jitter under a retry budget, credentials, then the transport
//! with connect / first-byte / idle timeouts. Errors come back as one [`Error`] with an
//! [`ErrorKind`]; streams have backpressure and close their connection when dropped.
//!
//! ```no_run
//! use sluice::{ChatMessage, ChatRequest, Client};
//!
//! # async fn run() -> Result<(), sluice::Error> {
//! let client = Client::from_env()?; // OPENAI_API_KEY, OPENAI_BASE_URL, …
//! let req = ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("Hello!")]).max_tokens(64);
//! let resp = client.chat().create(req).await?;
//! println!("{:?} after {} attempt(s)", resp.text(), resp.attempts());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod accumulate;
pub mod admission;
pub mod alerts;
mod boxed;
pub mod breaker;
mod call;
pub mod catalog;
mod chat_stream;
mod client;
mod config;
pub mod credentials;
pub mod doctor;
mod error;
mod event_stream;
mod fnv;
mod headers;
mod hex;
mod hop_by_hop;
pub mod keypool;
mod metric_handles;
pub mod model_policy;
pub mod models;
pub mod models_check;
pub mod models_update;
mod observe;
pub mod pricing;
mod redis_conn;
mod request_end;
mod request_headers;
mod retry;
pub mod routes;
mod secret;
mod shared_health;
pub mod spend;
pub mod sse;
mod sse_wire;
mod stack;
mod text;
mod transport;
pub mod upstreams;
pub mod wire;

pub use accumulate::ChatAccumulator;
pub use boxed::pinned_box;
pub use call::{
    BodyFacts, Call, ChoiceFacts, Meta, Reply, RequestOptions, SharedUpload, StreamReply,
};
pub use chat_stream::{ChatStream, TextStream};
pub use client::{
    Chat, Client, ClientBuilder, Completions, Embeddings, Models, Response, UpstreamSpec,
    DEFAULT_BASE_URL, DEFAULT_MAX_TOKENS,
};
pub use config::{RetryPolicy, Timeouts};
pub use error::{ApiError, Error, ErrorKind, Result};
pub use event_stream::EventStream;
pub use headers::RateLimits;
pub use hop_by_hop::{connection_listed, stays_behind};
pub use metric_handles::keep_for_global_recorder;
pub use observe::know_models;
pub use secret::SecretString;
pub use stack::{Counters, Engine, EngineConfig};
pub use text::Boundary;
pub use transport::{within, BoxError, Pieces, TransportConfig, Upload};
pub use wire::{
    ChatChunk, ChatCompletion, ChatMessage, ChatRequest, CompletionRequest, EmbeddingRequest,
    FinishReason, Tool, Usage,
};

/// The README's examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
