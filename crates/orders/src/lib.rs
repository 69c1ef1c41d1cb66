//! The order domain: `POST /orders` creates an order, `GET /orders/{id}`
//! reads one.
//!
//! Nothing here knows about idempotency keys. What makes creation safe to
//! repeat is local to this crate: a request may carry an [`OrderId`] in its
//! extensions (whoever composes the function derives it from the request's
//! identity), and the order is written only if that id is free, so a second
//! attempt at the same request finds the first attempt's order and answers
//! with it, byte for byte. A request refused before anything was written is
//! marked [`Rejected`] in the response's extensions.
//!
//! # Layout
//! - `model`: the validated payload ([`NewOrder`]) and the stored [`Order`];
//! - `body`: the JSON the two handlers answer with;
//! - `repo`: [`OrderRepo`], orders in Redis, written only if absent;
//! - this file: the two handlers, their errors and the list of the
//!   problems they answer with ([`PROBLEMS`], each a [`ProblemType`],
//!   rendered by the `problem-details` crate).

#![deny(missing_docs, missing_debug_implementations, unreachable_pub)]

mod body;
mod model;
mod repo;

use std::convert::Infallible;
use std::sync::Arc;

use body::{CreatedBody, OrderBody};
use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::tower::Service;
use lambda_http::{Body, BoxFuture, Request, Response};
use problem_details::{Problem, ProblemType};
use redis::aio::ConnectionLike;
use thiserror::Error;

pub use model::{NewOrder, Order, OrderInputError, MAX_PRODUCT_CHARS, MAX_QUANTITY};
pub use repo::{order_key, OrderRepo, RepoError};

/// Request extension: the id the order created by this request must have.
/// Every attempt at one request should carry the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderId(uuid::Uuid);

