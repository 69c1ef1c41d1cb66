//! The Lambda runtime loop: events from the Runtime API, answers back.
//!
//! `lambda_runtime` is used for its types (the invocation's [`Context`],
//! the function's [`Config`], the error [`Diagnostic`]) and its Runtime API
//! client, but not for its loop, for three reasons:
//!
//! - **Its sequential loop grows the process without bound.** Before each
//!   invocation it sets `_X_AMZN_TRACE_ID` to the invocation's trace id
//!   (`std::env::set_var`), and glibc's `setenv` keeps every value it
//!   replaces, since a `getenv` pointer to it may still be alive: about
//!   110 bytes per invocation, for ever (an instance reaches 256 MB after
//!   about two million). Nothing in this function reads the variable; its
//!   log lines carry the trace id from the invocation's context, as they
//!   must in Managed Instances mode, where `lambda_runtime` does not set it
//!   either. `cargo bench --bench lambda -- memory` measures it.
//! - **The event is parsed once.** The handler must answer events that
//!   `lambda_http` cannot deserialise with a `400` ([`entry`]), so it
//!   cannot take `lambda_http`'s request type as a `lambda_runtime`
//!   payload (a failed payload parse is reported to Lambda as a function
//!   error, a `502` for the client). Here the loop has the event's bytes:
//!   it parses them into the request once, and an event that does not
//!   parse so goes to the handler raw. An event is parsed as the shape it
//!   announces (2.0 or REST) rather than through `LambdaRequest`'s
//!   deserialiser, which scans it into a raw value first and reads a 2.0
//!   event as a REST one before it fails (`parse` below).
//! - **The per-request log-and-metric lines are written once the response
//!   is out.** The flush follows the response's post, so neither
//!   formatting the lines nor their `write` delays the client. Lambda
//!   freezes an execution environment only when the runtime asks for the
//!   next event, which happens after the flush, so no line is lost to a
//!   freeze.
//!
//! What the loop does per invocation is what `lambda_runtime`'s does: the
//! response is posted to `/invocation/{id}/response`, a handler error or
//! panic to `/invocation/{id}/error` as a [`Diagnostic`], with the
//! `Lambda-Runtime-Invocation-Id` header echoed. Lambda Managed Instances
//! set `AWS_LAMBDA_MAX_CONCURRENCY` above 1: that many loops then run at
//! once, sharing the app (and its one multiplexed Redis connection) and
//! the Runtime API client.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use lambda_http::aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use lambda_http::http::{HeaderMap, HeaderValue, Method, StatusCode};
use lambda_http::lambda_runtime::{Config, Context, Diagnostic, LambdaEvent};
use lambda_http::request::LambdaRequest;
use lambda_http::Error;
use lambda_idempotency::DeferredLines;
use lambda_runtime_api_client::body::Body;
use lambda_runtime_api_client::{build_request, PooledClient};
use serde_json::value::RawValue;

use crate::entry::{self, Reply};
use crate::logging::Invocation;
use crate::App;

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
const REQUEST_ID: &str = "lambda-runtime-aws-request-id";
const INVOCATION_ID: &str = "lambda-runtime-invocation-id";

/// Serves `app` with `loops` invocations at once (1 on classic Lambda),
/// flushing `lines` after each response. Returns when no loop is left, as
/// `lambda_runtime` does: a loop ends when a post to the Runtime API
/// fails or an event comes without a request id, and a lone loop also
/// when `/next` fails.
pub async fn run(app: App, lines: DeferredLines, loops: usize) -> Result<(), Error> {
    let runtime = Arc::new(Runtime {
        loops,
        client: PooledClient::builder()
            .with_endpoint(runtime_api()?)
            .with_pool_size(loops)
            .build(),
        config: Arc::new(config_from_env()?),
        app,
        lines,
    });
    if loops <= 1 {
        return runtime.serve().await;
    }
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..loops {
        running.spawn(Arc::clone(&runtime).serve_owned());
    }
    let mut last = Ok(());
    while let Some(ended) = running.join_next().await {
        let error = match ended {
            Ok(result) => result.err(),
            Err(join) => Some(join.into()),
        };
        if let Some(error) = error {
            tracing::error!(%error, "a runtime loop stopped");
            last = Err(error);
        }
    }
    last
}

/// `AWS_LAMBDA_RUNTIME_API`, which Lambda (and `cargo lambda watch`) set.
fn runtime_api() -> Result<lambda_http::http::Uri, Error> {
    let address = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .map_err(|_| "AWS_LAMBDA_RUNTIME_API is not set: run the function in Lambda or under `cargo lambda watch`")?;
    // As lambda_runtime reads it: `host:port` (Lambda) or a URL with a
    // path (`cargo lambda watch`).
    address
        .parse()
        .map_err(|e| format!("AWS_LAMBDA_RUNTIME_API is not a host:port or URL ({e})").into())
}

