//! Where the rate budgets' state (the GCRA `tat`s of each scope) lives: behind [`RateState`],
//! in-process (`local.rs`, the default) or in Redis (`redis_state.rs`), where every replica that
//! points at the same server shares one quota.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::gcra::Spec;
use super::Reservation;
use crate::error::Error;

pub(crate) trait RateState: Send + Sync + std::fmt::Debug {
    /// Reserve `tokens` (and one request) on every budget of `scope`, atomically, if the wait
    /// for it is at most `max_wait`.
    fn reserve<'a>(
        &'a self,
        scope: &'a str,
        specs: &'a [Spec],
        tokens: u64,
        max_wait: Duration,
    ) -> BoxFuture<'a, Result<Reservation, Error>>;

    /// Settle a token reservation by `token_delta` (negative gives tokens back). Called where
    /// an answer ends, possibly inside a poll: never waits.
    fn adjust(&self, scope: &str, specs: &[Spec], token_delta: i64);

    /// Make sure a budget's `tat` is at least `ahead` seconds from now (a server's correction
    /// or a 429's pause).
    fn raise<'a>(&'a self, scope: &'a str, spec: &'a Spec, ahead: f64) -> BoxFuture<'a, ()>;
}
