//! The key mix of the Managed Instances cache measurement: many distinct
//! orders, each retried a few times, and the clients that send it.
//!
//! Under Managed Instances one process serves many callers, so it sees
//! many keys, and a retry comes long after its first attempt as often as
//! soon after it. Each order is retried one to three times; each retry
//! comes 64 to 32,768 requests after the attempt before it, spread
//! log-uniformly (as exponential back-off spreads retries over time). The
//! mix is generated from a fixed seed, so every configuration gets the same
//! requests in the same order; a bounded cache then keeps the retries of
//! recent orders and evicts those of old ones.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::fuzz::Rng;
use testkit::harness::Harness;

use super::{order, DEADLINE, TEA};

/// Clients, and `AWS_LAMBDA_MAX_CONCURRENCY`.
pub const CONCURRENCY: usize = 8;
/// Timed rounds per configuration, interleaved between configurations.
pub const ROUNDS: usize = 5;
/// Distinct orders in the mix.
const ORDERS: u32 = 10_000;
/// Bounds of the gap before a retry, in requests.
const MIN_GAP: f64 = 64.0;
const MAX_GAP: f64 = 32_768.0;

/// One request of the mix: which order, and whether it is a retry.
#[derive(Clone, Copy)]
pub struct Request {
    order: u32,
    retry: bool,
}

/// The mix: every order at its place (one every three requests, about
/// the mix's rate of new orders), its retries after it, cut where the
/// last order is placed (retries due later are left out, so the mix does
/// not end on a tail of retries with no new orders to evict them).
pub fn generate() -> Vec<Request> {
    let mut rng = Rng::seeded(0x006b_6579_2d6d_6978);
    let mut placed = Vec::new();
    for order in 0..ORDERS {
        let mut at = f64::from(order) * 3.0;
        placed.push((
            at,
            Request {
                order,
                retry: false,
            },
        ));
        for _ in 0..1 + rng.below(3) {
            let uniform = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            at += MIN_GAP * (MAX_GAP / MIN_GAP).powf(uniform);
            placed.push((at, Request { order, retry: true }));
        }
    }
    let end = f64::from(ORDERS - 1) * 3.0;
    placed.retain(|(at, _)| *at <= end);
    placed.sort_by(|a, b| a.0.total_cmp(&b.0));
    placed.into_iter().map(|(_, request)| request).collect()
}

/// What clients saw over part of the mix.
#[derive(Default)]
pub struct MixRun {
    /// Requests sent: new orders and retries.
    pub sent: [usize; 2],
    /// Durations of the requests that ran the handler (`201`, not a
    /// replay) and of those that were replayed.
    pub executed: Vec<Duration>,
    pub replayed: Vec<Duration>,
    /// `409`s: the key's first request to arrive was still running.
    pub conflicts: usize,
    /// `503`s: Redis did not answer within `REDIS_TIMEOUT_MS`.
    pub unavailable: usize,
    /// Requests a later request of the same order overtook (a thread of
    /// the function stalled while seven others served the mix on): a new
    /// order replayed or refused with `409`, or a retry that ran the
    /// handler.
    pub overtaken: usize,
    pub wall: Duration,
}

impl MixRun {
    /// Requests sent.
    pub fn requests(&self) -> usize {
        self.sent[0] + self.sent[1]
    }

    /// Retries sent.
    pub fn retries(&self) -> usize {
        self.sent[1]
    }

    /// Adds another part's figures to these.
    pub fn add(&mut self, other: MixRun) {
        self.sent = [self.sent[0] + other.sent[0], self.sent[1] + other.sent[1]];
        self.executed.extend(other.executed);
        self.replayed.extend(other.replayed);
        self.conflicts += other.conflicts;
        self.unavailable += other.unavailable;
        self.overtaken += other.overtaken;
        self.wall += other.wall;
    }

    /// Files one answer to `request`.
    fn record(&mut self, request: Request, status: u16, replayed: bool, took: Duration) {
        self.sent[usize::from(request.retry)] += 1;
        match (status, replayed) {
            (201, false) => self.executed.push(took),
            (201, true) => self.replayed.push(took),
            (409, _) => self.conflicts += 1,
            (503, _) => self.unavailable += 1,
            _ => unreachable!("checked by the caller"),
        }
        let in_order = match (request.retry, status, replayed) {
            (false, 201, replayed) => !replayed,
            (false, 409, _) => false,
            (true, 201, replayed) => replayed,
            _ => true,
        };
        self.overtaken += usize::from(!in_order);
    }
}

/// `CONCURRENCY` clients sending `mix[range]` to `lambda`, each taking the
/// next request when its last is answered, with keys `<prefix>-<order>`.
/// Every answer must be one a client of the mix can get: `201` (executed
/// or replayed), `409` or `503`; anything else stops the run.
pub async fn run(
    lambda: &Arc<Harness>,
    mix: &Arc<Vec<Request>>,
    range: Range<usize>,
    prefix: &str,
) -> MixRun {
    let next = Arc::new(AtomicUsize::new(range.start));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CONCURRENCY {
        let (lambda, mix, next) = (Arc::clone(lambda), Arc::clone(mix), Arc::clone(&next));
        let (end, prefix) = (range.end, prefix.to_owned());
        clients.push(tokio::spawn(async move {
            let mut seen = MixRun::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return seen;
                }
                let request = mix[i];
                let event = order(&format!("{prefix}-{}", request.order), TEA);
                let outcome = lambda.invoke(0, &event, DEADLINE).await;
                let response = outcome.response();
                assert!(
                    matches!(response.status, 201 | 409 | 503),
                    "request {i} of the mix: {:?}",
                    response.raw
                );
                let took = outcome.elapsed().expect("elapsed");
                seen.record(request, response.status, response.replayed(), took);
            }
        }));
    }
    let mut all = MixRun::default();
    for client in clients {
        all.add(client.await.expect("client"));
    }
    all.wall = started.elapsed();
    all
}
