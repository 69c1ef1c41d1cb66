//! The router: the only place that knows both the orders handlers and the
//! idempotency layer. `POST /orders` goes through the layer; `GET
//! /orders/{id}` does not need it (reads are naturally idempotent).

use lambda_http::http::{Method, StatusCode};
use lambda_http::tower::{Layer, ServiceExt};
use lambda_http::{Body, Request, Response};

use crate::apigw::route_path;
use crate::config::Config;
use crate::idempotency::{Idempotency, IdempotencyLayer, RedisStore};
use crate::orders::{get_order, CreateOrder, OrderRepo};
use crate::problem::Problem;
use crate::redis_conn::RedisConn;

/// The whole function: routes requests to the handlers.
#[derive(Clone)]
pub struct App {
    create: Idempotency<CreateOrder, RedisStore>,
    repo: OrderRepo,
}

enum Route {
    Orders,
    Order(String),
    Unknown,
}

fn route(path: &str) -> Route {
    match path.strip_prefix("/orders") {
        Some("") => Route::Orders,
        Some(rest) => match rest.strip_prefix('/') {
            Some(id) if !id.is_empty() && !id.contains('/') => Route::Order(id.to_owned()),
            _ => Route::Unknown,
        },
        None => Route::Unknown,
    }
}

impl App {
    /// The function over the instance's shared Redis connection.
    pub fn new(conn: RedisConn, config: &Config) -> Self {
        let repo = OrderRepo::new(conn.clone(), config.redis_timeout);
        let store = RedisStore::new(conn, config.redis_timeout);
        let layer = IdempotencyLayer::new(store, config.idempotency.clone());
        Self {
            create: layer.layer(CreateOrder::new(repo.clone())),
            repo,
        }
    }

    /// Answers one request. Never fails: every error is a problem+json.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        match route(route_path(&req)) {
            Route::Orders if req.method() == Method::POST => {
                match self.create.clone().oneshot(req).await {
                    Ok(response) => response,
                    // The layer turns every failure into a response; this
                    // arm exists only because its error type allows it.
                    Err(e) => {
                        tracing::error!(error = %e, "idempotency layer failed");
                        internal_error()
                    }
                }
            }
            Route::Orders => method_not_allowed("POST"),
            Route::Order(id) if req.method() == Method::GET => get_order(&self.repo, &id).await,
            Route::Order(_) => method_not_allowed("GET"),
            Route::Unknown => Problem::new(
                StatusCode::NOT_FOUND,
                "route-not-found",
                "Not found",
                "No such route. Routes: POST /orders, GET /orders/{id}.",
            )
            .into_response(),
        }
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("This route accepts {allow} only."),
    )
    .with_allow(allow)
    .into_response()
}

fn internal_error() -> Response<Body> {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal-error",
        "Internal error",
        "The request failed. Retry it with the same Idempotency-Key.",
    )
    .into_response()
}
