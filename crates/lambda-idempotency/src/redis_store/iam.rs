//! ElastiCache IAM authentication: the password is a SigV4-presigned
//! `connect` request, signed with the function's own role credentials, so
//! no secret is stored anywhere.
//!
//! A token is valid for 15 minutes and ElastiCache drops an IAM connection
//! after 12 hours unless it authenticates again, so the token is not a
//! fixed password: [`credentials`] is a stream (the redis crate's
//! `StreamingCredentialsProvider`) that yields a fresh token at once and
//! then every [`REFRESH`]. Every new connection (a reconnect after an outage
//! included) takes the latest one, and a live connection re-sends `AUTH`
//! with each new one.
//!
//! The token (AWS's "Authenticating with IAM" guide): `GET
//! http://<cache name>/?Action=connect&User=<user>[&ResourceType=
//! ServerlessCache]`, presigned in the query for service `elasticache`,
//! `X-Amz-Expires=900`, signed header `host`, empty payload; the token is
//! that URL without its scheme. HMAC-SHA-256 is written out here over
//! `sha2` rather than adding a crate for twenty lines.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::Stream;
use redis::auth::{BasicAuth, StreamingCredentialsProvider};
use redis::{RedisError, RedisResult};
use sha2::{Digest, Sha256};

use crate::fingerprint::hex;

/// How often a new token is made: well inside its 15-minute validity.
pub(crate) const REFRESH: Duration = Duration::from_secs(10 * 60);

/// IAM authentication to an ElastiCache cache ([`super::RedisOptions::iam`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamAuth {
    /// The ElastiCache user id (for IAM users it equals the user name).
    pub user: String,
    /// The cache's name (serverless cache name or replication group id).
    pub cache_name: String,
    /// Whether the cache is an ElastiCache Serverless cache.
    pub serverless: bool,
    /// The AWS region of the cache (`AWS_REGION` on Lambda).
    pub region: String,
}

/// AWS credentials, as Lambda puts them in the environment.
pub(crate) struct AwsCredentials {
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) session_token: Option<String>,
}

impl AwsCredentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key), Some(secret_key)) => Ok(Self {
                access_key,
                secret_key,
                session_token: var("AWS_SESSION_TOKEN"),
            }),
            _ => Err("IAM authentication needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into()),
        }
    }
}

/// The token for `auth` signed with `credentials` at `at`.
pub(crate) fn token(auth: &IamAuth, credentials: &AwsCredentials, at: SystemTime) -> String {
    let (date, stamp) = amz_dates(at);
    let scope = format!("{date}/{}/elasticache/aws4_request", auth.region);
    let host = auth.cache_name.to_ascii_lowercase();
    let mut params: Vec<(&str, String)> = vec![
        ("Action", "connect".into()),
        ("User", auth.user.to_ascii_lowercase()),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".into()),
        (
            "X-Amz-Credential",
            format!("{}/{scope}", credentials.access_key),
        ),
        ("X-Amz-Date", stamp.clone()),
        ("X-Amz-Expires", "900".into()),
        ("X-Amz-SignedHeaders", "host".into()),
    ];
    if auth.serverless {
        params.push(("ResourceType", "ServerlessCache".into()));
    }
    if let Some(session) = &credentials.session_token {
        params.push(("X-Amz-Security-Token", session.clone()));
    }
    params.sort();
    let query = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let empty_payload = hex(&Sha256::digest(b""));
    let canonical = format!("GET\n/\n{query}\nhost:{host}\n\nhost\n{empty_payload}");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", credentials.secret_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [auth.region.as_str(), "elasticache", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    format!("{host}/?{query}&X-Amz-Signature={signature}")
}

/// HMAC-SHA-256 (RFC 2104).
pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// SigV4 URI encoding: everything but `A-Z a-z 0-9 - _ . ~`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `(YYYYMMDD, YYYYMMDDTHHMMSSZ)` in UTC.
fn amz_dates(at: SystemTime) -> (String, String) {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (mut days, rest) = (secs / 86_400, secs % 86_400);
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let mut year = 1970;
    while days >= 365 + u64::from(leap(year)) {
        days -= 365 + u64::from(leap(year));
        year += 1;
    }
    let mut month = 1;
    for length in [
        31,
        28 + u64::from(leap(year)),
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ] {
        if days < length {
            break;
        }
        days -= length;
        month += 1;
    }
    let date = format!("{year:04}{month:02}{:02}", days + 1);
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    (date, stamp)
}

/// Where the passwords of a credentials stream come from.
pub(crate) type PasswordSource = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// A credentials provider: `user` with a password from `source`, made at
/// once on subscribe and again every `every`.
#[derive(Clone)]
pub(crate) struct Rotating {
    user: String,
    source: PasswordSource,
    every: Duration,
}

impl Rotating {
    pub(crate) fn new(user: String, source: PasswordSource, every: Duration) -> Self {
        Self {
            user,
            source,
            every,
        }
    }
}

/// The provider for `auth`: tokens signed with the environment's credentials.
pub(crate) fn credentials(auth: &IamAuth) -> Rotating {
    let signing = auth.clone();
    let source: PasswordSource = Arc::new(move || {
        let credentials = AwsCredentials::from_env()?;
        Ok(token(&signing, &credentials, SystemTime::now()))
    });
    Rotating::new(auth.user.to_ascii_lowercase(), source, REFRESH)
}

impl StreamingCredentialsProvider for Rotating {
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
        let this = self.clone();
        Box::pin(futures_util::stream::unfold(true, move |first| {
            let this = this.clone();
            async move {
                if !first {
                    tokio::time::sleep(this.every).await;
                }
                let auth = (this.source)()
                    .map(|password| BasicAuth::new(this.user.clone(), password))
                    .map_err(|reason| {
                        RedisError::from((
                            redis::ErrorKind::AuthenticationFailed,
                            "IAM token",
                            reason,
                        ))
                    });
                Some((auth, false))
            }
        }))
    }
}

#[cfg(test)]
mod tests;
