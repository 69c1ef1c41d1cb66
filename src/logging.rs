//! Logs: `lambda_http`'s default subscriber (text, or JSON under
//! `AWS_LAMBDA_LOG_FORMAT=JSON`; level from `AWS_LAMBDA_LOG_LEVEL` or
//! `RUST_LOG`), with each line naming the invocation it belongs to.
//!
//! `lambda_runtime`'s `TracingLayer` names it by opening a `tracing` span
//! per invocation. With a subscriber at INFO that costs every invocation
//! the span's creation (its fields formatted as JSON into a string) and an
//! enter and an exit on every poll (7,100 instructions per replay under
//! callgrind), although most invocations log nothing but their
//! log-and-metric line, which carries the request id itself. Here the
//! request id (with the X-Ray trace id and the tenant id, when there are
//! any) is kept in a task-local for the invocation's future instead
//! ([`Invocation::scope`]): setting it is a pointer swap per poll, and only a
//! line that is actually written looks it up ([`WithRequestId`]). JSON
//! lines get top-level `requestId`, `xrayTraceId` and `tenantId`
//! properties, as in Lambda's own JSON log format; text lines start with
//! the request id.
//!
//! Tasks spawned from an invocation (a background release) do not inherit
//! it, as they did not inherit the span.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use lambda_http::lambda_runtime::Context;
use lambda_http::tracing::subscriber::filter::{EnvFilter, LevelFilter};
use lambda_http::tracing::subscriber::fmt::format::Writer;
use lambda_http::tracing::subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use lambda_http::tracing::subscriber::registry::LookupSpan;
use lambda_idempotency::InvocationIds;
use tokio::task::futures::TaskLocalFuture;
use tracing::{Event, Subscriber};

tokio::task_local! {
    /// The invocation whose future is being polled.
    static INVOCATION: Arc<Invocation>;
}

/// What a log line says of the invocation it was written in: the
/// properties `lambda_runtime`'s span carried, as the layer's own
/// log-and-metric line carries them too.
pub struct Invocation(InvocationIds);

impl Invocation {
    /// The ids of the invocation `context` describes.
    pub fn of(context: &Context) -> Arc<Self> {
        Arc::new(Self(InvocationIds::of(context)))
    }

    /// Runs `future` with these ids in a task-local (`INVOCATION`), for
    /// every line written while it is polled.
    pub fn scope<F: Future>(self: Arc<Self>, future: F) -> TaskLocalFuture<Arc<Self>, F> {
        INVOCATION.scope(self, future)
    }
}

/// Installs the global subscriber, configured as `lambda_http`'s default
/// one is, but naming the invocation on each line.
pub fn init() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|l| LevelFilter::from_str(&l).ok())
        .unwrap_or(LevelFilter::INFO);
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let builder = lambda_http::tracing::subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    if json {
        builder
            .json()
            .map_event_format(|format| WithRequestId::new(format, true))
            .init();
    } else {
        builder
            .map_event_format(|format| WithRequestId::new(format, false))
            .init();
    }
}

/// An event format that adds the current invocation's request id to what
/// the format `F` writes.
pub struct WithRequestId<F> {
    inner: F,
    json: bool,
}

impl<F> WithRequestId<F> {
    /// Wraps `inner`, which writes JSON objects when `json` is set.
    pub fn new(inner: F, json: bool) -> Self {
        Self { inner, json }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Ok(invocation) = INVOCATION.try_with(Arc::clone) else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            write!(writer, "{} ", invocation.0.request_id())?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&with_properties(&line, invocation.0.properties()))
    }
}

/// `line`, a JSON object and a newline, with `"name":value` properties
/// added at its end; `line` as it is when it is not such an object.
fn with_properties<'a>(
    line: &str,
    properties: impl Iterator<Item = (&'static str, &'a str)>,
) -> String {
    let body = line.trim_end();
    let Some(open) = body.strip_suffix('}') else {
        return line.to_owned();
    };
    let mut out = open.to_owned();
    let mut empty = open.trim_end().ends_with('{');
    for (name, value) in properties {
        if !empty {
            out.push(',');
        }
        empty = false;
        let quoted = serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned());
        out.push_str(&format!("\"{name}\":{quoted}"));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ids_become_the_last_properties_of_a_json_line() {
        let line = with_properties(
            "{\"level\":\"WARN\",\"fields\":{\"message\":\"m\"}}\n",
            [("requestId", "r-\"1\""), ("xrayTraceId", "Root=1-x")].into_iter(),
        );
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1);
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["requestId"], "r-\"1\"");
        assert_eq!(json["xrayTraceId"], "Root=1-x");
        assert_eq!(json["fields"]["message"], "m");
    }

    #[test]
    fn absent_ids_are_left_out_and_an_empty_object_gets_no_leading_comma() {
        let mut context = Context::default();
        context.request_id = "r".to_owned();
        context.tenant_id = Some("t".to_owned());
        let ids = InvocationIds::of(&context);
        let line = with_properties("{}\n", ids.properties());
        assert_eq!(line, "{\"requestId\":\"r\",\"tenantId\":\"t\"}\n");
    }

    #[test]
    fn a_line_that_is_not_an_object_is_left_alone() {
        let line = with_properties("plain text\n", [("requestId", "r")].into_iter());
        assert_eq!(line, "plain text\n");
    }
}
