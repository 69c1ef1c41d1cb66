//! The Lambda entry point: the raw event in, the API Gateway response out.
//!
//! `lambda_http::run` converts the event into an `http::Request` before any
//! of our code runs, and that conversion fails or panics on inputs a client
//! can send: a control character in a header value makes the whole event
//! undeserialisable, and a body flagged base64 that is not valid base64 (or
//! a path the `url` crate cannot parse) panics inside `lambda_http`. Either
//! way the client would get a bare `502`/`500` from API Gateway.
//!
//! So the function converts the event itself. [`handle_request`] takes an
//! event that deserialised (as [`crate::runtime`] hands it over, parsed
//! once), [`handle_event`] the raw JSON of any event:
//! - an event whose headers do not deserialise is answered `400`, in the
//!   shape of its origin (v1 or v2), after the bad headers are dropped;
//! - a conversion that panics is caught (the release profile keeps
//!   `panic = "unwind"` for this) and answered `400`;
//! - an event that is not an HTTP event at all gets a `400` in the plain
//!   `statusCode`/`headers`/`body` shape every API Gateway version reads;
//! - an identity container that is `null` where `lambda_http` types it as
//!   an object (`requestContext.identity` in REST and HTTP API 1.0 events,
//!   an `authorizer.iam.cognitoIdentity` holding nothing but `null`s in
//!   2.0 events) is removed, and the event read again: a `null` or empty
//!   container carries no identity, as a missing one does, so the caller
//!   scope tries its next source instead of the request failing.
//!
//! Everything else goes through `lambda_http`'s own `Adapter`, so requests
//! and responses are converted exactly as `lambda_http::run` would do it,
//! and the converted response goes to the runtime as it is (no detour
//! through a `serde_json::Value`).

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;

use lambda_http::http::{HeaderName, HeaderValue};
use lambda_http::request::LambdaRequest;
use lambda_http::{
    Adapter, Body, BoxFuture, Context, Error, LambdaEvent, Request, Response, Service,
};
use problem_details::Problem;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::app::App;
use crate::problems::INVALID_REQUEST;

/// The response `lambda_http` builds for the event's origin (v1 or v2).
type Converted =
    <Adapter<'static, Response<Body>, Fixed> as Service<LambdaEvent<LambdaRequest>>>::Response;

/// What one invocation answers.
// The large variant is the common one: boxing it would allocate on every
// invocation to save stack on the rare plain answer.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// In the shape of the event's origin.
    Http(Converted),
    /// For events that are not HTTP events at all: the plain shape every
    /// API Gateway version and function URLs read.
    Plain(Plain),
}

/// The plain `statusCode`/`headers`/`body` response.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plain {
    status_code: u16,
    headers: PlainHeaders,
    body: String,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
struct PlainHeaders {
    #[serde(rename = "content-type")]
    content_type: String,
}

/// A service that answers every request with the same response: how a
/// rejection gets the shape of its event's origin.
#[derive(Clone)]
pub struct Fixed(Response<Body>);

impl Service<Request> for Fixed {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request) -> Self::Future {
        std::future::ready(Ok(clone_response(&self.0)))
    }
}

/// The function as a service for the adapter.
struct Routed(App);

impl Service<Request> for Routed {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let app = self.0.clone();
        Box::pin(async move { Ok(app.handle(req).await) })
    }
}

/// Handles one raw invocation: never fails for a bad client input.
pub async fn handle_event(app: &App, event: LambdaEvent<Box<RawValue>>) -> Result<Reply, Error> {
    let (raw, context) = event.into_parts();
    match serde_json::from_str::<LambdaRequest>(raw.get()) {
        Ok(request) => handle_request(app, request, raw.get().as_bytes(), context).await,
        Err(_) => match without_empty_identities(raw.get()) {
            Some((request, text)) => handle_request(app, request, text.as_bytes(), context).await,
            None => Ok(reject_unreadable(raw.get(), context, app.problem_base()).await),
        },
    }
}

