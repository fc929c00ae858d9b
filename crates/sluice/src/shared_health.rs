//! Upstream health shared by every process that shares admission state in Redis: a breaker
//! that one replica opened is open on all of them within a moment, and a key that one replica
//! saw cool down after a 429 or quarantined after a 401/403 is not tried by the others either.
//! Without this, each replica finds a dead upstream or a revoked key out for itself — every
//! replica's first requests fail the same way, and the real cooldown is divided by the number
//! of replicas.
//!
//! What is shared is the *result* (open until, cooling until, quarantined), not the counting:
//! each replica still decides from its own attempts when to open. One Redis hash per prefix
//! holds a field per fact (`b:{upstream}`, `c:{key id}`, `q:{key id}`) whose value is when it
//! ends, on Redis's clock (`TIME`), so replicas need no clock agreement. Writes go through a
//! small queue to one task, so a breaker or a key pool never waits for Redis; the same task
//! reads the hash every [`SYNC_EVERY`] and applies what other replicas found.
//!
//! Sharing health is a help, not a guarantee: while Redis is unreachable each replica keeps
//! its own view (logged once per outage, counted in `sluice_shared_health_errors_total`), and
//! nothing is refused for it — unlike the quota, which fails closed by default.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::mpsc;

use crate::breaker::Breaker;
use crate::keypool::KeyPool;

/// How often the shared facts are read.
pub(crate) const SYNC_EVERY: Duration = Duration::from_millis(250);

/// How long a shared quarantine lasts (a rotated key has another id, so it is never hit).
const QUARANTINE: Duration = Duration::from_secs(86_400);

/// Facts waiting to be written; more than this while Redis is slow are dropped (each replica
/// still acts on its own view).
const QUEUE: usize = 1024;

const WRITE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[2])
if ms <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
local ends = now + ms
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') or 0
if cur > ends then ends = cur end
redis.call('HSET', KEYS[1], ARGV[1], ends)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return ends - now
";

const READ: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local ends = tonumber(all[i + 1]) or 0
  if ends <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = ends - now
  end
end
return out
";

/// One fact about an upstream's health that the other replicas should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fact {
    /// The upstream's breaker opened for this long.
    BreakerOpen { upstream: String, for_: Duration },
    /// Its probe was answered: the breaker closed.
    BreakerClosed { upstream: String },
    /// A key cools down after a 429 for this long.
    KeyCooling { key: u64, for_: Duration },
    /// A key was rejected (401, 403, insufficient quota).
    KeyQuarantined { key: u64 },
}

impl Fact {
    /// The hash field and how long the fact holds (zero: remove it).
    fn field(&self) -> (String, Duration) {
        match self {
            Fact::BreakerOpen { upstream, for_ } => (format!("b:{upstream}"), *for_),
            Fact::BreakerClosed { upstream } => (format!("b:{upstream}"), Duration::ZERO),
            Fact::KeyCooling { key, for_ } => (format!("c:{key:016x}"), *for_),
            Fact::KeyQuarantined { key } => (format!("q:{key:016x}"), QUARANTINE),
        }
    }
}

/// Where a breaker or a key pool sends what it learned. Never blocks.
#[derive(Debug, Clone)]
pub(crate) struct Publisher(mpsc::Sender<Fact>);

impl Publisher {
    pub(crate) fn tell(&self, fact: Fact) {
        if self.0.try_send(fact).is_err() {
            metrics::counter!("sluice_shared_health_errors_total", "what" => "queue_full")
                .increment(1);
        }
    }
}

/// A breaker's or key pool's place to tell what it learned: empty until an engine that shares
/// health sets it (and replaced by the next engine that carries the breaker over a reload).
#[derive(Debug, Default)]
pub(crate) struct Share(std::sync::Mutex<Option<Publisher>>);

impl Share {
    pub(crate) fn set(&self, publisher: Publisher) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(publisher);
    }

    pub(crate) fn tell(&self, fact: Fact) {
        if let Some(p) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            p.tell(fact);
        }
    }
}

/// What the sync task applies the shared facts to: each upstream's name, breaker and key pool.
pub(crate) type Targets = Vec<(String, Arc<Breaker>, Arc<KeyPool>)>;

/// Start sharing: the breakers and key pools of `targets` publish to Redis at `url` under
/// `prefix`, and a task applies the other replicas' facts to them until `alive` is gone (the
/// engine was dropped). Needs a Tokio runtime; without one, health stays per process.
pub(crate) fn start<T: Send + Sync + 'static>(
    url: &str,
    prefix: &str,
    targets: Targets,
    alive: Weak<T>,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            "no async runtime while the engine was built: upstream health is not shared"
        );
        return;
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let publisher = Publisher(tx);
    for (_, breaker, keys) in &targets {
        breaker.share.set(publisher.clone());
        keys.share.set(publisher.clone());
    }
    let sync = Syncer {
        url: url.to_string(),
        hash: format!("{prefix}:health"),
        targets,
        conn: None,
        failing: false,
        write: Script::new(WRITE),
        read: Script::new(READ),
    };
    rt.spawn(sync.run(rx, alive));
}

