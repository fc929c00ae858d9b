//! In-process budget state: one map of scopes to their `tat`s behind a mutex, on the tokio
//! clock (so tests can pause time). The default: nothing to run, nothing to configure.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::gcra::{self, Spec};
use super::state::RateState;
use super::{Reservation, Settled};
use crate::error::Error;

#[derive(Debug)]
pub(crate) struct LocalState {
    origin: Instant,
    scopes: Mutex<HashMap<String, Tats>>,
}

/// One scope's budgets and the credit its token budgets were given back.
#[derive(Debug, Default)]
struct Tats {
    by_spec: HashMap<&'static str, f64>,
    /// Seconds the token budgets' `tat`s have moved back, net, since the scope began: refunds
    /// add (the least any token budget moved), corrections that take more subtract. A request
    /// sleeping until its slot may start that much earlier than the slot it was given.
    credit: f64,
    /// The request budgets again, fed only by when requests really started: a request that
    /// comes forward on credit must still fit these (its own slot was fitted against the
    /// others' slots as they were given, not as they moved).
    started: HashMap<&'static str, f64>,
}

impl Default for LocalState {
    fn default() -> Self {
        LocalState {
            origin: Instant::now(),
            scopes: Mutex::new(HashMap::new()),
        }
    }
}

impl LocalState {
    /// Seconds on this state's clock (offset so that a fresh budget, `tat = 0`, is full).
    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64() + 1_000_000.0
    }

    pub(crate) fn reserve(
        &self,
        scope: &str,
        specs: &[Spec],
        tokens: u64,
        max_wait: Duration,
    ) -> Reservation {
        let now = self.now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if !scopes.contains_key(scope) {
            scopes.insert(scope.to_string(), Tats::default());
        }
        let Some(tats) = scopes.get_mut(scope) else {
            return Reservation::Granted {
                wait: Duration::ZERO,
            };
        };
        let mut at = now;
        for s in specs {
            let tat = tats.by_spec.get(s.name).copied().unwrap_or(0.0);
            at = at.max(gcra::earliest(s, tat, s.cost(tokens), now));
        }
        let wait = Duration::from_secs_f64(at - now);
        if wait > max_wait {
            return Reservation::Refused { wait };
        }
        for s in specs {
            let tat = tats.by_spec.get(s.name).copied().unwrap_or(0.0);
            tats.by_spec
                .insert(s.name, gcra::commit(s, tat, s.cost(tokens), at));
        }
        Reservation::Granted { wait }
    }

    pub(crate) fn adjust(&self, scope: &str, specs: &[Spec], token_delta: i64, how: Settled) {
        let now = self.now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tats) = scopes.get_mut(scope) else {
            return;
        };
        // How far back every token budget moved (negative: forward); the least of them is
        // what a sleeping request may gain, since each of those budgets must allow it.
        let mut back: Option<f64> = None;
        for s in specs.iter().filter(|s| s.unit == gcra::Unit::Tokens) {
            if let Some(tat) = tats.by_spec.get_mut(s.name) {
                let moved = gcra::adjust(s, *tat, token_delta as f64, now);
                back = Some(back.map_or(*tat - moved, |b: f64| b.min(*tat - moved)));
                *tat = moved;
            }
        }
        if how == Settled::Answered || token_delta > 0 {
            tats.credit += back.unwrap_or(0.0);
        }
    }

    /// When a request may start now as far as the request budgets go, counting only the
    /// requests that have really started: 0 when it may go at once.
    pub(crate) fn request_wait(&self, scope: &str, specs: &[Spec]) -> f64 {
        let now = self.now();
        let scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tats) = scopes.get(scope) else {
            return 0.0;
        };
        specs
            .iter()
            .filter(|s| s.unit == gcra::Unit::Requests)
            .map(|s| {
                let tat = tats.started.get(s.name).copied().unwrap_or(0.0);
                gcra::earliest(s, tat, 1.0, now) - now
            })
            .fold(0.0, f64::max)
    }

    /// A request starts now: count it in [`Tats::started`].
    pub(crate) fn record_start(&self, scope: &str, specs: &[Spec]) {
        let now = self.now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tats) = scopes.get_mut(scope) {
            for s in specs.iter().filter(|s| s.unit == gcra::Unit::Requests) {
                let tat = tats.started.get(s.name).copied().unwrap_or(0.0);
                tats.started.insert(s.name, gcra::commit(s, tat, 1.0, now));
            }
        }
    }

    /// See [`Tats::credit`].
    pub(crate) fn credit(&self, scope: &str) -> f64 {
        let scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        scopes.get(scope).map_or(0.0, |t| t.credit)
    }

    /// Make sure `tat ≥ now + ahead` (server corrections and pauses).
    pub(crate) fn raise(&self, scope: &str, spec: &Spec, ahead: f64) {
        let now = self.now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if !scopes.contains_key(scope) {
            scopes.insert(scope.to_string(), Tats::default());
        }
        if let Some(tats) = scopes.get_mut(scope) {
            let tat = tats.by_spec.get(spec.name).copied().unwrap_or(0.0);
            let raised = tat.max(now + ahead);
            if spec.unit == gcra::Unit::Tokens {
                // The server says less is left: a sleeping request loses that much of its credit.
                tats.credit -= raised - tat;
            }
            tats.by_spec.insert(spec.name, raised);
        }
    }
}

impl RateState for LocalState {
    fn reserve<'a>(
        &'a self,
        scope: &'a str,
        specs: &'a [Spec],
        tokens: u64,
        max_wait: Duration,
    ) -> BoxFuture<'a, Result<Reservation, Error>> {
        std::future::ready(Ok(LocalState::reserve(
            self, scope, specs, tokens, max_wait,
        )))
        .boxed()
    }

    fn adjust(&self, scope: &str, specs: &[Spec], token_delta: i64, how: Settled) {
        LocalState::adjust(self, scope, specs, token_delta, how);
    }

    fn raise<'a>(&'a self, scope: &'a str, spec: &'a Spec, ahead: f64) -> BoxFuture<'a, ()> {
        LocalState::raise(self, scope, spec, ahead);
        std::future::ready(()).boxed()
    }

    fn credit(&self, scope: &str) -> f64 {
        LocalState::credit(self, scope)
    }

    fn request_wait(&self, scope: &str, specs: &[Spec]) -> f64 {
        LocalState::request_wait(self, scope, specs)
    }

    fn record_start(&self, scope: &str, specs: &[Spec]) {
        LocalState::record_start(self, scope, specs);
    }
}