/// The event read again after [`drop_empty_identities`], with its new
/// text; `None` when nothing was dropped or it still does not deserialise.
/// Only events that failed to deserialise come here, so the common event
/// pays nothing for it.
fn without_empty_identities(raw: &str) -> Option<(LambdaRequest, String)> {
    let mut event: Value = serde_json::from_str(raw).ok()?;
    if !drop_empty_identities(&mut event) {
        return None;
    }
    let text = event.to_string();
    let request = serde_json::from_str::<LambdaRequest>(&text).ok()?;
    Some((request, text))
}

/// Removes the identity containers `lambda_http` cannot read although they
/// say nothing; true if one was removed. Removing is what `lambda_http`
/// does with a missing one (its fields' defaults: no identity), so the
/// caller scope reads the event as if the container were absent, which is
/// what a `null` or empty container means. Nothing else changes: a
/// container with a value in it stays, and so does a `null` claim, which
/// still makes the event unreadable.
fn drop_empty_identities(event: &mut Value) -> bool {
    let Some(context) = event
        .get_mut("requestContext")
        .and_then(Value::as_object_mut)
    else {
        return false;
    };
    let mut dropped = false;
    // REST and HTTP API 1.0: `identity` is typed as an object, `null` is
    // refused (an empty object already reads as no identity).
    if context.get("identity").is_some_and(Value::is_null) {
        context.remove("identity");
        dropped = true;
    }
    // HTTP API 2.0: a `cognitoIdentity` object needs its `amr` list, so an
    // empty or all-`null` one is refused (a `null` one already reads as
    // none).
    if let Some(iam) = context
        .get_mut("authorizer")
        .and_then(|authorizer| authorizer.get_mut("iam"))
        .and_then(Value::as_object_mut)
    {
        let says_nothing = iam
            .get("cognitoIdentity")
            .and_then(Value::as_object)
            .is_some_and(|cognito| cognito.values().all(Value::is_null));
        if says_nothing {
            iam.remove("cognitoIdentity");
            dropped = true;
        }
    }
    dropped
}

/// Handles an event that deserialised; `raw` is its text, read again only
/// on the rare answer that must rebuild the event.
pub async fn handle_request(
    app: &App,
    mut request: LambdaRequest,
    raw: &[u8],
    context: Context,
) -> Result<Reply, Error> {
    keep_repeated_headers(&mut request);
    let mut adapter = Adapter::from(Routed(app.clone()));
    let call = std::panic::catch_unwind(AssertUnwindSafe(|| {
        adapter.call(LambdaEvent::new(request, context.clone()))
    }));
    match call {
        Ok(future) => Ok(Reply::Http(future.await?)),
        Err(_) => {
            tracing::warn!("lambda_http could not convert the event (invalid base64 body or URL); answering 400");
            let problem = bad_request("The request could not be decoded: its body is flagged base64 but is not valid base64, or its path is not a valid URL path.");
            let base = app.problem_base();
            Ok(answer_in_origin_shape(raw, context, problem, base, strip_body).await)
        }
    }
}

fn bad_request(detail: &str) -> Problem {
    Problem::new(INVALID_REQUEST, detail)
}

/// REST (v1) events carry every value of a repeated header in
/// `multiValueHeaders` and only the last in `headers`; `lambda_http` merges
/// the two with `headers` overwriting, which would turn two
/// `Idempotency-Key` values into one. Dropping the single-valued copy of a
/// repeated header keeps all its values, so the layer sees (and refuses)
/// both.
fn keep_repeated_headers(request: &mut LambdaRequest) {
    if let LambdaRequest::ApiGatewayV1(v1) = request {
        let repeated: Vec<_> = v1
            .multi_value_headers
            .keys()
            .filter(|name| v1.multi_value_headers.get_all(*name).iter().count() > 1)
            .cloned()
            .collect();
        for name in repeated {
            v1.headers.remove(&name);
        }
    }
}

