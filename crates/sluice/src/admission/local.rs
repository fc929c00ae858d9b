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
use super::Reservation;
use crate::error::Error;

#[derive(Debug)]
pub(crate) struct LocalState {
    origin: Instant,
    scopes: Mutex<HashMap<String, HashMap<&'static str, f64>>>,
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
            scopes.insert(scope.to_string(), HashMap::new());
        }
        let Some(tats) = scopes.get_mut(scope) else {
            return Reservation::Granted {
                wait: Duration::ZERO,
            };
        };
        let mut at = now;
        for s in specs {
            let tat = tats.get(s.name).copied().unwrap_or(0.0);
            at = at.max(gcra::earliest(s, tat, s.cost(tokens), now));
        }
        let wait = Duration::from_secs_f64(at - now);
        if wait > max_wait {
            return Reservation::Refused { wait };
        }
        for s in specs {
            let tat = tats.get(s.name).copied().unwrap_or(0.0);
            tats.insert(s.name, gcra::commit(s, tat, s.cost(tokens), at));
        }
        Reservation::Granted { wait }
    }

    pub(crate) fn adjust(&self, scope: &str, specs: &[Spec], token_delta: i64) {
        let now = self.now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tats) = scopes.get_mut(scope) else {
            return;
        };
        for s in specs.iter().filter(|s| s.unit == gcra::Unit::Tokens) {
            if let Some(tat) = tats.get_mut(s.name) {
                *tat = gcra::adjust(s, *tat, token_delta as f64, now);
            }
        }
    }

    /// Make sure `tat ≥ now + ahead` (server corrections and pauses).
    pub(crate) fn raise(&self, scope: &str, spec: &Spec, ahead: f64) {
        let now = self.now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if !scopes.contains_key(scope) {
            scopes.insert(scope.to_string(), HashMap::new());
        }
        if let Some(tats) = scopes.get_mut(scope) {
            let tat = tats.get(spec.name).copied().unwrap_or(0.0);
            tats.insert(spec.name, tat.max(now + ahead));
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

    fn adjust(&self, scope: &str, specs: &[Spec], token_delta: i64) {
        LocalState::adjust(self, scope, specs, token_delta);
    }

    fn raise<'a>(&'a self, scope: &'a str, spec: &'a Spec, ahead: f64) -> BoxFuture<'a, ()> {
        LocalState::raise(self, scope, spec, ahead);
        std::future::ready(()).boxed()
    }
}
