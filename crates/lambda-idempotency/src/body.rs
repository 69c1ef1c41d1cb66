//! [`RequestBody`]: the request bodies the layer can wrap a service over.
//!
//! The layer reads a covered request's whole body (its size is checked and
//! it is fingerprinted before the handler runs), so it works on
//! `lambda_http`'s in-memory [`Body`]; a service over another body type
//! (axum's, inside a `Router`) has its body read into one and handed back
//! in its own type. Under `lambda_http` a body is already in memory, so
//! reading it never waits and never fails.

use std::future::Future;

use lambda_http::Body;

/// A request body type the layer can read whole and hand back.
///
/// Implemented for `lambda_http`'s [`Body`] (a no-op) and, with the `axum`
/// feature, for axum's body (`axum::body::Body`), so that the layer can sit
/// in an axum `Router` (`route_layer`) that `lambda_http::run` serves.
pub trait RequestBody: Sized + Send + 'static {
    /// The whole body, in memory.
    fn read(self) -> impl Future<Output = Result<Body, lambda_http::Error>> + Send;

    /// The body to hand the wrapped service: the one [`RequestBody::read`]
    /// gave.
    fn from_read(body: Body) -> Self;
}

impl RequestBody for Body {
    async fn read(self) -> Result<Body, lambda_http::Error> {
        Ok(self)
    }

    fn from_read(body: Body) -> Self {
        body
    }
}

#[cfg(feature = "axum")]
impl RequestBody for axum_core::body::Body {
    async fn read(self) -> Result<Body, lambda_http::Error> {
        use http_body_util::BodyExt;
        let bytes = self.collect().await?.to_bytes();
        Ok(match bytes.len() {
            0 => Body::Empty,
            _ => Body::Binary(bytes.to_vec()),
        })
    }

    fn from_read(body: Body) -> Self {
        match body {
            Body::Empty => Self::empty(),
            Body::Text(text) => Self::from(text),
            Body::Binary(bytes) => Self::from(bytes),
            other => Self::from(other.to_vec()),
        }
    }
}
