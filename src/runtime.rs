//! The Lambda runtime as this function runs it: the request id kept for
//! the invocation's log lines ([`crate::logging`], instead of
//! `lambda_runtime`'s per-invocation span), and around it two layers that
//! do per invocation what the handler alone cannot:
//!
//! - **[`ParseOnce`] parses the event once.** The handler must answer
//!   events that `lambda_http` cannot deserialise with a `400` ([`entry`]),
//!   so it cannot take `lambda_http`'s request type as its payload (a failed
//!   payload parse is reported to Lambda as a function error, a `502` for
//!   the client). Taking the event as raw JSON instead meant scanning and
//!   copying it into a raw value and then parsing it again. `ParseOnce`
//!   sees the event's bytes before the runtime parses them: it parses them
//!   into the request, hands the request to the handler, and gives the
//!   runtime a `null` payload to parse. An event that does not parse goes
//!   through untouched, and the handler gets it raw. A 2.0 event is parsed
//!   as one directly rather than through `LambdaRequest`'s deserialiser,
//!   which would first read all of it as a REST API event (`parse` below).
//! - **The per-request log-and-metric lines are written once the response
//!   is out**, by the outermost layer. The service inside it posts the
//!   response to the Runtime API, so its future ends only after Lambda has
//!   the response: neither formatting the line nor its `write` delays the
//!   client.
//!   Lambda freezes an execution environment only when the runtime
//!   asks for the next event, which happens after the flush, so no line is
//!   lost to a freeze.
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
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::lambda_runtime::{LambdaEvent, LambdaInvocation, Runtime};
use lambda_http::request::LambdaRequest;
use lambda_http::tower::util::MapResultLayer;
use lambda_http::tower::{Layer, Service};
use lambda_http::{service_fn, Error};
use lambda_idempotency::DeferredLines;
use serde_json::value::RawValue;

use crate::logging::RequestIdLayer;
use crate::{entry, App};

/// An event parsed by [`ParseOnce`], and its bytes. Boxed: the request is
/// large, and it moves twice before it reaches the handler.
struct Parsed {
    request: Box<LambdaRequest>,
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
        // Boxed: `lambda_runtime`'s layers (and ours) each move the
        // invocation's future into their own; a pointer is cheaper to move
        // than the handler's future (callgrind: 3,900 fewer instructions
        // per replay, 6,200 with logs off).
        Box::pin(async move {
            let (payload, context) = event.into_parts();
            match (parsed, payload) {
                (Some(Parsed { request, raw }), _) => {
                    entry::handle_request(&app, *request, &raw, context).await
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
        })
    });
    // Outermost: the flush runs when the response has been posted.
    let flush = MapResultLayer::new(move |posted: Result<(), Error>| {
        lines.flush();
        posted
    });
    Runtime::new(handler)
        .layer(RequestIdLayer)
        .layer(ParseOnceLayer)
        .layer(flush)
        .run_concurrent()
        .await
}

/// The event as `lambda_http`'s request, if it is one.
///
/// `LambdaRequest`'s own deserialiser copies the event into a raw value and
/// then tries the REST API (1.0) shape first, which reads the whole of a
/// 2.0 event (HTTP APIs, function URLs: what this function is deployed
/// behind) before it fails on the missing `httpMethod`; only then does it
/// parse the 2.0 shape. An event that says `"version":"2.0"` is parsed as
/// 2.0 at once here: half the instructions of the whole parse. Every other
/// event, and a 2.0 event that does not parse so, goes through
/// `LambdaRequest` as before. The 2.0 events API Gateway and function URLs
/// send have no top-level `httpMethod` (clients cannot add one), so they
/// never parse as 1.0: the result is the same either way.
fn parse(event: &[u8]) -> Option<LambdaRequest> {
    if says_version_2(event) {
        // Checked as UTF-8 once, in one pass, rather than string by string.
        let text = std::str::from_utf8(event).unwrap_or_default();
        if let Ok(request) = serde_json::from_str::<ApiGatewayV2httpRequest>(text) {
            if request.version.as_deref() == Some("2.0") {
                return Some(LambdaRequest::ApiGatewayV2(request));
            }
        }
    }
    serde_json::from_slice::<LambdaRequest>(event).ok()
}

