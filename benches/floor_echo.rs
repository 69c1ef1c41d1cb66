//! Benchmark floor `floor-echo`: a `lambda_http` function that does nothing.
//! Its per-invocation time is the cost of the runtime itself, which the
//! benchmark subtracts from every path of the real function.
//!
//! Built like the real binary (current-thread tokio, no tracing output) so
//! that the floor stands for the limit, not for a handicap. A dev-only
//! example: never part of the deployed artifact.

use lambda_http::{service_fn, Body, Error, Request, Response};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_req: Request| async {
        Ok::<_, Error>(Response::new(Body::Text("ok".to_owned())))
    }))
    .await
}
