//! [`FaultProxy`]: a deterministic fault-injecting TCP proxy in front of a
//! real `redis-server`.
//!
//! It reads the RESP commands each client sends (arrays of bulk strings,
//! pipelines included, and inline commands), numbers them per proxy in the
//! order they arrive (1, 2, …), keeps a log of them, and applies one-shot
//! [`Rule`]s: at a command picked by number or by content ([`At`]), it can
//! - notify the test (a channel), so it can act at exactly that moment,
//!   e.g. abort the in-process request as a killed process would;
//! - hold that command and everything after it, on every connection and in
//!   both directions, until [`FaultProxy::release`] (a frozen process, as
//!   Redis sees it) or [`FaultProxy::kill_connections`] (the process died
//!   before sending it);
//! - apply a [`Fault`]: drop the connection before forwarding the command,
//!   forward it and drop the connection instead of delivering its reply
//!   (applied, reply lost), or deliver its reply late.
//!
//! Replies are matched to commands by order (one reply per command, as in
//! RESP2; RESP3 push frames pass straight through). Nothing is mocked: every
//! forwarded byte reaches a real server, and [`FaultProxy::retarget`] points
//! new connections at another one (a failover).
//!
//! [`Freezer`] is the process side of a freeze: a future wrapped by
//! [`Freezer::wrap`] is not polled while frozen, so its timers only fire
//! once thawed, as in a process stopped and continued.
//!
//! # Layout
//! - this file: [`FaultProxy`], the handle a test holds, and the state it
//!   shares with the connection tasks: the armed rules, the command log,
//!   the counters, the hold and the connections' generation;
//! - `command`: [`Command`], and RESP framing in both directions;
//! - `rules`: [`At`], [`Fault`], [`Rule`] and [`Arrivals`], and how an
//!   armed rule decides it fires;
//! - `connection`: the accept loop and the three tasks of each proxied
//!   connection, which carry out a command's fault on its reply;
//! - `freezer`: [`Freezer`], the process side of a freeze.

mod command;
mod connection;
mod freezer;
mod rules;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use command::Command;
pub use freezer::{Freezable, Freezer};
pub use rules::{Arrivals, At, Fault, Rule};

use connection::accept;
use rules::Armed;

struct Shared {
    target: Mutex<SocketAddr>,
    rules: Mutex<Vec<Armed>>,
    log: Mutex<Vec<Command>>,
    numbered: AtomicU64,
    connections: AtomicU64,
    open: AtomicUsize,
    frozen: watch::Sender<bool>,
    generation: watch::Sender<u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Numbers and logs `args`, and fires the rules that match it.
    fn arrive(&self, conn: u64, args: Vec<Vec<u8>>) -> Option<Fault> {
        let command = Command {
            n: self.numbered.fetch_add(1, Ordering::SeqCst) + 1,
            conn,
            args,
        };
        lock(&self.log).push(command.clone());
        let (mut hold, mut fault, mut then) = (false, None, Vec::new());
        let mut notify = Vec::new();
        let mut rules = lock(&self.rules);
        rules.retain_mut(|armed| {
            if !armed.fires_at(&command) {
                return true;
            }
            notify.extend(armed.rule.notify.clone());
            hold |= armed.rule.hold;
            fault = fault.or(armed.rule.fault);
            then.extend(armed.rule.then.take());
            false
        });
        rules.extend(then.into_iter().map(|rule| Armed {
            rule: *rule,
            seen: 0,
        }));
        drop(rules);
        if hold {
            self.frozen.send_replace(true);
        }
        // Only once frozen: a test that releases the hold as soon as it is
        // told must find it set.
        for tx in notify {
            let _ = tx.send(command.clone());
        }
        fault
    }
}

/// A running fault proxy; dropping it closes the listener and every
/// connection.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `target` on a free port of 127.0.0.1. Must be
    /// called inside a tokio runtime.
    pub fn start(target: SocketAddr) -> Self {
        let (listener, port) = crate::proxy::loopback_listener("FaultProxy");
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            numbered: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            frozen: watch::channel(false).0,
            generation: watch::channel(0).0,
        });
        let task = tokio::spawn(accept(listener, Arc::clone(&shared)));
        Self { port, shared, task }
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`: the proxy as a Redis URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Adds a one-shot rule.
    pub fn add(&self, rule: Rule) {
        lock(&self.shared.rules).push(Armed { rule, seen: 0 });
    }

    /// Applies `fault` at `at`.
    pub fn inject(&self, at: At, fault: Fault) {
        self.add(Rule::at(at).fault(fault));
    }

    /// Holds the traffic from the command at `at` on, and notifies.
    pub fn hold_at(&self, at: At) -> Arrivals {
        let (rule, arrivals) = Rule::at(at).hold().notify();
        self.add(rule);
        arrivals
    }

    /// Notifies when the command at `at` arrives; it then goes on as usual.
    pub fn notify_at(&self, at: At) -> Arrivals {
        let (rule, arrivals) = Rule::at(at).notify();
        self.add(rule);
        arrivals
    }

    /// Removes every rule that has not fired.
    pub fn clear_rules(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Holds all traffic from now on, as if the client process froze.
    pub fn freeze(&self) {
        self.shared.frozen.send_replace(true);
    }

    /// Whether traffic is held.
    pub fn is_frozen(&self) -> bool {
        *self.shared.frozen.borrow()
    }

    /// Lets held traffic go on (the held command first, with its fault).
    pub fn release(&self) {
        self.shared.frozen.send_replace(false);
    }

    /// Closes every open connection at once, dropping what is held or in
    /// flight in the proxy (the client process died), and lifts a hold.
    pub fn kill_connections(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
        self.shared.frozen.send_replace(false);
    }

    /// Points new connections at `target` (e.g. a promoted replica).
    /// Open connections stay with the old server until they close.
    pub fn retarget(&self, target: SocketAddr) {
        *lock(&self.shared.target) = target;
    }

    /// Every command received so far, in arrival order.
    pub fn commands(&self) -> Vec<Command> {
        lock(&self.shared.log).clone()
    }

    /// How many commands arrived so far (the last one's number).
    pub fn received(&self) -> u64 {
        self.shared.numbered.load(Ordering::SeqCst)
    }

    /// The proxied connections that commands arrived on, each once, in the
    /// order they were first used (numbered from 1, see [`Command::conn`]).
    pub fn connections_used(&self) -> Vec<u64> {
        let mut used = Vec::new();
        for command in self.commands() {
            if !used.contains(&command.conn) {
                used.push(command.conn);
            }
        }
        used
    }

    /// Connections currently open through the proxy.
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns every connection task: aborting it drops them.
        self.task.abort();
    }
}
