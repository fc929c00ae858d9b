//! `sluice mock`: an OpenAI-compatible upstream that behaves like the real one where it hurts.
//!
//! It rate-limits per key with continuously refilling request and token budgets and the real
//! `x-ratelimit-*` headers, answers with OpenAI's exact JSON and SSE shapes, counts tokens with
//! the model's tokenizer, and injects the faults production sees (5xx, resets, stalls, streams cut
//! short, 429 storms). Output is derived from the request, so the same request gets the same answer.
//!
//! It depends on nothing of the sluice engine on purpose: it is an independent witness, and code
//! shared between the two would let one bug pass on both sides.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let mock = sluice_mock::MockServer::start(sluice_mock::Scenario::default()).await?;
//! println!("OPENAI_BASE_URL={}", mock.base_url());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
// Handlers bail out with a finished `Response` on their (cold) error paths; boxing it would only
// add noise.
#![allow(clippy::result_large_err)]

mod admin;
mod api;
mod azure;
mod batches;
mod chat;
mod completions;
pub mod config;
pub mod demo;
mod embeddings;
mod errors;
mod files;
mod generate;
pub mod godur;
mod json_style;
mod models;
mod moderations;
pub mod ratelimit;
mod response_store;
mod responses;
mod server;
pub mod stats;
mod stream;
mod tokens;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::watch;
use tokio::time::Instant;

pub use config::{ConfigError, Scenario};
pub use stats::StatsSnapshot;

/// The scenario in force and the state that belongs to it. Replaced whole when the scenario
/// changes; requests already running keep the one they started with.
#[derive(Debug)]
pub(crate) struct Live {
    pub scenario: Scenario,
    pub limiter: Arc<ratelimit::Limiter>,
    pub rng: Mutex<SmallRng>,
    pub applied_at: Instant,
    pub prefix_cache: Mutex<HashSet<u64>>,
}

impl Live {
    fn new(scenario: Scenario) -> Self {
        Live {
            rng: Mutex::new(SmallRng::seed_from_u64(scenario.seed)),
            scenario,
            limiter: Arc::new(ratelimit::Limiter::new()),
            applied_at: Instant::now(),
            prefix_cache: Mutex::new(HashSet::new()),
        }
    }
}

/// State shared by every handler.
#[derive(Debug)]
pub(crate) struct AppState {
    live: RwLock<Arc<Live>>,
    pub stats: Arc<stats::Stats>,
    pub counter: AtomicU64,
    /// Makes response ids differ between runs.
    pub salt: u64,
    /// Uploaded files (`/v1/files`), kept across scenario changes.
    pub files: Mutex<std::collections::BTreeMap<String, files::StoredFile>>,
    /// Batches (`/v1/batches`).
    pub batches: Mutex<std::collections::BTreeMap<String, batches::Job>>,
    /// Stored Responses API answers (`store`), kept across scenario changes.
    pub responses: Mutex<response_store::Store>,
}

impl AppState {
    fn new(scenario: Scenario) -> Self {
        AppState {
            stats: Arc::new(stats::Stats::new(scenario.max_tracked_ids)),
            live: RwLock::new(Arc::new(Live::new(scenario))),
            counter: AtomicU64::new(0),
            salt: rand::random(),
            files: Mutex::new(std::collections::BTreeMap::new()),
            batches: Mutex::new(std::collections::BTreeMap::new()),
            responses: Mutex::new(response_store::Store::default()),
        }
    }

    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_scenario(&self, scenario: Scenario) {
        self.stats.set_max_ids(scenario.max_tracked_ids);
        let live = Arc::new(Live::new(scenario));
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live;
    }
}

/// Build the HTTP router (exposed for tests that want to drive it without a socket).
pub(crate) fn router(state: Arc<AppState>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/completions", post(completions::handle))
        .route("/v1/embeddings", post(embeddings::handle))
        .route("/v1/moderations", post(moderations::handle))
        .route("/v1/responses", post(responses::handle))
        .route(
            "/v1/responses/{id}",
            get(response_store::retrieve).delete(response_store::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(response_store::input_items),
        )
        .route("/v1/files", post(files::upload).get(files::list))
        .route("/v1/files/{id}", get(files::retrieve).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/batches", post(batches::create).get(batches::list))
        .route("/v1/batches/{id}", get(batches::retrieve))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route(
            "/openai/deployments/{deployment}/{*operation}",
            post(azure::deployment),
        )
        .route("/openai/v1/{*operation}", post(azure::v1))
        .route("/openai/responses", post(azure::responses))
        .route("/_mock/scenario", post(admin::set_scenario))
        .route("/_mock/stats", get(admin::stats))
        .route("/_mock/reset", post(admin::reset))
        .route("/_mock/health", get(admin::health))
        .fallback(admin::not_found)
        .with_state(state)
}

/// A running simulator. Dropping it (or calling [`MockServer::shutdown`]) stops it.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    accepting: Option<tokio::task::JoinHandle<()>>,
}

impl MockServer {
    /// Start on `127.0.0.1` at any free port.
    pub async fn start(scenario: Scenario) -> std::io::Result<Self> {
        Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), scenario).await
    }

    /// Start on `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, scenario: Scenario) -> std::io::Result<Self> {
        tokens::warm_up();
        let listener = server::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState::new(scenario));
        let (tx, rx) = watch::channel(false);
        let accepting = tokio::spawn(server::accept_loop(listener, router(state.clone()), rx));
        Ok(MockServer {
            addr,
            state,
            shutdown: tx,
            accepting: Some(accepting),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1`, what an SDK takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Replace the scenario; running requests finish under the old one.
    pub fn set_scenario(&self, scenario: Scenario) {
        self.state.set_scenario(scenario);
    }

    /// Everything counted so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats.snapshot()
    }

    /// Forget the counts (not the rate-limit state).
    pub fn reset_stats(&self) {
        self.state.stats.reset();
    }

    /// Stop accepting and close every connection.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Stop, and return once the listener is closed: its address can be bound again (after
    /// [`MockServer::shutdown`] alone it may still be taken for a moment).
    pub async fn stop(mut self) {
        self.shutdown();
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
