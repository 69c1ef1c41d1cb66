//! API Gateway HTTP API (payload 2.0) events built in code, of the same
//! shape as `events/post_order.json`, so that scenarios can make many
//! distinct requests (keys, bodies) without a fixture file for each.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

const DOMAIN: &str = "abc123.execute-api.eu-west-1.amazonaws.com";
const SOURCE_IP: &str = "203.0.113.7";
const USER_AGENT: &str = "curl/8.5.0";

/// An HTTP API payload 2.0 event: stage `$default`, a fresh `requestId`,
/// `rawQueryString` "", `isBase64Encoded` false. `headers` (names
/// lower-cased) are added to and override the usual API Gateway headers;
/// `content-length` is set from `body`.
pub fn v2_event(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut all = Map::new();
    for (name, value) in [
        ("accept", "*/*"),
        ("host", DOMAIN),
        ("user-agent", USER_AGENT),
        (
            "x-amzn-trace-id",
            "Root=1-67490341-0123456789abcdef01234567",
        ),
        ("x-forwarded-for", SOURCE_IP),
        ("x-forwarded-port", "443"),
        ("x-forwarded-proto", "https"),
    ] {
        all.insert(name.to_owned(), json!(value));
    }
    if let Some(body) = body {
        all.insert("content-length".to_owned(), json!(body.len().to_string()));
    }
    for (name, value) in headers {
        all.insert(name.to_ascii_lowercase(), json!(value));
    }

    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": all,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": DOMAIN,
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": SOURCE_IP,
                "userAgent": USER_AGENT
            },
            "requestId": uuid::Uuid::new_v4().simple().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": clf_time(now.as_secs()),
            "timeEpoch": now.as_millis() as u64
        },
        "isBase64Encoded": false
    });
    if let Some(body) = body {
        event["body"] = json!(body);
    }
    event
}

/// The `requestContext.time` format, `29/Nov/2024:00:00:01 +0000`, for a
/// Unix time in seconds (UTC).
pub fn clf_time(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (mut days, rest) = (secs / 86_400, secs % 86_400);
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let mut year = 1970;
    while days >= if leap(year) { 366 } else { 365 } {
        days -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
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
    ];
    let mut month = 0;
    while days >= lengths[month] {
        days -= lengths[month];
        month += 1;
    }
    let day = days + 1;
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[month],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A `POST /orders` v2 event with a JSON `body` under idempotency `key`.
pub fn order_event(key: &str, body: &str) -> Value {
    v2_event(
        "POST",
        "/orders",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        Some(body),
    )
}

/// The request of `event`, an HTTP API event as [`v2_event`] makes them, as
/// a REST API sends it (payload 1.0: `headers` and `multiValueHeaders`,
/// `httpMethod`, `path`, stage `prod`, the path as the matched resource so
/// that it routes as before); `None` when `event` is not such an event (a
/// test broke its shape on purpose).
pub fn as_rest_event(event: &Value) -> Option<Value> {
    let path = event["rawPath"].as_str()?;
    let method = event["requestContext"]["http"]["method"].as_str()?;
    let headers = event["headers"].as_object()?;
    if headers.values().any(|v| !v.is_string())
        || !(event["body"].is_string() || event["body"].is_null())
    {
        return None;
    }
    let multi: Map<String, Value> = headers
        .iter()
        .map(|(name, value)| (name.clone(), json!([value])))
        .collect();
    Some(json!({
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "resourceId": "x1y2z3",
            "stage": "prod",
            "requestId": uuid::Uuid::new_v4().to_string(),
            "identity": { "sourceIp": SOURCE_IP, "userAgent": USER_AGENT },
            "path": format!("/prod{path}"),
            "resourcePath": path,
            "httpMethod": method,
            "apiId": "abc123",
            "protocol": "HTTP/1.1",
            "domainName": DOMAIN
        },
        "body": event["body"],
        "isBase64Encoded": event["isBase64Encoded"].as_bool().unwrap_or(false)
    }))
}

/// `event`, an HTTP API event, as a function URL sends it (the same payload
/// 2.0, from a `lambda-url` domain); `None` when it has no request context.
pub fn as_function_url_event(event: &Value) -> Option<Value> {
    let mut event = event.clone();
    let context = event.get_mut("requestContext")?.as_object_mut()?;
    context.insert(
        "domainName".into(),
        json!("a1b2c3.lambda-url.eu-west-1.on.aws"),
    );
    context.insert("domainPrefix".into(), json!("a1b2c3"));
    Some(event)
}
