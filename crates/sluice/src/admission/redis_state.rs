//! Budget state in Redis, shared by every process that points at the same server: the GCRA
//! arithmetic of `gcra.rs` in Lua scripts that run atomically on the Redis server and read its
//! clock (`TIME`), so replicas on different machines need no clock agreement. One hash per scope
//! holds the `tat` of each budget; it expires once fully paid off.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use super::gcra::Spec;
use super::Reservation;
use crate::error::{Error, ErrorKind};

/// Seconds subtracted from Redis time to keep doubles precise to the microsecond.
const EPOCH: &str = "1700000000";

const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = (tonumber(t[1]) - tonumber(ARGV[1])) + tonumber(t[2]) / 1e6
local max_wait = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local at = now
local tats = {}
for i = 0, n - 1 do
  local name = ARGV[4 + i * 4]
  local rate = tonumber(ARGV[5 + i * 4])
  local tau = tonumber(ARGV[6 + i * 4])
  local cost = tonumber(ARGV[7 + i * 4])
  local tat = tonumber(redis.call('HGET', KEYS[1], name) or '0')
  tats[i] = tat
  local w = cost / rate
  local e
  if w > tau then e = math.max(tat, now) else e = math.max(tat + w - tau, now) end
  if e > at then at = e end
end
if at - now > max_wait then
  return {0, tostring(at - now)}
end
local ttl = 1
for i = 0, n - 1 do
  local name = ARGV[4 + i * 4]
  local rate = tonumber(ARGV[5 + i * 4])
  local cost = tonumber(ARGV[7 + i * 4])
  local tat = math.max(tats[i], at) + cost / rate
  redis.call('HSET', KEYS[1], name, tostring(tat))
  if tat - now > ttl then ttl = tat - now end
end
redis.call('PEXPIRE', KEYS[1], math.ceil((ttl + 60) * 1000))
return {1, tostring(at - now)}
"#;

const ADJUST: &str = r#"
local t = redis.call('TIME')
local now = (tonumber(t[1]) - tonumber(ARGV[1])) + tonumber(t[2]) / 1e6
local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
local delta = tonumber(ARGV[4]) / tonumber(ARGV[3])
local moved = tat + delta
if delta < 0 then moved = math.max(moved, math.min(tat, now)) end
redis.call('HSET', KEYS[1], ARGV[2], tostring(moved))
return 1
"#;

/// ARGV: epoch, name, value; sets tat = max(tat, now + value).
const RAISE: &str = r#"
local t = redis.call('TIME')
local now = (tonumber(t[1]) - tonumber(ARGV[1])) + tonumber(t[2]) / 1e6
local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
local target = now + tonumber(ARGV[3])
if target > tat then
  redis.call('HSET', KEYS[1], ARGV[2], tostring(target))
  redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[3]) + 120) * 1000))
end
return 1
"#;

/// A connection to the shared state.
#[derive(Clone)]
pub struct RedisState {
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
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
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

    pub async fn reserve(
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
            Reservation::Granted { wait }
        } else {
            Reservation::Refused { wait }
        })
    }

    pub async fn adjust(&self, scope: &str, specs: &[Spec], token_delta: i64) -> Result<(), Error> {
        for s in specs.iter().filter(|s| s.unit == super::gcra::Unit::Tokens) {
            let mut inv = self.adjust.key(self.key(scope));
            inv.arg(EPOCH).arg(s.name).arg(s.rate).arg(token_delta);
            let mut conn = self.conn.clone();
            let _: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        }
        Ok(())
    }

    /// `tighten` and `pause` are both "tat is at least now + x".
    pub async fn raise(&self, scope: &str, spec: &Spec, ahead: f64) -> Result<(), Error> {
        let mut inv = self.raise.key(self.key(scope));
        inv.arg(EPOCH).arg(spec.name).arg(ahead);
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        Ok(())
    }
}