/// The function's configuration, as `lambda_runtime`'s `Config::from_env`
/// reads it, but an error rather than a panic when a variable is missing.
fn config_from_env() -> Result<Config, Error> {
    let required =
        |name: &str| std::env::var(name).map_err(|_| Error::from(format!("{name} is not set")));
    Ok(Config {
        function_name: required("AWS_LAMBDA_FUNCTION_NAME")?,
        memory: required("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")?
            .parse()
            .map_err(|_| "AWS_LAMBDA_FUNCTION_MEMORY_SIZE is not a number")?,
        version: required("AWS_LAMBDA_FUNCTION_VERSION")?,
        log_stream: std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_default(),
        log_group: std::env::var("AWS_LAMBDA_LOG_GROUP_NAME").unwrap_or_default(),
    })
}

/// What every loop shares.
struct Runtime {
    /// How many loops run.
    loops: usize,
    client: PooledClient,
    config: Arc<Config>,
    app: App,
    lines: DeferredLines,
}

impl Runtime {
    async fn serve_owned(self: Arc<Self>) -> Result<(), Error> {
        self.serve().await
    }

    /// One loop: the next event, its answer, the flush; until the Runtime
    /// API fails.
    async fn serve(&self) -> Result<(), Error> {
        loop {
            let next = build_request()
                .method(Method::GET)
                .uri(NEXT)
                .body(Body::empty())?;
            let next = match self.client.call(next).await {
                Ok(next) => next,
                // As in lambda_runtime: with several loops, one that could
                // not get an event asks again; alone, it ends the process.
                Err(error) if self.loops > 1 => {
                    tracing::warn!(%error, "the Runtime API did not answer /next; asking again");
                    continue;
                }
                Err(error) => return Err(error),
            };
            // `cargo lambda watch` answers 204 when no event is waiting
            // (lambda_runtime skips it too); Lambda never does.
            if next.status() == StatusCode::NO_CONTENT {
                continue;
            }
            let (parts, body) = next.into_parts();
            let event = body.collect().await?.to_bytes();
            let answered = self.invoke(&parts.headers, event).await;
            // Whatever became of the post: the lines are written.
            self.lines.flush();
            answered?;
        }
    }

    /// Answers one event: its response or its error, posted, with the
    /// invocation's ids on every line logged meanwhile.
    async fn invoke(&self, headers: &HeaderMap, event: Bytes) -> Result<(), Error> {
        let request_id = headers
            .get(REQUEST_ID)
            .and_then(|id| id.to_str().ok())
            .ok_or("the Runtime API sent an event without a request id")?;
        let context = Context::new(request_id, Arc::clone(&self.config), headers)?;
        let ids = Invocation::of(&context);
        ids.scope(self.answer(request_id, headers, event, context))
            .await
    }

    async fn answer(
        &self,
        request_id: &str,
        headers: &HeaderMap,
        event: Bytes,
        context: Context,
    ) -> Result<(), Error> {
        let handled = AssertUnwindSafe(self.handle(event, context))
            .catch_unwind()
            .await;
        let (path, body) = match handled {
            Ok(Ok(reply)) => ("response", serde_json::to_vec(&reply)?),
            Ok(Err(error)) => {
                tracing::error!(%error, "the handler failed");
                ("error", serde_json::to_vec(&Diagnostic::from(error))?)
            }
            Err(panic) => {
                tracing::error!("the handler panicked");
                ("error", serde_json::to_vec(&panicked(&*panic))?)
            }
        };
        let mut post = build_request().method(Method::POST).uri(format!(
            "/2018-06-01/runtime/invocation/{request_id}/{path}"
        ));
        if path == "error" {
            post = post.header("lambda-runtime-function-error-type", "unhandled");
        }
        if let Some(id) = headers.get(INVOCATION_ID) {
            post = post.header(INVOCATION_ID, HeaderValue::clone(id));
        }
        let posted = self.client.call(post.body(Body::from(body))?).await?;
        if !posted.status().is_success() {
            // As in lambda_runtime: the loop goes on (a 410 means the
            // invocation timed out before the answer came).
            tracing::error!(status = %posted.status(), "the Runtime API refused the {path}");
        }
        Ok(())
    }

    /// The handler: the event parsed once, or raw when it is not an event
    /// `lambda_http` reads.
    async fn handle(&self, event: Bytes, context: Context) -> Result<Reply, Error> {
        if let Some(request) = parse(&event) {
            return entry::handle_request(&self.app, request, &event, context).await;
        }
        let raw = match serde_json::from_slice::<Option<Box<RawValue>>>(&event)? {
            Some(raw) => raw,
            // The event was JSON `null`.
            None => RawValue::from_string("null".to_owned())?,
        };
        entry::handle_event(&self.app, LambdaEvent::new(raw, context)).await
    }
}

