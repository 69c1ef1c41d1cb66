//! [`DynamoDbStore::from_env`]: the table and timeout from the
//! environment, and the SDK configured for a Lambda function: region and
//! credentials from the usual chain (`AWS_REGION`, the role's variables),
//! the endpoint from `AWS_ENDPOINT_URL_DYNAMODB` when set (an emulator),
//! short retries, every call bounded, and the HTTP client on rustls with
//! ring.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_sdk_dynamodb::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use super::DynamoDbStore;
use crate::settings::{ConfigError, Env};

/// The bound on each attempt when `DYNAMODB_TIMEOUT_MS` is unset.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// Attempts per call: a throttled or dropped request is tried again.
const ATTEMPTS: u32 = 3;

impl DynamoDbStore {
    /// A store for the table `IDEMPOTENCY_TABLE` (required), each attempt
    /// bounded by `DYNAMODB_TIMEOUT_MS` (default 500), each call (three
    /// attempts, 20 to 200 ms apart) by three times that. Region,
    /// credentials and endpoint come from the SDK's usual sources; the
    /// HTTP client is [`DynamoDbStore::http_client`].
    pub async fn from_env() -> Result<Self, ConfigError> {
        let (table, timeout) = settings(&|name| std::env::var(name).ok())?;
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(Self::http_client())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(20))
                    .with_max_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(timeout)
                    .operation_timeout(timeout * ATTEMPTS)
                    .build(),
            )
            .load()
            .await;
        if config.region().is_none() {
            return Err(ConfigError {
                var: "AWS_REGION",
                reason: "is required (Lambda sets it)".to_owned(),
            });
        }
        Ok(Self::new(Client::new(&config), table))
    }

    /// The SDK's hyper HTTP client on rustls with the ring provider (and
    /// the system's root certificates), for a configuration of your own:
    /// the SDK's default client would compile aws-lc-rs (cmake, and a
    /// second rustls provider beside the Redis store's ring).
    pub fn http_client() -> SharedHttpClient {
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https()
    }
}

/// The table and the per-attempt timeout, from `lookup`.
fn settings(lookup: &dyn Fn(&str) -> Option<String>) -> Result<(String, Duration), ConfigError> {
    let env = Env(lookup);
    let table = env.get("IDEMPOTENCY_TABLE").ok_or_else(|| {
        env.error(
            "IDEMPOTENCY_TABLE",
            "is required: the DynamoDB table of idempotency records",
        )
    })?;
    let timeout = env.millis("DYNAMODB_TIMEOUT_MS", DEFAULT_TIMEOUT)?;
    Ok((table.trim().to_owned(), timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<(String, Duration), ConfigError> {
        settings(&|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn the_table_is_required_and_named_in_the_error() {
        let error = from(&[]).unwrap_err();
        assert_eq!(error.var, "IDEMPOTENCY_TABLE");
        assert_eq!(
            from(&[("IDEMPOTENCY_TABLE", "  ")]).unwrap_err().var,
            "IDEMPOTENCY_TABLE"
        );
    }

    #[test]
    fn the_timeout_defaults_to_500_ms_and_must_be_positive() {
        let table = ("IDEMPOTENCY_TABLE", "idempotency");
        assert_eq!(
            from(&[table]).unwrap(),
            ("idempotency".to_owned(), DEFAULT_TIMEOUT)
        );
        let set = from(&[table, ("DYNAMODB_TIMEOUT_MS", "250")]).unwrap();
        assert_eq!(set.1, Duration::from_millis(250));
        for bad in ["0", "soon"] {
            let error = from(&[table, ("DYNAMODB_TIMEOUT_MS", bad)]).unwrap_err();
            assert_eq!(error.var, "DYNAMODB_TIMEOUT_MS");
        }
    }
}