/// Whether some `"version"` key of the JSON in `event` has the value
/// `"2.0"` (a quick look, not a parse: [`parse`] checks the parsed field).
fn says_version_2(event: &[u8]) -> bool {
    const KEY: &[u8] = br#""version""#;
    memchr::memmem::find_iter(event, KEY).any(|at| {
        let after_key = event[at + KEY.len()..].trim_ascii_start();
        after_key
            .strip_prefix(b":")
            .is_some_and(|value| value.trim_ascii_start().starts_with(br#""2.0""#))
    })
}

/// Wraps the runtime's service in [`ParseOnce`].
struct ParseOnceLayer;

impl<S> Layer<S> for ParseOnceLayer {
    type Service = ParseOnce<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ParseOnce(inner)
    }
}

/// Parses the event once and hands it to the handler (module docs).
#[derive(Clone)]
pub struct ParseOnce<S>(S);

impl<S> Service<LambdaInvocation> for ParseOnce<S>
where
    S: Service<LambdaInvocation, Response = (), Error = Error>,
{
    type Response = ();
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: LambdaInvocation) -> Self::Future {
        if let Some(request) = parse(&invocation.body) {
            let raw = std::mem::replace(&mut invocation.body, Bytes::from_static(b"null"));
            let request = Box::new(request);
            PARSED.with(|slot| *slot.borrow_mut() = Some(Parsed { request, raw }));
        }
        let future = self.0.call(invocation);
        // Never left for the next invocation on this thread.
        PARSED.with(|slot| slot.borrow_mut().take());
        future
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fixture event, as stored (pretty) and compact.
    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/events");
        let mut events = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let pretty = std::fs::read(&path).unwrap();
                let value: serde_json::Value = serde_json::from_slice(&pretty).unwrap();
                let name = path.display().to_string();
                events.push((
                    format!("{name} (compact)"),
                    serde_json::to_vec(&value).unwrap(),
                ));
                events.push((name, pretty));
            }
        }
        assert!(events.len() >= 30, "{}", events.len());
        events
    }

    /// A parse result as text that does not depend on hash-map order:
    /// the variant, and the event it holds as JSON (sorted members).
    fn shape(request: Option<LambdaRequest>) -> String {
        match request {
            Some(LambdaRequest::ApiGatewayV1(r)) => {
                format!("1.0 {}", serde_json::to_value(r).unwrap())
            }
            Some(LambdaRequest::ApiGatewayV2(r)) => {
                format!("2.0 {}", serde_json::to_value(r).unwrap())
            }
            Some(other) => format!("other {other:?}"),
            None => "none".to_owned(),
        }
    }

    fn lambda_http(event: &[u8]) -> String {
        shape(serde_json::from_slice::<LambdaRequest>(event).ok())
    }

    #[test]
    fn every_fixture_event_parses_exactly_as_lambda_http_parses_it() {
        for (name, event) in fixtures() {
            let ours = shape(parse(&event));
            assert!(!ours.starts_with("none"), "{name}");
            assert_eq!(ours, lambda_http(&event), "{name}");
        }
    }

    #[test]
    fn version_2_events_are_recognised_and_others_are_not() {
        for (name, event) in fixtures() {
            let value: serde_json::Value = serde_json::from_slice(&event).unwrap();
            assert_eq!(says_version_2(&event), value["version"] == "2.0", "{name}");
        }
        assert!(says_version_2(br#"{"version" :  "2.0"}"#));
        assert!(!says_version_2(br#"{"version":"1.0","body":"version"}"#));
        assert!(!says_version_2(br#"{"version""#));
    }

    #[test]
    fn a_version_2_event_that_is_not_an_http_api_event_still_goes_through_lambda_http() {
        // Claims 2.0 but lacks requestContext: neither shape parses it.
        assert!(parse(br#"{"version":"2.0"}"#).is_none());
        // A 2.0 event that is not UTF-8 parses no better than in lambda_http.
        let pretty = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/events/post_order.json"
        ));
        let mut broken = pretty.unwrap();
        let at = broken.windows(8).position(|w| w == b"Espresso").unwrap();
        broken[at] = 0xff;
        assert!(says_version_2(&broken));
        assert!(serde_json::from_slice::<LambdaRequest>(&broken).is_err());
        assert!(parse(&broken).is_none());
    }

    #[test]
    fn a_rest_event_that_also_parses_as_2_0_stays_rest() {
        // A REST API event with a header named `version` valued `2.0`, and
        // a request context that the 2.0 shape accepts too: only the
        // parsed version keeps it a REST event, as lambda_http reads it.
        let v1 = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/events/rest_v1_post_order_prod_stage.json"
        ))
        .unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&v1).unwrap();
        value["headers"]["version"] = "2.0".into();
        value["requestContext"]["http"] = serde_json::json!({
            "method": "POST", "path": "/orders", "protocol": "HTTP/1.1",
            "sourceIp": "1.2.3.4", "userAgent": "t"
        });
        let event = serde_json::to_vec(&value).unwrap();
        assert!(says_version_2(&event));
        assert!(serde_json::from_slice::<ApiGatewayV2httpRequest>(&event).is_ok());
        assert!(lambda_http(&event).starts_with("1.0 "));
        assert_eq!(shape(parse(&event)), lambda_http(&event));
    }
}
