//! The order domain: `POST /orders` creates an order, `GET /orders/{id}`
//! reads one. Nothing here knows about idempotency; [`crate::app`] puts the
//! create handler behind the layer.

pub mod model;
pub mod repo;

use std::convert::Infallible;

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::tower::Service;
use lambda_http::{Body, BoxFuture, Request, Response};
use serde_json::json;
use thiserror::Error;

pub use model::{NewOrder, Order, OrderInputError};
pub use repo::{OrderRepo, RepoError};

use crate::idempotency::fingerprint::is_json;
use crate::problem::Problem;

/// Why an orders request failed; mapped to HTTP once, in `to_problem`.
#[derive(Debug, Error)]
pub enum OrderError {
    /// The body is not declared as JSON.
    #[error("send the order as JSON with Content-Type: application/json")]
    UnsupportedMediaType,
    /// The payload was refused.
    #[error(transparent)]
    Input(#[from] OrderInputError),
    /// No order has this id.
    #[error("no order with this id")]
    NotFound,
    /// Redis failed; the client may retry.
    #[error(transparent)]
    Store(#[from] RepoError),
}

impl OrderError {
    /// The problem+json response for this error.
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::UnsupportedMediaType => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                self.to_string(),
            ),
            Self::Input(OrderInputError::Malformed(_)) => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON body",
                self.to_string(),
            ),
            Self::Input(OrderInputError::Invalid(_)) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-order",
                "Invalid order",
                self.to_string(),
            ),
            Self::NotFound => Problem::new(
                StatusCode::NOT_FOUND,
                "order-not-found",
                "Order not found",
                self.to_string(),
            ),
            // The detail stays generic: the cause is logged, not sent.
            Self::Store(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "order-store-unavailable",
                "Service temporarily unavailable",
                "The order could not be saved. Retry with the same Idempotency-Key.",
            )
            .with_retry_after(1),
        }
    }

    fn into_response(self) -> Response<Body> {
        if let Self::Store(cause) = &self {
            tracing::error!(error = %cause, "order store failed");
        }
        self.to_problem().into_response()
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Handles `POST /orders`: validate, store, answer `201` with `Location`.
pub async fn create_order(repo: &OrderRepo, req: &Request) -> Response<Body> {
    match try_create(repo, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn try_create(repo: &OrderRepo, req: &Request) -> Result<Response<Body>, OrderError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !content_type.is_some_and(is_json) {
        return Err(OrderError::UnsupportedMediaType);
    }
    let new = NewOrder::try_from(req.body().as_ref())?;
    let order = Order::create(new);
    repo.insert(&order).await?;
    let mut response = json_response(
        StatusCode::CREATED,
        &json!({ "message": "Order created", "order": order }),
    );
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", order.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Handles `GET /orders/{id}`: `200` with the order, or `404`.
pub async fn get_order(repo: &OrderRepo, id: &str) -> Response<Body> {
    // Ids are UUIDs; anything else cannot exist, so Redis is not asked.
    if uuid::Uuid::try_parse(id).is_err() {
        return OrderError::NotFound.into_response();
    }
    match repo.get(id).await {
        Ok(Some(order)) => json_response(StatusCode::OK, &json!(order)),
        Ok(None) => OrderError::NotFound.into_response(),
        Err(e) => OrderError::Store(e).into_response(),
    }
}

/// [`create_order`] as a tower service, so layers can wrap it.
#[derive(Clone)]
pub struct CreateOrder {
    repo: OrderRepo,
}

impl CreateOrder {
    /// The create handler over `repo`.
    pub fn new(repo: OrderRepo) -> Self {
        Self { repo }
    }
}

impl Service<Request> for CreateOrder {
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
        let repo = self.repo.clone();
        Box::pin(async move { Ok(create_order(&repo, &req).await) })
    }
}
