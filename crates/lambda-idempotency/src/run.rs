//! Running the wrapped handler: panics and errors become `Err` (so the key
//! is released at once), and a heartbeat renews the lease while a slow
//! handler runs, so a live handler never loses its claim.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use lambda_http::http;
use lambda_http::tower::Service;
use lambda_http::{Body, IntoResponse, Request, Response};

use crate::body::RequestBody;
use crate::fingerprint::Fingerprint;
use crate::record::in_progress_payload;
use crate::settings::Settings;
use crate::store::IdempotencyStore;
use crate::{OwnerToken, StoreKey};

/// Shortest pause between two renewals.
const MIN_HEARTBEAT: Duration = Duration::from_millis(20);

/// Runs the inner service, turning an error or a panic into `Err(message)`
/// (where panics unwind; under `panic = "abort"` the process dies and the
/// lease frees the key).
pub(crate) async fn run_handler<S, B>(mut inner: S, req: Request) -> Result<Response<Body>, String>
where
    B: RequestBody,
    S: Service<http::Request<B>> + Send,
    S::Future: Send,
    S::Response: IntoResponse,
    S::Error: Display,
{
    poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(|e| e.to_string())?;
    let req = req.map(B::from_read);
    let future =
        std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req))).map_err(panic_message)?;
    let response = AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(panic_message)?
        .map_err(|e| e.to_string())?;
    AssertUnwindSafe(response.into_response())
        .catch_unwind()
        .await
        .map_err(panic_message)
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    format!("handler panicked: {text}")
}

/// The epoch time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Time left until `deadline`; `None` when there is none or it has passed.
pub(crate) fn time_left(deadline: Option<SystemTime>) -> Option<Duration> {
    deadline?.duration_since(SystemTime::now()).ok()
}

/// One claim being held: what a renewal needs.
pub(crate) struct Lease<'a, St> {
    pub(crate) store: &'a St,
    pub(crate) settings: &'a Settings,
    pub(crate) key: &'a StoreKey,
    pub(crate) owner: &'a OwnerToken,
    pub(crate) fingerprint: &'a Fingerprint,
}

impl<St: IdempotencyStore> Lease<'_, St> {
    /// Runs `work` while renewing the lease, and returns its output.
    pub(crate) async fn hold<F: Future>(&self, work: F) -> F::Output {
        tokio::select! {
            biased;
            output = work => output,
            never = self.heartbeat() => match never {},
        }
    }

    /// Renews the lease every third of its length, fenced by the owner
    /// token, for as long as the handler runs: past the invocation's
    /// deadline too (Lambda Managed Instances do not stop an invocation
    /// there). A handler that finishes within a third of its lease (nearly
    /// all) never renews, so this costs no round trip.
    ///
    /// A failed renewal is retried at once (after [`MIN_HEARTBEAT`]), not a
    /// third of a lease later: it may have taken a whole `REDIS_TIMEOUT_MS`
    /// to fail.
    async fn heartbeat(&self) -> Infallible {
        let lease = self.settings.claim_lease();
        let mut failed = false;
        loop {
            let pause = if failed { MIN_HEARTBEAT } else { lease / 3 };
            tokio::time::sleep(pause.max(MIN_HEARTBEAT)).await;
            let payload = in_progress_payload(self.fingerprint, now_ms() + millis(lease));
            let renewed = self
                .store
                .renew(self.key, self.owner, &payload, lease)
                .await;
            failed = renewed.is_err();
            match renewed {
                Ok(true) => tracing::debug!(key_hash = self.key.hash(), "lease renewed"),
                Ok(false) => {
                    tracing::error!(
                        key_hash = self.key.hash(),
                        "the idempotency lease was lost while the handler was still running \
                         (the record expired or was taken over); another attempt may run"
                    );
                    return std::future::pending().await;
                }
                Err(e) => tracing::warn!(
                    key_hash = self.key.hash(),
                    error = %e,
                    "could not renew the idempotency lease; retrying at once"
                ),
            }
        }
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