/// A panic as a diagnostic: its message, when it has one, worded as
/// `lambda_runtime` words it.
fn panicked(panic: &(dyn std::any::Any + Send)) -> Diagnostic {
    let message = panic
        .downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned());
    Diagnostic {
        error_type: "Runtime.Panic".to_owned(),
        error_message: match message {
            Some(message) => format!("Lambda panicked: {message}"),
            None => "Lambda panicked".to_owned(),
        },
    }
}

/// The event as `lambda_http`'s request, if it is one.
///
/// `LambdaRequest`'s own deserialiser scans the event into a raw value
/// and then parses that as the REST API (1.0) shape; when that fails, as
/// the 2.0 shape. Here the event is parsed in one pass as the shape it
/// announces:
/// - an event that says `"version":"2.0"` (HTTP APIs, function URLs) as
///   2.0, kept only if its parsed version is 2.0. This skips the scan and
///   the 1.0 attempt, which reads the whole of a 2.0 event before it
///   fails on the missing `httpMethod`: half the instructions of the whole
///   parse. The 2.0 events API Gateway and function URLs send have no
///   top-level `httpMethod` (clients cannot add one), so they never parse
///   as 1.0: the result is the same either way.
/// - any other event as 1.0 (REST APIs), which is what `LambdaRequest`
///   tries first on the same text, so a success is its result too; only
///   the scan is skipped.
///
/// Everything else (an event that is not UTF-8, a 2.0 event that does not
/// parse as 2.0, one that is neither shape) goes through `LambdaRequest`
/// as before.
fn parse(event: &[u8]) -> Option<LambdaRequest> {
    // Checked as UTF-8 once, in one pass, rather than string by string.
    if let Ok(text) = std::str::from_utf8(event) {
        if says_version_2(event) {
            if let Ok(request) = serde_json::from_str::<ApiGatewayV2httpRequest>(text) {
                if request.version.as_deref() == Some("2.0") {
                    return Some(LambdaRequest::ApiGatewayV2(request));
                }
            }
        } else if let Ok(request) = serde_json::from_str::<ApiGatewayProxyRequest>(text) {
            return Some(LambdaRequest::ApiGatewayV1(request));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fixture event, as stored (pretty) and compact.
    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let mut events = Vec::new();
        for entry in std::fs::read_dir(testkit::fixtures::events_dir()).unwrap() {
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
    fn an_http_api_payload_1_0_event_is_read_as_the_rest_shape_it_is() {
        // `"version": "1.0"` and REST's members: lambda_http reads it as a
        // REST event, and so does the loop, identity containers included.
        let event = testkit::fixtures::event_bytes("http_api_1_0_post_order.json");
        assert!(!says_version_2(&event));
        let Some(LambdaRequest::ApiGatewayV1(request)) = parse(&event) else {
            panic!("not read as a REST event");
        };
        let authorizer = &request.request_context.authorizer.fields;
        assert!(authorizer["claims"].is_null() && authorizer["scopes"].is_null());
        assert_eq!(shape(parse(&event)), lambda_http(&event));
    }

    #[test]
    fn a_version_2_event_that_is_not_an_http_api_event_still_goes_through_lambda_http() {
        // Claims 2.0 but lacks requestContext: neither shape parses it.
        assert!(parse(br#"{"version":"2.0"}"#).is_none());
        // A 2.0 event that is not UTF-8 parses no better than in lambda_http.
        let mut broken = testkit::fixtures::event_bytes("post_order.json");
        let at = broken.windows(8).position(|w| w == b"Espresso").unwrap();
        broken[at] = 0xff;
        assert!(says_version_2(&broken));
        assert!(serde_json::from_slice::<LambdaRequest>(&broken).is_err());
        assert!(parse(&broken).is_none());
    }

    #[test]
    fn a_panic_is_reported_with_its_message_when_it_has_one() {
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        let reported = panicked(&*caught);
        assert_eq!(reported.error_type, "Runtime.Panic");
        assert_eq!(reported.error_message, "Lambda panicked: boom 1");
        let caught = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panicked(&*caught).error_message, "Lambda panicked: static");
        let caught = std::panic::catch_unwind(|| std::panic::panic_any(7)).unwrap_err();
        assert_eq!(panicked(&*caught).error_message, "Lambda panicked");
    }

    #[test]
    fn a_rest_event_that_is_not_utf_8_parses_no_better_than_in_lambda_http() {
        let mut event = testkit::fixtures::event_bytes("rest_v1_post_order_prod_stage.json");
        let at = event.windows(8).position(|w| w == b"Espresso").unwrap();
        event[at] = 0xff;
        assert!(!says_version_2(&event));
        assert_eq!(shape(parse(&event)), lambda_http(&event));
    }

    #[test]
    fn a_rest_event_that_also_parses_as_2_0_stays_rest() {
        // A REST API event with a header named `version` valued `2.0`, and
        // a request context that the 2.0 shape accepts too: only the
        // parsed version keeps it a REST event, as lambda_http reads it.
        let mut value = testkit::fixtures::event_json("rest_v1_post_order_prod_stage.json");
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
