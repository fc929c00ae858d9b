//! Budget state in Redis, shared by every process that points at the same server: the GCRA
//! arithmetic of `gcra.rs` in Lua scripts that run atomically on the Redis server and read its
//! clock (`TIME`), so replicas on different machines need no clock agreement. One hash per scope
//! holds the `tat` of each budget; it expires once fully paid off.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use tokio::sync::OnceCell;

use super::gcra::Spec;
use super::local::LocalState;
use super::state::{later, RateState, StateFuture};
use super::{OnStateError, Reservation, Settled};
use crate::error::{Error, ErrorKind};

/// Seconds subtracted from Redis time to keep doubles precise to the microsecond.
const EPOCH: &str = "1700000000";

const RESERVE: &str = include_str!("reserve.lua");

const ADJUST: &str = include_str!("adjust.lua");

const RAISE: &str = include_str!("raise.lua");

/// A connection to the shared state.
#[derive(Clone)]
struct RedisState {
    conn: ConnectionManager,
    prefix: String,
    reserve: std::sync::Arc<Script>,
    adjust: std::sync::Arc<Script>,
    raise: std::sync::Arc<Script>,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn redis_err(e: redis::RedisError) -> Error {
    Error::new(
        ErrorKind::Overloaded,
        format!("shared rate-limit state (Redis) unavailable: {e}"),
    )
    .with_retryable(true)
}

impl RedisState {
    /// Connect to `url` (`redis://host:port/db`); keys are `PREFIX:scope`.
    async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        let conn = crate::redis_conn::connect(url, redis_err).await?;
        Ok(RedisState {
            conn,
            prefix: prefix.to_string(),
            reserve: std::sync::Arc::new(Script::new(RESERVE)),
            adjust: std::sync::Arc::new(Script::new(ADJUST)),
            raise: std::sync::Arc::new(Script::new(RAISE)),
        })
    }

    fn key(&self, scope: &str) -> String {
        format!("{}:{scope}", self.prefix)
    }

    async fn reserve(
        &self,
        scope: &str,
        specs: &[Spec],
        tokens: u64,
        max_wait: Duration,
    ) -> Result<Reservation, Error> {
        let mut inv = self.reserve.key(self.key(scope));
        inv.arg(EPOCH).arg(max_wait.as_secs_f64()).arg(specs.len());
        for s in specs {
            inv.arg(s.name).arg(s.rate).arg(s.tau).arg(s.cost(tokens));
        }
        let mut conn = self.conn.clone();
        let (ok, wait): (i64, String) = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        let wait = Duration::from_secs_f64(wait.parse::<f64>().unwrap_or(0.0).max(0.0));
        Ok(if ok == 1 {
            Reservation::Granted { wait, mark: 0 }
        } else {
            Reservation::Refused { wait }
        })
    }

    async fn adjust(&self, scope: &str, specs: &[Spec], token_delta: i64) -> Result<(), Error> {
        for s in specs.iter().filter(|s| s.unit == super::gcra::Unit::Tokens) {
            let mut inv = self.adjust.key(self.key(scope));
            inv.arg(EPOCH).arg(s.name).arg(s.rate).arg(token_delta);
            let mut conn = self.conn.clone();
            let _: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        }
        Ok(())
    }

    /// `tighten` and `pause` are both "tat is at least now + x".
    async fn raise(&self, scope: &str, spec: &Spec, ahead: f64) -> Result<(), Error> {
        let mut inv = self.raise.key(self.key(scope));
        inv.arg(EPOCH).arg(spec.name).arg(ahead);
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        Ok(())
    }
}

/// Rate state in Redis, connected on first use, with this process's own state beside it for
/// `on_error = "fallback_local"` (and kept in step with every settlement and correction).
#[derive(Debug, Clone)]
pub(crate) struct SharedRateState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    url: String,
    prefix: String,
    on_error: OnStateError,
    conn: OnceCell<RedisState>,
    local: LocalState,
}

impl SharedRateState {
    pub(crate) fn new(url: &str, prefix: &str, on_error: OnStateError) -> Self {
        SharedRateState(Arc::new(Shared {
            url: url.to_string(),
            prefix: prefix.to_string(),
            on_error,
            conn: OnceCell::new(),
            local: LocalState::default(),
        }))
    }

    async fn redis(&self) -> Result<&RedisState, Error> {
        let s = &self.0;
        s.conn
            .get_or_try_init(|| RedisState::connect(&s.url, &s.prefix))
            .await
    }

    fn on_state_error(&self, e: &Error) -> OnStateError {
        metrics::counter!("sluice_admission_state_errors_total").increment(1);
        tracing::warn!(error = %e, "admission: shared state unavailable");
        self.0.on_error
    }
}

impl RateState for SharedRateState {
    fn reserve<'a>(
        &'a self,
        scope: &'a str,
        specs: &'a [Spec],
        tokens: u64,
        max_wait: Duration,
    ) -> StateFuture<'a, Result<Reservation, Error>> {
        later(async move {
            let res = match self.redis().await {
                Ok(r) => r.reserve(scope, specs, tokens, max_wait).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(r) => Ok(r),
                Err(e) => match self.on_state_error(&e) {
                    OnStateError::FailClosed => Err(e),
                    OnStateError::FallbackLocal => {
                        Ok(self.0.local.reserve(scope, specs, tokens, max_wait))
                    }
                },
            }
        })
    }

    fn adjust(&self, scope: &str, specs: &[Spec], token_delta: i64, how: Settled) {
        // Settling happens where a body ends (possibly inside a poll): do it off-path.
        let this = self.clone();
        let scope = scope.to_string();
        let specs = specs.to_vec();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.0.local.adjust(&scope, &specs, token_delta, how);
            return;
        };
        rt.spawn(async move {
            if let Ok(r) = this.redis().await {
                if let Err(e) = r.adjust(&scope, &specs, token_delta).await {
                    this.on_state_error(&e);
                }
            }
            this.0.local.adjust(&scope, &specs, token_delta, how);
        });
    }

    fn raise<'a>(&'a self, scope: &'a str, spec: &'a Spec, ahead: f64) -> StateFuture<'a, ()> {
        later(async move {
            self.0.local.raise(scope, spec, ahead);
            if let Ok(r) = self.redis().await {
                if let Err(e) = r.raise(scope, spec, ahead).await {
                    self.on_state_error(&e);
                }
            }
        })
    }
}
