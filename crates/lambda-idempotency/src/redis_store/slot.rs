//! [`Slot`]: the connection an instance's commands go to, numbered, and
//! when it last answered.
//!
//! The number (the generation) lets every command that saw one connection
//! fail give it up once, not once each, and lets a caller ask that a
//! command go to the same connection as an earlier one or nowhere
//! ([`super::RedisConnection::pinned_to`]). When it last answered tells a
//! connection that is useless (nothing has come back for a whole timeout)
//! from one that is only slow (other replies keep coming, say behind a
//! blocking `WAIT`): only the first is given up on a timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

pub(super) struct Slot<T> {
    current: RwLock<(u64, T)>,
    /// The origin of `heard`.
    origin: Instant,
    /// When the connection in use last answered, in ms since `origin` (or
    /// was put in place: a fresh connection gets a whole timeout).
    heard: AtomicU64,
}

impl<T: Clone> Slot<T> {
    pub(super) fn new(conn: T) -> Self {
        Self {
            current: RwLock::new((0, conn)),
            origin: Instant::now(),
            heard: AtomicU64::new(0),
        }
    }

    /// The connection in use and its generation.
    pub(super) fn get(&self) -> (u64, T) {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The generation of the connection in use.
    pub(super) fn generation(&self) -> u64 {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// Notes that a reply came back on connection `generation`; a late
    /// reply on a replaced one says nothing of the one in use.
    pub(super) fn heard(&self, generation: u64) {
        if self.generation() == generation {
            self.heard.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Puts `fresh()` in place of connection `generation`, unless it was
    /// replaced already or, given `quiet`, it answered within that time.
    pub(super) fn replace(
        &self,
        generation: u64,
        quiet: Option<Duration>,
        fresh: impl FnOnce() -> Option<T>,
    ) -> bool {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.0 != generation {
            return false;
        }
        if let Some(quiet) = quiet {
            let silent = self
                .now_ms()
                .saturating_sub(self.heard.load(Ordering::Relaxed));
            if u128::from(silent) < quiet.as_millis() {
                return false;
            }
        }
        let Some(conn) = fresh() else { return false };
        *current = (generation + 1, conn);
        self.heard.store(self.now_ms(), Ordering::Relaxed);
        true
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_is_replaced_once() {
        let slot = Slot::new("a");
        assert!(slot.replace(0, None, || Some("b")));
        assert!(!slot.replace(0, None, || Some("c")), "already replaced");
        assert_eq!(slot.get(), (1, "b"));
    }

    #[test]
    fn a_connection_that_answered_within_the_quiet_time_is_kept() {
        let slot = Slot::new("a");
        slot.heard(0);
        assert!(!slot.replace(0, Some(Duration::from_secs(60)), || Some("b")));
        assert!(slot.replace(0, Some(Duration::ZERO), || Some("b")));
        assert_eq!(slot.generation(), 1);
    }

    #[test]
    fn a_late_reply_on_a_replaced_connection_does_not_keep_its_successor() {
        let slot = Slot::new("a");
        assert!(slot.replace(0, None, || Some("b")));
        // Far in the past, as if `b` had been silent since.
        slot.heard.store(0, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        slot.heard(0);
        assert!(slot.replace(1, Some(Duration::from_millis(5)), || Some("c")));
    }
}
