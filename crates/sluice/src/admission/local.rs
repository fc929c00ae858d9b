//! In-process budget state: one map of scopes to their `tat`s behind a mutex, on the tokio
//! clock (so tests can pause time). The default: nothing to run, nothing to configure.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::gcra::{self, Spec};
use super::state::{at_once, RateState, StateFuture};
use super::{Reservation, Settled};
use crate::error::Error;

#[derive(Debug)]
pub(crate) struct LocalState {
    origin: Instant,
    /// By scope name (a hash's hex, with the model's name when limits are per model, or a
    /// virtual key's name): a fast hash seeded per map, as part of a name is a caller's.
    scopes: Mutex<Scopes>,
}

type Scopes = hashbrown::HashMap<String, Tats, foldhash::fast::RandomState>;

/// One scope's budgets and the credit its token budgets were given back.
#[derive(Debug, Default)]
struct Tats {
    by_spec: PerBudget,
    /// Seconds the token budgets' `tat`s have moved back, net, since the scope began: refunds
    /// add (the least any token budget moved), corrections that take more subtract. A request
    /// sleeping until its slot may start that much earlier than the slot it was given.
    credit: f64,
    /// The request budgets again, fed only by when requests really started: a request that
    /// comes forward on credit must still fit these (its own slot was fitted against the
    /// others' slots as they were given, not as they moved).
    started: PerBudget,
    /// Tokens reserved on this scope so far: what a server's report is read against (see
    /// [`LocalState::correct`]).
    reserved: u64,
    /// Tokens of the requests that started more than [`REORDER`] ago, and the ones since, in
    /// the order they started (when, how many).
    started_before: u64,
    recent: VecDeque<(f64, u64)>,
    /// The most tokens the server has reported left: its bucket holds at least that, and
    /// refill past what it holds is lost.
    most_left: u64,
}

/// How far apart two requests may start and still reach the server in the other order (tasks
/// woken together, different connections). A server's report for a request is read as if the
/// requests that started this little before it had not reached it yet: never more room than
/// there is, for a little less where the order held.
const REORDER: f64 = 0.05;

/// At most this many recent starts are remembered per scope; older ones count as seen.
const RECENT_MAX: usize = 4096;