impl OrderId {
    /// The id built from 128 bits (a UUID of version 8, "custom").
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

/// Request extension: who is asking, as an opaque string (a hash of the
/// caller's identity, say). An order remembers its creator's `Owner`, and
/// is shown only to the same `Owner`: an order created without one, and a
/// request without one, match no one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(String);

impl Owner {
    /// The owner named `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
}

/// Response extension: the request was refused before anything was
/// written, so repeating it (corrected) is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rejected;

/// `415`: the body is not declared as JSON.
const UNSUPPORTED_MEDIA_TYPE: ProblemType = ProblemType {
    status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
    slug: "unsupported-media-type",
    title: "Unsupported media type",
};
/// `415`: the body is compressed or otherwise encoded.
const UNSUPPORTED_CONTENT_ENCODING: ProblemType = ProblemType {
    status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
    slug: "unsupported-content-encoding",
    title: "Unsupported content encoding",
};
/// `400`: the body is not JSON.
const MALFORMED_JSON: ProblemType = ProblemType {
    status: StatusCode::BAD_REQUEST,
    slug: "malformed-json",
    title: "Malformed JSON body",
};
/// `422`: JSON, but not a valid order.
const INVALID_ORDER: ProblemType = ProblemType {
    status: StatusCode::UNPROCESSABLE_ENTITY,
    slug: "invalid-order",
    title: "Invalid order",
};
/// `422`: the order's id already names a different order.
const ORDER_CONFLICT: ProblemType = ProblemType {
    status: StatusCode::UNPROCESSABLE_ENTITY,
    slug: "order-conflict",
    title: "Order conflict",
};
/// `404`: no order has this id.
const ORDER_NOT_FOUND: ProblemType = ProblemType {
    status: StatusCode::NOT_FOUND,
    slug: "order-not-found",
    title: "Order not found",
};
/// `503` with `Retry-After`: Redis failed while reading or writing orders.
const ORDER_STORE_UNAVAILABLE: ProblemType = ProblemType {
    status: StatusCode::SERVICE_UNAVAILABLE,
    slug: "order-store-unavailable",
    title: "Service temporarily unavailable",
};

/// Every problem the orders handlers ([`create_order`], [`get_order`])
/// can answer with: one per [`OrderError`] case.
pub const PROBLEMS: &[ProblemType] = &[
    UNSUPPORTED_MEDIA_TYPE,
    UNSUPPORTED_CONTENT_ENCODING,
    MALFORMED_JSON,
    INVALID_ORDER,
    ORDER_CONFLICT,
    ORDER_NOT_FOUND,
    ORDER_STORE_UNAVAILABLE,
];

/// Why an orders request failed; mapped to HTTP once, in `problem_type`.
#[derive(Debug, Error)]
pub enum OrderError {
    /// The body is not declared as JSON.
    #[error("send the order as JSON with Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body is compressed or otherwise encoded.
    #[error("send the order uncompressed, without Content-Encoding")]
    UnsupportedEncoding,
    /// The payload was refused.
    #[error(transparent)]
    Input(#[from] OrderInputError),
    /// The order's id already names a different order.
    #[error("an order was already created for this request with different content")]
    Conflict,
    /// No order has this id.
    #[error("no order with this id")]
    NotFound,
    /// Redis failed while the order was being written; the client may
    /// retry.
    #[error(transparent)]
    Store(#[from] RepoError),
    /// Redis failed while writing an order its request did not name (no
    /// [`OrderId`]): a retry would be a new order.
    #[error(transparent)]
    StoreUnnamed(RepoError),
    /// Redis failed while an order was being read; the client may retry.
    #[error(transparent)]
    StoreRead(RepoError),
}

impl OrderError {
    /// The kind of problem this error is answered with: one of [`PROBLEMS`].
    pub fn problem_type(&self) -> ProblemType {
        match self {
            Self::UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE,
            Self::UnsupportedEncoding => UNSUPPORTED_CONTENT_ENCODING,
            Self::Input(OrderInputError::Malformed(_)) => MALFORMED_JSON,
            Self::Input(OrderInputError::Invalid(_)) => INVALID_ORDER,
            Self::Conflict => ORDER_CONFLICT,
            Self::NotFound => ORDER_NOT_FOUND,
            Self::Store(_) | Self::StoreUnnamed(_) | Self::StoreRead(_) => ORDER_STORE_UNAVAILABLE,
        }
    }

    /// The problem+json response for this error.
    pub fn to_problem(&self) -> Problem {
        let kind = self.problem_type();
        match self {
            // The detail stays generic: the cause is logged, not sent.
            Self::Store(_) => Problem::new(
                kind,
                "The order may not have been saved. Retry with the same Idempotency-Key \
                 to get its result.",
            )
            .with_retry_after(1),
            Self::StoreUnnamed(_) => Problem::new(
                kind,
                "The order may not have been saved. This request carried no Idempotency-Key, \
                 so a retry of it may create a second order.",
            )
            .with_retry_after(1),
            // A read saves nothing and carries no key.
            Self::StoreRead(_) => Problem::new(
                kind,
                "The order could not be read. Retry the same request after Retry-After.",
            )
            .with_retry_after(1),
            _ => Problem::new(kind, self.to_string()),
        }
    }

    fn into_response(self, type_base: &str) -> Response<Body> {
        if let Self::Store(cause) | Self::StoreUnnamed(cause) | Self::StoreRead(cause) = &self {
            tracing::error!(error = %cause, "order store failed");
        }
        let refused_before_writing = !matches!(
            self,
            Self::Store(_) | Self::StoreUnnamed(_) | Self::StoreRead(_) | Self::NotFound
        );
        let mut response = self.to_problem().into_response(type_base);
        if refused_before_writing {
            response.extensions_mut().insert(Rejected);
        }
        response
    }
}

/// The `201` for a created (or found) order. A pure function of the order,
/// so every attempt at one request answers the same bytes.
fn created(order: &Order) -> Response<Body> {
    let mut response = json_response(StatusCode::CREATED, &CreatedBody::from(order));
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", order.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    // These bodies are plain structs of strings and numbers: serialising
    // them cannot fail.
    let text = serde_json::to_string(body).unwrap_or_default();
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Whether a `Content-Type` value names JSON (`application/json`, `*/*+json`).
fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
        || (media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Handles `POST /orders`: validate, store once, answer `201` with
/// `Location`.
pub async fn create_order<C>(repo: &OrderRepo<C>, req: &Request, type_base: &str) -> Response<Body>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    match try_create(repo, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(type_base),
    }
}

async fn try_create<C>(repo: &OrderRepo<C>, req: &Request) -> Result<Response<Body>, OrderError>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let headers = req.headers();
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(OrderError::UnsupportedEncoding);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !content_type.is_some_and(is_json) {
        return Err(OrderError::UnsupportedMediaType);
    }
    let new = NewOrder::try_from(req.body().as_ref())?;
    let named = req.extensions().get::<OrderId>();
    let id = named.map_or_else(uuid::Uuid::now_v7, |id| id.0);
    let order = Order::new(id.to_string(), new.clone());
    let owner = req.extensions().get::<Owner>().map(|o| o.0.as_str());
    let inserted = repo
        .insert_once(&order, owner)
        .await
        .map_err(|e| match named {
            Some(_) => OrderError::Store(e),
            None => OrderError::StoreUnnamed(e),
        });
    match inserted? {
        None => Ok(created(&order)),
        Some(existing) if existing.matches(&new) => Ok(created(&existing)),
        Some(_) => Err(OrderError::Conflict),
    }
}

/// Handles `GET /orders/{id}` for `asker`: `200` with the order, or `404`
/// when there is none, or it belongs to someone else, or to no one, or
/// `asker` is no one (not `403`: that would tell a stranger the order
/// exists).
pub async fn get_order<C>(
    repo: &OrderRepo<C>,
    id: &str,
    asker: Option<&Owner>,
    type_base: &str,
) -> Response<Body>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    // Ids are UUIDs; anything else cannot exist, so Redis is not asked.
    if uuid::Uuid::try_parse(id).is_err() {
        return OrderError::NotFound.into_response(type_base);
    }
    match repo.get(id).await {
        // Both must be someone: an order without an owner (or a request
        // without one) is no one's to see.
        Ok(Some((order, Some(owner)))) if asker.is_some_and(|a| a.0 == owner) => {
            json_response(StatusCode::OK, &OrderBody::from(&order))
        }
        Ok(_) => OrderError::NotFound.into_response(type_base),
        Err(e) => OrderError::StoreRead(e).into_response(type_base),
    }
}

/// [`create_order`] as a tower service, so layers can wrap it.
#[derive(Clone, Debug)]
pub struct CreateOrder<C> {
    repo: OrderRepo<C>,
    type_base: Arc<str>,
}

impl<C> CreateOrder<C> {
    /// The create handler over `repo`; its problems' `type` URIs start
    /// with `type_base`.
    pub fn new(repo: OrderRepo<C>, type_base: &str) -> Self {
        Self {
            repo,
            type_base: Arc::from(type_base),
        }
    }
}

impl<C> Service<Request> for CreateOrder<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
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
        let this = self.clone();
        Box::pin(async move { Ok(create_order(&this.repo, &req, &this.type_base).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_before_writing_is_marked_rejected_and_store_failures_are_not() {
        let refusals = [
            OrderError::UnsupportedMediaType,
            OrderError::UnsupportedEncoding,
            OrderError::Input(OrderInputError::Invalid("x".into())),
            OrderError::Input(OrderInputError::Malformed("x".into())),
            OrderError::Conflict,
        ];
        for error in refusals {
            let response = error.into_response("urn:t:");
            assert!(response.extensions().get::<Rejected>().is_some());
            assert!(response.status().is_client_error());
        }
        let failed = OrderError::Store(RepoError::Timeout(std::time::Duration::ZERO));
        let response = failed.into_response("urn:t:");
        assert_eq!(response.status(), 503);
        assert!(response.extensions().get::<Rejected>().is_none());
    }

    /// One error of every kind. The match has no wildcard arm: a new
    /// variant does not compile until it is added here, and so checked
    /// against the list.
    fn every_error() -> Vec<OrderError> {
        let errors = vec![
            OrderError::UnsupportedMediaType,
            OrderError::UnsupportedEncoding,
            OrderError::Input(OrderInputError::Malformed("x".into())),
            OrderError::Input(OrderInputError::Invalid("x".into())),
            OrderError::Conflict,
            OrderError::NotFound,
            OrderError::Store(RepoError::Timeout(std::time::Duration::ZERO)),
            OrderError::StoreUnnamed(RepoError::Timeout(std::time::Duration::ZERO)),
            OrderError::StoreRead(RepoError::Timeout(std::time::Duration::ZERO)),
        ];
        for error in &errors {
            match error {
                OrderError::UnsupportedMediaType
                | OrderError::UnsupportedEncoding
                | OrderError::Input(OrderInputError::Malformed(_))
                | OrderError::Input(OrderInputError::Invalid(_))
                | OrderError::Conflict
                | OrderError::NotFound
                | OrderError::Store(_)
                | OrderError::StoreUnnamed(_)
                | OrderError::StoreRead(_) => {}
            }
        }
        errors
    }

    #[test]
    fn every_error_maps_into_the_list_and_every_listed_problem_is_answered() {
        let mut answered = std::collections::HashSet::new();
        for error in every_error() {
            let kind = error.problem_type();
            assert!(PROBLEMS.contains(&kind), "{error}: {kind:?} is not listed");
            assert_eq!(error.to_problem().kind(), kind);
            let response = error.into_response("urn:t:");
            let json: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
            assert_eq!(json["title"], kind.title);
            answered.insert(kind.slug);
        }
        for kind in PROBLEMS {
            assert!(
                answered.contains(kind.slug),
                "{} is never answered",
                kind.slug
            );
        }
        let slugs: std::collections::HashSet<_> = PROBLEMS.iter().map(|k| k.slug).collect();
        assert_eq!(slugs.len(), PROBLEMS.len(), "slugs are unique");
    }

    #[test]
    fn order_ids_from_bytes_are_stable_uuids() {
        let a = OrderId::from_bytes([7; 16]);
        assert_eq!(a, OrderId::from_bytes([7; 16]));
        assert_ne!(a, OrderId::from_bytes([8; 16]));
        assert_eq!(a.0.get_version_num(), 8);
    }

    #[test]
    fn json_media_types_are_recognised() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(ct), "{ct}");
        }
        for ct in ["text/plain", "application/jsonx", "+json"] {
            assert!(!is_json(ct), "{ct}");
        }
    }
}
