//! [`ExecutionId`]: the identity of "the execution of this key", handed to
//! the wrapped handler in the request's extensions.
//!
//! A record can be claimed more than once for the same key: after its
//! lease ran out (a crashed or frozen invocation), after a completion that
//! could not be stored, or after Redis lost the record. Each of those
//! claims gets the same `ExecutionId`, because it is derived from the
//! record key (caller scope, method, path and `Idempotency-Key`) and from
//! nothing that changes between attempts.
//!
//! That makes the handler's own side effects idempotent, which is the only
//! way to be exactly-once when a process can die between its side effect
//! and the layer's completion: name the effect after the `ExecutionId`
//! (an order id, a payment provider's idempotency key, a row's primary key)
//! and write it only if absent. A second attempt then finds what the first
//! one wrote and answers with it instead of doing it again.

use std::fmt;

use sha2::{Digest, Sha256};

/// A stable identity for the execution of one idempotency key.
///
/// It is derived (SHA-256) from the record key, so it is not a secret:
/// whoever knows a caller's scope and `Idempotency-Key` can compute it. Use
/// it to name side effects, not to authorise access to them.
///
/// Present in `request.extensions()` whenever the layer runs the handler
/// under a key; absent for requests the layer passes through.
///
/// ```
/// # use lambda_http::{Body, Request, Response};
/// use lambda_idempotency::ExecutionId;
///
/// async fn handler(req: Request) -> Result<Response<Body>, lambda_http::Error> {
///     let id = req
///         .extensions()
///         .get::<ExecutionId>()
///         .map(ExecutionId::to_string) // 32 lower-case hex digits
///         .unwrap_or_else(|| "unprotected".to_owned());
///     Ok(Response::new(Body::from(id)))
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExecutionId([u8; 16]);

impl ExecutionId {
    /// Derives the id from a record key's hash (domain-separated, so the id
    /// does not reveal the record key).
    pub(crate) fn derive(record_hash: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(b"lambda-idempotency execution id\0")
            .chain_update(record_hash.as_bytes())
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Self(id)
    }

    /// The 128 bits of the id, e.g. to build a UUID from.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for ExecutionId {
    /// 32 lower-case hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::fingerprint::hex(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_record_key_always_gives_the_same_id_and_others_differ() {
        let a = ExecutionId::derive("aa");
        assert_eq!(a, ExecutionId::derive("aa"));
        assert_ne!(a, ExecutionId::derive("ab"));
        assert_eq!(a.to_string().len(), 32);
    }
}