struct Syncer {
    url: String,
    hash: String,
    targets: Targets,
    conn: Option<ConnectionManager>,
    /// In an outage (logged once).
    failing: bool,
    write: Script,
    read: Script,
}

impl Syncer {
    async fn run<T>(mut self, mut rx: mpsc::Receiver<Fact>, alive: Weak<T>) {
        let mut tick = tokio::time::interval(SYNC_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                fact = rx.recv() => {
                    let Some(fact) = fact else { return };
                    let mut facts = vec![fact];
                    while let Ok(f) = rx.try_recv() {
                        facts.push(f);
                    }
                    let result = self.write(&facts).await;
                    self.outcome(result);
                }
                _ = tick.tick() => {
                    if alive.strong_count() == 0 {
                        return;
                    }
                    // What this process learned goes first: a read must not bring back a
                    // breaker this process has just closed.
                    let mut facts = Vec::new();
                    while let Ok(f) = rx.try_recv() {
                        facts.push(f);
                    }
                    let mut result = self.write(&facts).await;
                    if result.is_ok() {
                        result = self.read().await;
                    }
                    self.outcome(result);
                }
            }
        }
    }

    fn outcome(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if self.failing {
                    self.failing = false;
                    tracing::info!("shared upstream health (Redis) reachable again");
                }
            }
            Err(e) => {
                metrics::counter!("sluice_shared_health_errors_total", "what" => "redis")
                    .increment(1);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(error = %e, "shared upstream health (Redis) unreachable: each process keeps its own view until it is back");
                }
                self.conn = None;
            }
        }
    }

    async fn conn(&mut self) -> Result<ConnectionManager, String> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let c = crate::redis_conn::connect(&self.url, |e| {
            crate::Error::new(crate::ErrorKind::Connection, e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    async fn write(&mut self, facts: &[Fact]) -> Result<(), String> {
        let mut conn = self.conn().await?;
        for f in facts {
            let (field, for_) = f.field();
            let ms = u64::try_from(for_.as_millis()).unwrap_or(u64::MAX);
            let _: i64 = self
                .write
                .key(&self.hash)
                .arg(field)
                .arg(ms)
                .arg(QUARANTINE.as_millis() as u64)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn read(&mut self) -> Result<(), String> {
        let mut conn = self.conn().await?;
        let flat: Vec<redis::Value> = self
            .read
            .key(&self.hash)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let facts = parse(&flat);
        apply(&self.targets, &facts);
        Ok(())
    }
}

/// The hash's live fields and the time each has left.
fn parse(flat: &[redis::Value]) -> Vec<(String, Duration)> {
    flat.chunks_exact(2)
        .filter_map(|pair| {
            let field: String = redis::from_redis_value(pair[0].clone()).ok()?;
            let ms: i64 = redis::from_redis_value(pair[1].clone()).ok()?;
            Some((field, Duration::from_millis(u64::try_from(ms).ok()?)))
        })
        .collect()
}

/// Apply the shared facts: open breakers the others opened, half-open those opened from a
/// shared fact that is gone (its probe was answered elsewhere, or it ran out), and mark keys.
fn apply(targets: &Targets, facts: &[(String, Duration)]) {
    let mut cooling = Vec::new();
    let mut quarantined = Vec::new();
    for (f, left) in facts {
        let (kind, id) = match f.split_once(':') {
            Some((k @ ("c" | "q"), id)) => (k, id),
            _ => continue,
        };
        let Ok(id) = u64::from_str_radix(id, 16) else {
            continue;
        };
        if kind == "c" {
            cooling.push((id, *left));
        } else {
            quarantined.push(id);
        }
    }
    for (name, breaker, keys) in targets {
        let field = format!("b:{name}");
        match facts.iter().find(|(f, _)| *f == field) {
            Some((_, left)) => breaker.adopt_open(*left),
            None => breaker.adopt_gone(),
        }
        keys.adopt(&cooling, &quarantined);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_name_their_fields_without_secrets() {
        let f = Fact::KeyCooling {
            key: 0xabc,
            for_: Duration::from_secs(2),
        };
        assert_eq!(
            f.field(),
            ("c:0000000000000abc".into(), Duration::from_secs(2))
        );
        let f = Fact::BreakerClosed {
            upstream: "azure-east".into(),
        };
        assert_eq!(f.field(), ("b:azure-east".into(), Duration::ZERO));
    }
}
