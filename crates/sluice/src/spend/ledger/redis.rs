//! The Redis ledger: one hash per day (`PREFIX:ledger:DAY`), fields `scope␟model␟counter`,
//! shared by every replica that points at the same server.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::aio::ConnectionManager;

use super::{Entry, Filter, LedgerStore, Row};
use crate::error::{Error, ErrorKind};
use crate::pricing::Nanos;

fn redis_err(e: redis::RedisError) -> Error {
    Error::new(
        ErrorKind::Overloaded,
        format!("ledger (Redis) unavailable: {e}"),
    )
    .with_retryable(true)
}

pub(super) struct RedisLedger {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisLedger {
    pub(super) async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        let conn = crate::redis_conn::connect(url, redis_err).await?;
        Ok(RedisLedger {
            conn,
            prefix: prefix.to_string(),
        })
    }

    async fn rows(&self, filter: Filter) -> Result<Vec<Row>, Error> {
        let mut conn = self.conn.clone();
        // SCAN, not KEYS: KEYS blocks a shared server for the whole keyspace walk.
        // SCAN may return a key twice, so the list is deduplicated before summing.
        let pattern = format!("{}:ledger:*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort_unstable();
        keys.dedup();
        let mut out: std::collections::BTreeMap<(String, String, String), Row> = Default::default();
        for key in keys {
            let day = key.rsplit(':').next().unwrap_or("").to_string();
            if let (Some(since), Some(d)) = (filter.since, crate::models::parse_date(&day)) {
                if d < since {
                    continue;
                }
            }
            let fields: Vec<(String, u64)> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            for (f, v) in fields {
                let mut parts = f.split('\u{1f}');
                let (Some(scope), Some(model), Some(name)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if filter.scope.as_deref().is_some_and(|s| s != scope) {
                    continue;
                }
                let r = out
                    .entry((day.clone(), scope.to_string(), model.to_string()))
                    .or_insert_with(|| Row {
                        day: day.clone(),
                        scope: scope.to_string(),
                        model: model.to_string(),
                        ..Row::default()
                    });
                match name {
                    "requests" => r.requests = v,
                    "prompt_tokens" => r.prompt_tokens = v,
                    "cached_tokens" => r.cached_tokens = v,
                    "completion_tokens" => r.completion_tokens = v,
                    "reasoning_tokens" => r.reasoning_tokens = v,
                    "cost_nanos" => r.cost_nanos = v,
                    _ => {}
                }
            }
        }
        Ok(out.into_values().collect())
    }
}

impl LedgerStore for RedisLedger {
    fn describe(&self) -> String {
        format!("redis {}", self.prefix)
    }

    fn record(&self, e: &Entry<'_>) {
        let row = e.to_row();
        let mut conn = self.conn.clone();
        let key = format!("{}:ledger:{}", self.prefix, row.day);
        tokio::spawn(async move {
            let f = |name: &str| format!("{}\u{1f}{}\u{1f}{name}", row.scope, row.model);
            let mut p = redis::pipe();
            p.atomic()
                .hincr(&key, f("requests"), row.requests)
                .hincr(&key, f("prompt_tokens"), row.prompt_tokens)
                .hincr(&key, f("cached_tokens"), row.cached_tokens)
                .hincr(&key, f("completion_tokens"), row.completion_tokens)
                .hincr(&key, f("reasoning_tokens"), row.reasoning_tokens)
                .hincr(&key, f("cost_nanos"), row.cost_nanos)
                .expire(&key, 400 * 86_400)
                .ignore();
            if let Err(e) = p.query_async::<()>(&mut conn).await {
                tracing::error!(error = %e, "ledger (Redis): a request's spend was not recorded");
            }
        });
    }

    fn rows(&self, filter: Filter) -> BoxFuture<'_, Result<Vec<Row>, Error>> {
        RedisLedger::rows(self, filter).boxed()
    }

    fn sum(&self, filter: Filter) -> BoxFuture<'_, Result<Nanos, Error>> {
        async move {
            let rows = RedisLedger::rows(self, filter).await?;
            Ok(rows
                .iter()
                .fold(0u64, |a, r| a.saturating_add(r.cost_nanos)))
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        // Rows are sent as they are recorded.
        async {}.boxed()
    }

    fn seeds_budgets(&self) -> bool {
        false
    }
}