/// One number per budget of a scope, by the budget's name. A scope has at most four budgets
/// (rpm, tpm, rpd, tpd), so a short list read in order costs less than hashing the name on
/// every reservation.
#[derive(Debug, Default)]
struct PerBudget(Vec<(&'static str, f64)>);

impl PerBudget {
    fn get(&self, name: &str) -> Option<&f64> {
        self.0.iter().find(|(n, _)| same(n, name)).map(|(_, v)| v)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut f64> {
        self.0
            .iter_mut()
            .find(|(n, _)| same(n, name))
            .map(|(_, v)| v)
    }

    fn insert(&mut self, name: &'static str, value: f64) {
        match self.get_mut(name) {
            Some(v) => *v = value,
            None => self.0.push((name, value)),
        }
    }
}

/// Whether two budget names are the same: by where the text lives first (a budget's name is a
/// static the specs share, so this is almost always the answer), by the text otherwise.
fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// The scope's state, made on first use.
fn scope_state<'a>(scopes: &'a mut Scopes, scope: &str) -> &'a mut Tats {
    scopes.entry_ref(scope).or_default()
}

impl Tats {
    /// Make sure `spec`'s `tat` is at least `at` (the server says less is left, or a pause):
    /// a token budget's sleeping requests lose that much of their credit.
    fn raise_to(&mut self, spec: &Spec, at: f64) {
        let tat = self.by_spec.get(spec.name).copied().unwrap_or(0.0);
        if at > tat {
            if spec.unit == gcra::Unit::Tokens {
                self.credit -= at - tat;
            }
            self.by_spec.insert(spec.name, at);
        }
    }

    /// A request of `tokens` starts `now`; its mark (see [`Reservation::Granted`]): the
    /// tokens of the requests that surely reached the server before it, its own included.
    fn record_start(&mut self, specs: &[Spec], tokens: u64, now: f64) -> u64 {
        for s in specs.iter().filter(|s| s.unit == gcra::Unit::Requests) {
            let tat = self.started.get(s.name).copied().unwrap_or(0.0);
            self.started.insert(s.name, gcra::commit(s, tat, 1.0, now));
        }
        while let Some(&(at, n)) = self.recent.front() {
            if at >= now - REORDER && self.recent.len() < RECENT_MAX {
                break;
            }
            self.started_before = self.started_before.saturating_add(n);
            self.recent.pop_front();
        }
        self.recent.push_back((now, tokens));
        self.started_before.saturating_add(tokens)
    }
}

impl Default for LocalState {
    fn default() -> Self {
        LocalState {
            origin: Instant::now(),
            scopes: Mutex::new(Scopes::default()),
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
        let tats = scope_state(&mut scopes, scope);
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
        tats.reserved = tats.reserved.saturating_add(tokens);
        // One that starts now is counted among the real starts here, under the same lock.
        let mark = if wait.is_zero() {
            tats.record_start(specs, tokens, now)
        } else {
            0
        };
        Reservation::Granted { wait, mark }
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

    /// A request of `tokens` that slept for its slot starts now: count it among the real
    /// starts; its mark.
    pub(crate) fn record_start(&self, scope: &str, specs: &[Spec], tokens: u64) -> u64 {
        let now = self.now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        scopes
            .get_mut(scope)
            .map_or(0, |tats| tats.record_start(specs, tokens, now))
    }

    /// The server says `remaining` tokens were left once it had taken the attempt whose start,
    /// `since` ago, returned `mark`. It had not yet seen what this scope reserved beyond that
    /// (`later`: started after it, or just before it, or still asleep), and it has refilled
    /// since (up to the most it was seen to hold), so what it would have left now with all of
    /// it taken is `remaining + refill − later`. (Its moment is taken as the attempt's start:
    /// a little early by the trip there, which the requests started just before it, counted
    /// as unseen, make up for at the limit.)
    ///
    /// Below the local view, that tightens the budget. Above it — an upstream that gave unused
    /// tokens back, or counted the prompts for less — it eases it, but never below the debt of
    /// `later` itself, and never to more than a full burst. Easing is credit for requests
    /// asleep for their slots when no other token budget holds them. True when eased.
    pub(crate) fn correct(
        &self,
        scope: &str,
        specs: &[Spec],
        remaining: u64,
        mark: u64,
        since: Duration,
    ) -> bool {
        let Some(spec) = specs.iter().find(|s| s.name == "tpm") else {
            return false;
        };
        let now = self.now();
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let tats = scope_state(&mut scopes, scope);
        let later = tats.reserved.saturating_sub(mark) as f64;
        let tat = tats.by_spec.get(spec.name).copied().unwrap_or(0.0);
        tats.most_left = tats.most_left.max(remaining);
        // Refill past the most it was ever seen to hold is not counted: it may be all it holds.
        let left_now =
            (remaining as f64 + since.as_secs_f64() * spec.rate).min(tats.most_left as f64);
        let server = gcra::tat_with(spec, left_now - later, now);
        if server > tat {
            tats.raise_to(spec, server);
            return false;
        }
        let eased = server.max(now).max(now + later / spec.rate);
        // Less than a token's worth is noise (the server reports whole tokens).
        if eased + 1.0 / spec.rate >= tat {
            return false;
        }
        // Another token budget (a daily one) spent past its burst is what sleepers wait for.
        let held_elsewhere = specs.iter().any(|s| {
            s.unit == gcra::Unit::Tokens
                && s.name != spec.name
                && tats.by_spec.get(s.name).is_some_and(|t| *t - s.tau > now)
        });
        tats.by_spec.insert(spec.name, eased);
        if !held_elsewhere {
            tats.credit += tat - eased;
        }
        true
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
        scope_state(&mut scopes, scope).raise_to(spec, now + ahead);
    }
}

impl RateState for LocalState {
    fn reserve<'a>(
        &'a self,
        scope: &'a str,
        specs: &'a [Spec],
        tokens: u64,
        max_wait: Duration,
    ) -> StateFuture<'a, Result<Reservation, Error>> {
        at_once(Ok(LocalState::reserve(
            self, scope, specs, tokens, max_wait,
        )))
    }

    fn adjust(&self, scope: &str, specs: &[Spec], token_delta: i64, how: Settled) {
        LocalState::adjust(self, scope, specs, token_delta, how);
    }

    fn raise<'a>(&'a self, scope: &'a str, spec: &'a Spec, ahead: f64) -> StateFuture<'a, ()> {
        LocalState::raise(self, scope, spec, ahead);
        at_once(())
    }

    fn credit(&self, scope: &str) -> f64 {
        LocalState::credit(self, scope)
    }

    fn request_wait(&self, scope: &str, specs: &[Spec]) -> f64 {
        LocalState::request_wait(self, scope, specs)
    }

    fn record_start(&self, scope: &str, specs: &[Spec], tokens: u64) -> u64 {
        LocalState::record_start(self, scope, specs, tokens)
    }

    fn correct<'a>(
        &'a self,
        scope: &'a str,
        specs: &'a [Spec],
        remaining: u64,
        mark: u64,
        since: Duration,
    ) -> StateFuture<'a, bool> {
        at_once(LocalState::correct(
            self, scope, specs, remaining, mark, since,
        ))
    }

    fn gives_credit(&self) -> bool {
        true
    }
}
