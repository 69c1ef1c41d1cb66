//! `template.yaml` against the code it deploys: what the template routes
//! and counts must be what the function serves and writes.
//!
//! Routes: the routes the function serves (`idempotent_orders::routes::ROUTES`,
//! the table its router matches against), the route keys of the template's
//! API and the operations of `openapi.yaml` must be the same list, so that
//! a route added in one place alone fails here. Everything else reaches the
//! function through `$default`, under the orders routes' authorizer.
//!
//! The order-store alarm counts, through a CloudWatch Logs metric filter,
//! the `ERROR` line the orders handler writes for each `503
//! order-store-unavailable` (no metric of the layer tells those apart). The
//! filter is read from the template and applied here to the lines the
//! release binary writes, with the deployed log settings (JSON lines,
//! metrics on): each such `503` must match it exactly once, and nothing else
//! may, not even the layer's own `503` for a store that failed before the
//! handler (that one has `StoreErrorAlarm`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use serde_norway::Value as Yaml;
use testkit::fault_proxy::{At, FaultProxy};
use testkit::harness::{function_env, order_event, release_binary, v2_event, Harness};
use testkit::proxy::socket_addr;
use testkit::RedisServer;

const DEADLINE: Duration = Duration::from_secs(5);
const TEA: &str = r#"{"product":"Tea","quantity":1}"#;

fn template() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml");
    let text = std::fs::read_to_string(path).expect("template.yaml");
    serde_norway::from_str(&text).expect("template.yaml is YAML")
}

/// The properties of the resource `name`.
fn properties<'a>(template: &'a Yaml, name: &str) -> &'a Yaml {
    let resource = &template["Resources"][name];
    assert!(!resource.is_null(), "template.yaml has no resource {name}");
    &resource["Properties"]
}

/// Routes as (method, path) pairs, `POST /orders` as `("POST", "/orders")`.
type Routes = BTreeSet<(String, String)>;

/// The template's API routes by route key (`POST /orders`, `$default`),
/// with their properties.
fn template_routes(template: &Yaml) -> Vec<(String, &Yaml)> {
    let resources = template["Resources"].as_mapping().expect("Resources");
    resources
        .values()
        .filter(|r| r["Type"] == "AWS::ApiGatewayV2::Route")
        .map(|r| {
            let key = r["Properties"]["RouteKey"]
                .as_str()
                .expect("a plain RouteKey");
            (key.to_owned(), &r["Properties"])
        })
        .collect()
}

