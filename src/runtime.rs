//! The Lambda runtime as this function runs it: `lambda_runtime`'s own
//! tracing layer (the per-invocation span with the request id), and around
//! it [`InvocationService`], which does two things per invocation that the
//! handler alone cannot:
//!
//! - **It parses the event once.** The handler must answer events that
//!   `lambda_http` cannot deserialise with a `400` ([`entry`]), so it cannot
//!   take `lambda_http`'s request type as its payload (a failed payload
//!   parse is reported to Lambda as a function error, a `502` for the
//!   client). Taking the event as raw JSON instead meant scanning and
//!   copying it once for the raw value and parsing it again: about 14,000
//!   instructions per invocation. This service sees the event's bytes
//!   before the runtime parses them: it parses them into the request, hands
//!   the request to the handler, and gives the runtime a `null` payload to
//!   parse. An event that does not parse goes through untouched, and the
//!   handler gets it raw.
//! - **It writes the per-request log-and-metric lines once the response is
//!   out.** Its inner service posts the response to the Runtime API, so its
//!   future ends only after Lambda has the response: the line's formatting
//!   and its `write` no longer delay the client. Lambda freezes an
//!   execution environment only when the runtime asks for the next event,
//!   which happens after the flush, so no line is lost to a freeze.
//!
//! The hand-over uses a thread-local slot that lives only for the
//! synchronous `call` chain: `lambda_runtime` deserialises the payload and
//! calls the handler (which takes the request out of the slot before its
//! future starts) inside `call`, on the same thread. The slot is emptied
//! again when `call` returns, whatever happened. Were a future
//! `lambda_runtime` to call the handler later, the handler would find the
//! slot empty and a `null` payload, and every request would get a `400`:
//! every integration test would fail at once.

use std::cell::RefCell;
use std::task::{Context, Poll};

use bytes::Bytes;
use lambda_http::lambda_runtime::layers::TracingLayer;
use lambda_http::lambda_runtime::{LambdaEvent, LambdaInvocation, Runtime};
use lambda_http::request::LambdaRequest;
use lambda_http::tower::{Layer, Service};
use lambda_http::{service_fn, BoxFuture, Error};
use lambda_idempotency::DeferredLines;
use serde_json::value::RawValue;

use crate::{entry, App};

/// An event parsed by [`InvocationService`], and its bytes.
struct Parsed {
    request: LambdaRequest,
    raw: Bytes,
}

thread_local! {
    /// The event being handed to the handler, during `call` only.
    static PARSED: RefCell<Option<Parsed>> = const { RefCell::new(None) };
}

/// Serves `app` (sequentially, or `AWS_LAMBDA_MAX_CONCURRENCY`
/// invocations at once), flushing `lines` after each response.
pub async fn run(app: App, lines: DeferredLines) -> Result<(), Error> {
    let handler = service_fn(move |event: LambdaEvent<Option<Box<RawValue>>>| {
        let app = app.clone();
        // Taken now, inside the runtime's `call`: see the module docs.
        let parsed = PARSED.with(|slot| slot.borrow_mut().take());
        async move {
            let (payload, context) = event.into_parts();
            match (parsed, payload) {
                (Some(Parsed { request, raw }), _) => {
                    entry::handle_request(&app, request, &raw, context).await
                }
                (None, Some(raw)) => {
                    entry::handle_event(&app, LambdaEvent::new(raw, context)).await
                }
                // The event was JSON `null`.
                (None, None) => {
                    let raw = RawValue::from_string("null".to_owned())?;
                    entry::handle_event(&app, LambdaEvent::new(raw, context)).await
                }
            }
        }
    });
    Runtime::new(handler)
        .layer(TracingLayer::new())
        .layer(InvocationLayer(lines))
        .run_concurrent()
        .await
}

/// Wraps the runtime's service in [`InvocationService`].
struct InvocationLayer(DeferredLines);

impl<S> Layer<S> for InvocationLayer {
    type Service = InvocationService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InvocationService {
            inner,
            lines: self.0.clone(),
        }
    }
}

/// Parses the event once for the handler, and flushes the deferred lines
/// once the inner service (which posts the response) is done, whether it
/// succeeded or not.
#[derive(Clone)]
pub struct InvocationService<S> {
    inner: S,
    lines: DeferredLines,
}

impl<S> Service<LambdaInvocation> for InvocationService<S>
where
    S: Service<LambdaInvocation, Response = (), Error = Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<(), Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: LambdaInvocation) -> Self::Future {
        if let Ok(request) = serde_json::from_slice::<LambdaRequest>(&invocation.body) {
            let raw = std::mem::replace(&mut invocation.body, Bytes::from_static(b"null"));
            PARSED.with(|slot| *slot.borrow_mut() = Some(Parsed { request, raw }));
        }
        let posted = self.inner.call(invocation);
        // Never left for the next invocation on this thread.
        PARSED.with(|slot| slot.borrow_mut().take());
        let lines = self.lines.clone();
        Box::pin(async move {
            let result = posted.await;
            lines.flush();
            result
        })
    }
}
