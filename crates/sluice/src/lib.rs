//! sluice: a traffic controller for OpenAI-compatible LLM APIs.
//!
//! This crate is the engine every face of sluice shares (client library, gateway, batch runner)
//! and the Rust client on top of it. A request passes one ordered stack (see [`stack`]): total
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
pub mod catalog;
mod chat_stream;
mod client;
pub mod config;
pub mod credentials;
pub mod doctor;
mod error;
pub mod headers;
pub mod keypool;
pub mod model_policy;
pub mod models;
pub mod models_check;
pub mod models_update;
pub mod observe;
pub mod pricing;
mod redis_conn;
pub mod retry;
pub mod routes;
mod secret;
pub mod spend;
pub mod sse;
pub mod sse_wire;
pub mod stack;
pub mod text;
pub mod transport;
pub mod wire;

pub use accumulate::ChatAccumulator;
pub use chat_stream::{ChatStream, TextStream};
pub use client::{
    Chat, Client, ClientBuilder, Completions, Embeddings, Models, Response, DEFAULT_BASE_URL,
    DEFAULT_MAX_TOKENS,
};
pub use config::{RetryPolicy, Timeouts};
pub use error::{ApiError, Error, ErrorKind, Result};
pub use headers::RateLimits;
pub use secret::SecretString;
pub use stack::{Meta, RequestOptions};
pub use text::Boundary;
pub use wire::{
    ChatChunk, ChatCompletion, ChatMessage, ChatRequest, CompletionRequest, EmbeddingRequest,
    FinishReason, Tool, Usage,
};

/// The README's examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
