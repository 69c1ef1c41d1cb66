//! [`Freezer`]: the process side of a freeze.
//!
//! Holding traffic in the proxy freezes what Redis sees of a process; the
//! process itself must stop too, or its timers would fire on time and it
//! would give up on a command a real frozen process would still be waiting
//! for. A frozen future is simply not polled until thawed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::lock;

/// Freezes futures from outside, as `SIGSTOP` freezes a process: a future
/// wrapped by [`Freezer::wrap`] is not polled while frozen. Tasks it
/// spawned (a Redis connection's reader) keep running.
#[derive(Clone, Default)]
pub struct Freezer(Arc<(AtomicBool, Mutex<Option<Waker>>)>);

impl Freezer {
    /// Stops polling the wrapped future.
    pub fn freeze(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
    }

    /// Polls it again (its timers that passed fire now).
    pub fn thaw(&self) {
        self.0 .0.store(false, Ordering::SeqCst);
        if let Some(waker) = lock(&self.0 .1).take() {
            waker.wake();
        }
    }

    /// `future`, frozen and thawed by this freezer.
    pub fn wrap<F: Future>(&self, future: F) -> Freezable<F> {
        Freezable {
            inner: Box::pin(future),
            freezer: self.clone(),
        }
    }
}

/// A future under a [`Freezer`].
pub struct Freezable<F> {
    inner: Pin<Box<F>>,
    freezer: Freezer,
}

impl<F: Future> Future for Freezable<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let frozen = &self.freezer.0 .0;
        if frozen.load(Ordering::SeqCst) {
            *lock(&self.freezer.0 .1) = Some(cx.waker().clone());
            // Thawed in between: do not sleep through the wake-up.
            if frozen.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        self.inner.as_mut().poll(cx)
    }
}