/// `openapi.yaml`'s operations.
fn openapi_routes() -> Routes {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("openapi.yaml");
    let doc: Yaml = serde_norway::from_str(&text).expect("openapi.yaml is YAML");
    let paths = doc["paths"].as_mapping().expect("paths");
    let mut routes = Routes::new();
    for (path, item) in paths {
        let path = path.as_str().expect("a path");
        for method in item.as_mapping().expect("a path item").keys() {
            let method = method.as_str().expect("a key");
            if METHODS.contains(&method) {
                routes.insert((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    routes
}

/// The routes the function serves.
fn code_routes() -> Routes {
    idempotent_orders::routes::ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect()
}

/// API Gateway's own route keys, which no operation corresponds to: the
/// catch-all, and the unauthenticated OPTIONS route that lets CORS
/// preflights past the catch-all's authorizer.
const GATEWAY_KEYS: [&str; 2] = ["$default", "OPTIONS /{proxy+}"];

#[test]
fn the_function_the_template_and_openapi_yaml_have_the_same_routes() {
    let template = template();
    let mut deployed = Routes::new();
    for (key, _) in template_routes(&template) {
        if GATEWAY_KEYS.contains(&key.as_str()) {
            continue;
        }
        let (method, path) = key.split_once(' ').expect("METHOD /path");
        assert!(
            deployed.insert((method.to_owned(), path.to_owned())),
            "route key {key} appears twice"
        );
    }
    let served = code_routes();
    assert_eq!(
        served.len(),
        idempotent_orders::routes::ROUTES.len(),
        "a route appears twice in ROUTES"
    );
    assert_eq!(
        deployed, served,
        "template.yaml's route keys (left) against ROUTES (right)"
    );
    assert_eq!(
        openapi_routes(),
        served,
        "openapi.yaml's operations (left) against ROUTES (right)"
    );
}

#[test]
fn every_other_request_reaches_the_function_behind_the_orders_routes_authorizer() {
    let template = template();
    let routes = template_routes(&template);
    let route = |key: &str| {
        routes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, properties)| *properties)
            .unwrap_or_else(|| panic!("template.yaml has no route {key}"))
    };
    let auth = |properties: &Yaml| {
        (
            properties["AuthorizationType"].clone(),
            properties["AuthorizerId"].clone(),
        )
    };
    let orders = auth(route("POST /orders"));
    assert_eq!(auth(route("GET /orders/{id}")), orders);
    assert_eq!(
        auth(route("$default")),
        orders,
        "$default is behind the orders routes' authorizer"
    );
    let open = (Yaml::from("NONE"), Yaml::Null);
    assert_eq!(auth(route("GET /problems/{slug}")), open);
    assert_eq!(
        auth(route("OPTIONS /{proxy+}")),
        open,
        "CORS preflights carry no credentials"
    );
    let target = &route("POST /orders")["Target"];
    for (key, properties) in &routes {
        assert_eq!(&properties["Target"], target, "{key} goes to the function");
    }
}

/// A CloudWatch Logs JSON filter pattern of the one form the template uses,
/// `{ ($.a.b = "x") && ($.c = "y") }`: the paths and the strings they must
/// equal. Any other form fails here rather than being half understood.
fn json_equalities(pattern: &str) -> Vec<(Vec<String>, String)> {
    let inner = pattern
        .trim()
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a JSON filter pattern: {pattern}"));
    inner
        .split("&&")
        .map(|term| {
            let term = term.trim().trim_start_matches('(').trim_end_matches(')');
            let (selector, value) = term
                .split_once(" = ")
                .unwrap_or_else(|| panic!("only `$.path = \"value\"` terms are read: {term}"));
            let path = selector
                .trim()
                .strip_prefix("$.")
                .unwrap_or_else(|| panic!("a selector starts with `$.`: {selector}"));
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("only quoted string values are read: {value}"));
            assert!(
                !value.contains(['*', '"']),
                "no wildcard or escape is read: {value}"
            );
            (
                path.split('.').map(str::to_owned).collect(),
                value.to_owned(),
            )
        })
        .collect()
}

/// Whether the log line `line` matches every equality.
fn matches(equalities: &[(Vec<String>, String)], line: &str) -> bool {
    let Ok(json) = serde_json::from_str::<Value>(line) else {
        return false;
    };
    equalities.iter().all(|(path, value)| {
        path.iter()
            .try_fold(&json, |node, key| node.get(key))
            .and_then(Value::as_str)
            == Some(value.as_str())
    })
}

/// The order-store metric filter's equalities, after checking that the
/// alarm reads the metric the filter writes.
fn order_store_filter() -> Vec<(Vec<String>, String)> {
    let template = template();
    let filter = properties(&template, "OrderStoreErrorMetric");
    let alarm = properties(&template, "OrderStoreErrorAlarm");
    let metric = &filter["MetricTransformations"][0];
    assert_eq!(alarm["MetricName"], metric["MetricName"]);
    assert_eq!(alarm["Namespace"], metric["MetricNamespace"]);
    assert_eq!(
        filter["LogGroupName"],
        properties(&template, "OrdersFunction")["LoggingConfig"]["LogGroup"]
    );
    let pattern = filter["FilterPattern"].as_str().expect("a FilterPattern");
    json_equalities(pattern)
}

/// Sends `event` and returns its status and the lines the filter matched
/// while it ran.
async fn count(lambda: &Harness, filter: &[(Vec<String>, String)], event: &Value) -> (u16, usize) {
    let before = lambda.logs(0).lines().count();
    let status = lambda.invoke(0, event, DEADLINE).await.response().status;
    let logs = lambda.logs(0);
    let matched = logs
        .lines()
        .skip(before)
        .filter(|l| matches(filter, l))
        .count();
    (status, matched)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_store_alarm_counts_each_order_store_503_once_and_nothing_else() {
    let filter = order_store_filter();
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(socket_addr(&redis.url()));
    let vars = function_env(
        &proxy.url(),
        &[
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ("METRICS_NAMESPACE", "IdempotentOrders"),
            ("REDIS_TIMEOUT_MS", "200"),
            ("IDEMPOTENCY_KEY_REQUIRED", "false"),
        ],
    );
    let lambda = Harness::start(&release_binary("idempotent-orders"), vec![vars]).await;

    let created = lambda
        .invoke(0, &order_event("alarm-ok", TEA), DEADLINE)
        .await;
    assert_eq!(created.response().status, 201);
    let location = created.response().headers["location"].clone();
    let read = v2_event("GET", &location, &[], None);
    assert_eq!(count(&lambda, &filter, &read).await, (200, 0));
    assert_eq!(
        count(&lambda, &filter, &order_event("alarm-ok", TEA)).await,
        (201, 0)
    );

    // The order write fails after the claim (its SET held past the
    // timeout): 503 order-store-unavailable, one line.
    let mut write = proxy.hold_at(At::matching(|c| {
        c.name() == "SET" && c.key().is_some_and(|k| k.starts_with("orders:"))
    }));
    let held = order_event("alarm-write", TEA);
    let (status, matched) = tokio::join!(count(&lambda, &filter, &held), async {
        write.wait(DEADLINE).await.expect("the order write");
    })
    .0;
    proxy.release();
    assert_eq!((status, matched), (503, 1), "{}", lambda.logs(0));

    // Redis stops answering: a read, and an order without a key, fail in
    // the handler (one line each); an order with a key fails at its claim,
    // in the layer, before the handler (no line here).
    redis.pause();
    let no_key = v2_event(
        "POST",
        "/orders",
        &[("content-type", "application/json")],
        Some(TEA),
    );
    let read_down = count(&lambda, &filter, &read).await;
    let unnamed_down = count(&lambda, &filter, &no_key).await;
    let claim_down = count(&lambda, &filter, &order_event("alarm-claim", TEA)).await;
    redis.resume();
    assert_eq!(read_down, (503, 1), "{}", lambda.logs(0));
    assert_eq!(unnamed_down, (503, 1), "{}", lambda.logs(0));
    assert_eq!(claim_down, (503, 0), "{}", lambda.logs(0));
}

#[test]
fn the_filter_reader_refuses_patterns_it_does_not_understand() {
    let read = |p: &'static str| std::panic::catch_unwind(|| json_equalities(p)).is_ok();
    assert!(read(
        r#"{ ($.level = "ERROR") && ($.fields.message = "x") }"#
    ));
    assert!(!read(r#"{ $.level = "ERR*" }"#));
    assert!(!read(r#"{ $.level != "ERROR" }"#));
    assert!(!read(r#"ERROR"#));
    let equalities = json_equalities(r#"{ ($.level = "ERROR") && ($.fields.message = "x") }"#);
    assert!(matches(
        &equalities,
        r#"{"level":"ERROR","fields":{"message":"x"}}"#
    ));
    assert!(!matches(
        &equalities,
        r#"{"level":"ERROR","fields":{"message":"y"}}"#
    ));
    assert!(!matches(
        &equalities,
        r#"{"level":"WARN","fields":{"message":"x"}}"#
    ));
    assert!(!matches(&equalities, "ERROR x"));
}

/// The function's environment variables as the template sets them: the
/// literal values, and `None` for a value the template computes (`!Ref`,
/// `!If`, `!Sub`).
fn template_environment(template: &Yaml) -> Vec<(String, Option<String>)> {
    properties(template, "OrdersFunction")["Environment"]["Variables"]
        .as_mapping()
        .expect("OrdersFunction has environment variables")
        .iter()
        .map(|(name, value)| {
            let name = name.as_str().expect("a variable name").to_owned();
            let literal = match value {
                Yaml::Tagged(_) => None,
                value => value.as_str().map(str::to_owned),
            };
            (name, literal)
        })
        .collect()
}

/// A lease set below six times `REDIS_TIMEOUT_MS` stops start-up, so the
/// template must leave the lease to the function for every timeout its
/// `RedisTimeoutMs` parameter allows (any whole number from its MinValue).
#[test]
fn the_function_starts_with_every_redis_timeout_the_template_allows() {
    let template = template();
    let parameter = &template["Parameters"]["RedisTimeoutMs"];
    let min = parameter["MinValue"]
        .as_u64()
        .expect("RedisTimeoutMs MinValue");
    assert!(
        parameter["MaxValue"].is_null(),
        "RedisTimeoutMs has a MaxValue: try it below"
    );
    let environment = template_environment(&template);
    for timeout_ms in [min, 500, 501, 1_000, 5_000, 60_000, 1_000_000] {
        let lookup = |name: &str| {
            if name == "REDIS_TIMEOUT_MS" {
                return Some(timeout_ms.to_string());
            }
            environment
                .iter()
                .find(|(var, _)| var == name)
                .and_then(|(_, value)| value.clone())
        };
        let config = idempotent_orders::Config::from_lookup(lookup)
            .unwrap_or_else(|e| panic!("RedisTimeoutMs={timeout_ms}: start-up refused: {e}"));
        assert_eq!(
            config.settings.lease,
            Duration::from_secs(3).max(Duration::from_millis(timeout_ms) * 6),
            "RedisTimeoutMs={timeout_ms}"
        );
    }
}

/// The README's Configuration table and the template's environment name
/// the same variables, but for the rows Lambda sets itself (`AWS_LAMBDA_*`,
/// `RUST_LOG`: from `LoggingConfig` and the capacity provider).
#[test]
fn the_template_sets_every_variable_the_readme_lists() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has a Configuration section");
    let listed: BTreeSet<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| !name.starts_with("AWS_LAMBDA_") && *name != "Variable")
        .map(str::to_owned)
        .collect();
    let set: BTreeSet<String> = template_environment(&template())
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(listed.len() > 20, "README rows read: {listed:?}");
    assert_eq!(
        listed, set,
        "README.md's variables (left), template.yaml's (right)"
    );
}
