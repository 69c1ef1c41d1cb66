//! RFC 9457 `application/problem+json` answers for `lambda_http`
//! functions, shared by the idempotency layer, the order handlers and the
//! function's router so that every error body has one shape.
//!
//! - [`ProblemType`]: one kind of problem (slug, status, title). Each
//!   crate that answers with problems keeps its own list of them (a
//!   `PROBLEMS` constant), which a function can check its documents
//!   against.
//! - [`Problem`]: one occurrence, rendered as a response whose `type` is a
//!   configured base followed by the slug (`problem.rs`).
//! - [`excerpt`]: the one way an answer may quote client input, short and
//!   escaped (`excerpt.rs`).
//!
//! The body has exactly the members `type`, `title`, `status` and
//! `detail`, in that order; a problem carries `Retry-After` and `Allow`
//! only when its maker asks for them. No other member or header is ever
//! added, so what a detail says is all an answer can leak.
#![deny(missing_docs, missing_debug_implementations, unreachable_pub)]

/// The README's example, compiled and run as a doctest so that it cannot
/// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod excerpt;
mod problem;

pub use excerpt::{excerpt, EXCERPT_CHARS};
pub use problem::{Problem, ProblemType, PROBLEM_JSON};
