//! Where the rate budgets' state (the GCRA `tat`s of each scope) lives: behind [`RateState`],
//! in-process (`local.rs`, the default) or in Redis (`redis_state.rs`), where every replica that
//! points at the same server shares one quota.

use std::time::Duration;

use futures_util::future::{BoxFuture, Either};

use super::gcra::Spec;
use super::{Reservation, Settled};
use crate::error::Error;

/// A state's answer: there at once (in-process, without a box: these calls are made on every
/// attempt) or after a round trip (Redis).
pub(crate) type StateFuture<'a, T> = Either<std::future::Ready<T>, BoxFuture<'a, T>>;

/// An answer that is already there.
pub(crate) fn at_once<'a, T>(v: T) -> StateFuture<'a, T> {
    Either::Left(std::future::ready(v))
}

/// An answer after a round trip.
pub(crate) fn later<'a, T>(
    f: impl std::future::Future<Output = T> + Send + 'a,
) -> StateFuture<'a, T> {
    Either::Right(Box::pin(f))
}

pub(crate) trait RateState: Send + Sync + std::fmt::Debug {
    /// Reserve `tokens` (and one request) on every budget of `scope`, atomically, if the wait
    /// for it is at most `max_wait`.
    fn reserve<'a>(
        &'a self,
        scope: &'a str,
        specs: &'a [Spec],
        tokens: u64,
        max_wait: Duration,
    ) -> StateFuture<'a, Result<Reservation, Error>>;

    /// Settle a token reservation by `token_delta` (negative gives tokens back). Called where
    /// an answer ends, possibly inside a poll: never waits.
    fn adjust(&self, scope: &str, specs: &[Spec], token_delta: i64, how: Settled);

    /// Make sure a budget's `tat` is at least `ahead` seconds from now (a server's correction
    /// or a 429's pause).
    fn raise<'a>(&'a self, scope: &'a str, spec: &'a Spec, ahead: f64) -> StateFuture<'a, ()>;

    /// The server reports `remaining` tokens left after the attempt that started `since` ago
    /// with `mark`: correct the minute's token budget (`tpm` among `specs`) from it. True when
    /// the budget was eased (moved back), so that sleeping requests may come forward. A backend
    /// that cannot tell what was reserved after the attempt only tightens, from `remaining`
    /// alone: it never eases.
    fn correct<'a>(
        &'a self,
        scope: &'a str,
        specs: &'a [Spec],
        remaining: u64,
        _mark: u64,
        _since: Duration,
    ) -> StateFuture<'a, bool> {
        later(async move {
            if let Some(spec) = specs.iter().find(|s| s.name == "tpm") {
                self.tighten(scope, spec, remaining).await;
            }
            false
        })
    }

    /// The server says only `remaining` units of `spec` are left: never believe in more.
    fn tighten<'a>(
        &'a self,
        scope: &'a str,
        spec: &'a Spec,
        remaining: u64,
    ) -> StateFuture<'a, ()> {
        let ahead = spec.tau - remaining as f64 / spec.rate;
        if ahead > 0.0 {
            self.raise(scope, spec, ahead)
        } else {
            at_once(())
        }
    }

    /// Whether requests asleep for their slots may come forward on [`RateState::credit`]
    /// (and so need [`RateState::record_start`] when they wake).
    fn gives_credit(&self) -> bool {
        false
    }

    /// Seconds the scope's token budgets have moved back, net, since it began (refunds less
    /// the corrections that took more): a request sleeping until its slot may start earlier by
    /// the growth of this number while it sleeps. A backend that cannot tell says 0 — its
    /// sleepers then keep their slots, which is never too early.
    fn credit(&self, _scope: &str) -> f64 {
        0.0
    }

    /// Seconds until a request may start as far as the scope's request budgets go, counting
    /// only requests that really started (see [`RateState::record_start`]): what a request
    /// coming forward on credit must still respect. Only asked where `credit` grew.
    fn request_wait(&self, _scope: &str, _specs: &[Spec]) -> f64 {
        0.0
    }

    /// A granted request that slept for its slot starts now (one granted without a wait is
    /// counted by its reservation). Told only where sleepers may come forward
    /// ([`RateState::gives_credit`]), the only place [`RateState::request_wait`] is asked.
    ///
    /// Returns its mark (see [`Reservation::Granted`]); 0 from a backend that does not count.
    fn record_start(&self, _scope: &str, _specs: &[Spec], _tokens: u64) -> u64 {
        0
    }
}