/// An event `lambda_http` cannot deserialise: drop invalid headers and
/// answer in the origin's shape if that makes it readable, otherwise in the
/// plain shape.
async fn reject_unreadable(raw: &str, context: Context, base: &str) -> Reply {
    let Ok(Value::Object(_)) = serde_json::from_str::<Value>(raw) else {
        return plain_bad_request("The event is not JSON.", base);
    };
    let problem = bad_request("A header has an invalid name or a value with control characters.");
    answer_in_origin_shape(raw.as_bytes(), context, problem, base, drop_invalid_headers).await
}

/// Answers `problem` through `lambda_http`'s adapter, after `repair` made
/// the event convertible, so the response has the origin's exact shape.
async fn answer_in_origin_shape(
    raw: &[u8],
    context: Context,
    problem: Problem,
    base: &str,
    repair: fn(&mut Value) -> bool,
) -> Reply {
    let mut event: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    if !repair(&mut event) {
        return plain(problem.into_response(base));
    }
    // An event with a bad header and a `null` identity both.
    drop_empty_identities(&mut event);
    let request = match serde_json::from_value::<LambdaRequest>(event) {
        Ok(request) => request,
        Err(_) => {
            return plain_bad_request(
                "The event is not an API Gateway or function URL HTTP event.",
                base,
            )
        }
    };
    let mut adapter = Adapter::from(Fixed(problem.into_response(base)));
    let converted = std::panic::catch_unwind(AssertUnwindSafe(|| {
        adapter.call(LambdaEvent::new(request, context))
    }));
    match converted {
        Ok(future) => match future.await {
            Ok(converted) => Reply::Http(converted),
            Err(never) => match never {},
        },
        Err(_) => plain_bad_request_with(base),
    }
}

/// A copy of a problem response (status, headers, body).
fn clone_response(response: &Response<Body>) -> Response<Body> {
    let mut copy = Response::new(response.body().clone());
    *copy.status_mut() = response.status();
    *copy.headers_mut() = response.headers().clone();
    copy
}

/// Removes header entries `http` rejects; true if the event is an object.
fn drop_invalid_headers(event: &mut Value) -> bool {
    let Value::Object(map) = event else {
        return false;
    };
    for field in ["headers", "multiValueHeaders"] {
        if let Some(Value::Object(headers)) = map.get_mut(field) {
            headers.retain(|name, value| {
                HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && match value {
                        Value::String(v) => HeaderValue::from_str(v).is_ok(),
                        Value::Array(vs) => vs
                            .iter()
                            .all(|v| v.as_str().is_some_and(|s| HeaderValue::from_str(s).is_ok())),
                        Value::Null => true,
                        _ => false,
                    }
            });
        }
    }
    true
}

/// Removes the body and the paths that failed to convert.
fn strip_body(event: &mut Value) -> bool {
    let Value::Object(map) = event else {
        return false;
    };
    map.remove("body");
    map.insert("isBase64Encoded".to_owned(), Value::Bool(false));
    for field in ["rawPath", "path"] {
        if map.contains_key(field) {
            map.insert(field.to_owned(), Value::String("/".to_owned()));
        }
    }
    true
}

fn plain_bad_request(detail: &str, base: &str) -> Reply {
    plain(bad_request(detail).into_response(base))
}

fn plain_bad_request_with(base: &str) -> Reply {
    plain(bad_request("The request could not be read.").into_response(base))
}

/// The shape both API Gateway versions and function URLs accept.
fn plain(response: Response<Body>) -> Reply {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/problem+json")
        .to_owned();
    Reply::Plain(Plain {
        status_code: response.status().as_u16(),
        headers: PlainHeaders { content_type },
        body: String::from_utf8_lossy(response.body()).into_owned(),
        is_base64_encoded: false,
    })
}
