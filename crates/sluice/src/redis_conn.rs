//! One way to open the Redis connection that shared state uses (admission, budgets, ledger):
//! short connect and response timeouts and one reconnect attempt, so a Redis outage shows up
//! as a quick, classified error instead of a hang.

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::error::{Error, ErrorKind};

/// Connect to `url` (`redis://host:port/db`); `unavailable` classifies a failure to reach it
/// (each user decides whether that fails open or closed).
pub(crate) async fn connect(
    url: &str,
    unavailable: fn(redis::RedisError) -> Error,
) -> Result<ConnectionManager, Error> {
    let client = redis::Client::open(url)
        .map_err(|e| Error::new(ErrorKind::Config, format!("invalid Redis URL: {e}")))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(unavailable)
}
