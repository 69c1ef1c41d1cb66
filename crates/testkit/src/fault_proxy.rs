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

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// One command a client sent through the proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    /// Its number on this proxy, from 1, in arrival order.
    pub n: u64,
    /// The proxied connection it came on (from 1, per proxy).
    pub conn: u64,
    /// Its arguments, the command name first.
    pub args: Vec<Vec<u8>>,
}

impl Command {
    /// The command name in upper case; for container commands (`SCRIPT`,
    /// `CLIENT`, `CONFIG`, `CLUSTER`, `OBJECT`) with the subcommand, e.g.
    /// `SCRIPT LOAD`.
    pub fn name(&self) -> String {
        let word = |i: usize| {
            self.args
                .get(i)
                .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
                .unwrap_or_default()
        };
        let name = word(0);
        match name.as_str() {
            "SCRIPT" | "CLIENT" | "CONFIG" | "CLUSTER" | "OBJECT" => format!("{name} {}", word(1)),
            _ => name,
        }
    }

    /// Argument `i` (0 is the name), if present.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        self.args.get(i).map(Vec::as_slice)
    }

    /// The key of a keyed command: argument 1 for most, argument 3 for
    /// `EVAL`/`EVALSHA` with at least one key.
    pub fn key(&self) -> Option<String> {
        let at = match self.name().as_str() {
            "EVAL" | "EVALSHA" if self.arg(2) != Some(b"0") => 3,
            "EVAL" | "EVALSHA" => return None,
            _ => 1,
        };
        self.arg(at)
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} (conn {}) {}", self.n, self.conn, self.name())
    }
}

type Filter = Arc<dyn Fn(&Command) -> bool + Send + Sync>;

/// Which command a [`Rule`] fires at.
#[derive(Clone)]
pub enum At {
    /// The command with this number on the proxy (see [`Command::n`]).
    Nth(u64),
    /// The `k`-th command (from 1) that passes the filter, counted from
    /// when the rule was added.
    Kth {
        /// Which matching command.
        k: u32,
        /// What a command must look like to count.
        filter: Filter,
    },
}

impl At {
    /// The command numbered `n`.
    pub fn nth(n: u64) -> Self {
        Self::Nth(n)
    }

    /// The next command whose [`Command::name`] is `name` (case-insensitive).
    pub fn named(name: &str) -> Self {
        let name = name.to_ascii_uppercase();
        Self::matching(move |c| c.name() == name)
    }

    /// The next command passing `filter`.
    pub fn matching(filter: impl Fn(&Command) -> bool + Send + Sync + 'static) -> Self {
        Self::Kth {
            k: 1,
            filter: Arc::new(filter),
        }
    }

    /// The next command of any kind.
    pub fn next() -> Self {
        Self::matching(|_| true)
    }

    /// The `k`-th matching command instead of the first (no effect on
    /// [`At::Nth`]).
    pub fn occurrence(self, k: u32) -> Self {
        match self {
            Self::Kth { filter, .. } => Self::Kth { k, filter },
            nth => nth,
        }
    }
}

/// What happens to the command a [`Rule`] fires at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection is closed before the command is forwarded: it is never
    /// applied. Replies to earlier commands are delivered first.
    DropBeforeForward,
    /// The command is forwarded and applied; its reply is swallowed and the
    /// connection closed. Nothing after it on that connection is forwarded.
    LoseReply,
    /// The reply (and, in order, every later reply on the connection) is
    /// delivered this long after it arrived.
    DelayReply(Duration),
}

/// A one-shot rule: where it fires, whether it notifies and holds, and its
/// fault. Built with [`Rule::at`] and added with [`FaultProxy::add`].
pub struct Rule {
    at: At,
    hold: bool,
    fault: Option<Fault>,
    notify: Option<mpsc::UnboundedSender<Command>>,
    then: Option<Box<Rule>>,
}

impl Rule {
    /// A rule firing at `at` that does nothing yet.
    pub fn at(at: At) -> Self {
        Self {
            at,
            hold: false,
            fault: None,
            notify: None,
            then: None,
        }
    }

    /// Arms `next` when this rule fires; `next` counts commands from the
    /// one after (e.g. `At::next()` is the command that follows).
    pub fn and_then(mut self, next: Rule) -> Self {
        self.then = Some(Box::new(next));
        self
    }

    /// Applies `fault` to the command (after a hold is released).
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// Holds the command and all later traffic until released.
    pub fn hold(mut self) -> Self {
        self.hold = true;
        self
    }

    /// Sends the command on the returned channel when it arrives (before it
    /// is held or forwarded).
    pub fn notify(mut self) -> (Self, Arrivals) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.notify = Some(tx);
        (self, Arrivals(rx))
    }
}

/// Notifications of a [`Rule`] (see [`Rule::notify`]).
pub struct Arrivals(mpsc::UnboundedReceiver<Command>);

impl Arrivals {
    /// The command the rule fired at, once it arrives, or `None` after
    /// `within`.
    pub async fn wait(&mut self, within: Duration) -> Option<Command> {
        tokio::time::timeout(within, self.0.recv())
            .await
            .ok()
            .flatten()
    }

    /// The command, if the rule already fired.
    pub fn fired(&mut self) -> Option<Command> {
        self.0.try_recv().ok()
    }
}

struct Armed {
    rule: Rule,
    seen: u32,
}

impl Armed {
    fn fires_at(&mut self, command: &Command) -> bool {
        match &self.rule.at {
            At::Nth(n) => *n == command.n,
            At::Kth { k, filter } => {
                let matches = filter(command);
                if matches {
                    self.seen += 1;
                }
                matches && self.seen == *k
            }
        }
    }
}

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
        let mut rules = lock(&self.rules);
        rules.retain_mut(|armed| {
            if !armed.fires_at(&command) {
                return true;
            }
            if let Some(tx) = &armed.rule.notify {
                let _ = tx.send(command.clone());
            }
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
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port for the fault proxy");
        let port = listener.local_addr().expect("fault proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("make the fault proxy listener non-blocking");
        let listener = TcpListener::from_std(listener)
            .expect("register the fault proxy listener (FaultProxy::start needs a tokio runtime)");
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

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
                    shared.open.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(connection(client, id, Arc::clone(&shared)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What becomes of the reply to one forwarded command (or of the
/// connection, at that point of the command stream).
#[derive(Debug, Clone, Copy)]
enum Plan {
    Deliver,
    Delay(Duration),
    Lose,
    /// Close once every earlier reply is delivered.
    CloseHere,
}

/// What the client-side writer does next.
enum Out {
    Data(Instant, Vec<u8>),
    Close,
}

/// A connection's end: any of its three tasks can end it, and the proxy
/// can end all of them (a new generation).
#[derive(Clone)]
struct End {
    closed: Arc<watch::Sender<bool>>,
    generation: watch::Receiver<u64>,
    born: u64,
}

impl End {
    fn close(&self) {
        self.closed.send_replace(true);
    }

    fn is_over(&self) -> bool {
        *self.closed.borrow() || *self.generation.borrow() != self.born
    }

    async fn wait(&self) {
        let mut closed = self.closed.subscribe();
        let mut generation = self.generation.clone();
        let born = self.born;
        tokio::select! {
            _ = closed.wait_for(|c| *c) => {}
            _ = generation.wait_for(|g| *g != born) => {}
        }
    }
}

struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(client: TcpStream, id: u64, shared: Arc<Shared>) {
    let _open = OpenGuard(Arc::clone(&shared));
    let target = *lock(&shared.target);
    // The target refusing: close the client's connection, as a dead server
    // would.
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let generation = shared.generation.subscribe();
    let born = *generation.borrow();
    let end = End {
        closed: Arc::new(watch::channel(false).0),
        generation,
        born,
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let (plans, planned) = mpsc::unbounded_channel();
    let (out, outgoing) = mpsc::unbounded_channel();
    let frozen = shared.frozen.subscribe();
    tokio::join!(
        requests(client_read, server_write, plans, id, &shared, end.clone()),
        replies(server_read, planned, out, end.clone()),
        deliver(client_write, outgoing, frozen, end),
    );
}

/// Client → server: parse, number, apply rules, forward.
async fn requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    plans: mpsc::UnboundedSender<Plan>,
    conn: u64,
    shared: &Shared,
    end: End,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut chunk) => match read {
                Ok(n @ 1..) => n,
                // The client closed: so does the server side.
                _ => break,
            },
            () = end.wait() => return,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some((len, args)) = parse_command(&buf) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            let fault = shared.arrive(conn, args);
            let mut frozen = shared.frozen.subscribe();
            tokio::select! {
                _ = frozen.wait_for(|f| !*f) => {}
                () = end.wait() => return,
            }
            if end.is_over() {
                return;
            }
            let plan = match fault {
                None => Plan::Deliver,
                Some(Fault::DelayReply(d)) => Plan::Delay(d),
                Some(Fault::LoseReply) => Plan::Lose,
                Some(Fault::DropBeforeForward) => Plan::CloseHere,
            };
            // Planned before forwarding, so the reply always finds its plan.
            if plans.send(plan).is_err() {
                return;
            }
            if matches!(plan, Plan::CloseHere) {
                return end.wait().await;
            }
            if to.write_all(&frame).await.is_err() {
                return end.close();
            }
            if matches!(plan, Plan::Lose) {
                return end.wait().await;
            }
        }
    }
    let _ = to.shutdown().await;
    end.wait().await;
}

/// Server → client: split replies, match each to its command's plan.
async fn replies(
    mut from: OwnedReadHalf,
    mut planned: mpsc::UnboundedReceiver<Plan>,
    out: mpsc::UnboundedSender<Out>,
    end: End,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut plans = VecDeque::new();
    loop {
        if let Some(Plan::CloseHere) = plans.front() {
            let _ = out.send(Out::Close);
            return;
        }
        tokio::select! {
            biased;
            () = end.wait() => return,
            Some(plan) = planned.recv() => plans.push_back(plan),
            read = from.read(&mut chunk) => {
                let Ok(n @ 1..) = read else {
                    // The server closed: deliver what came, then close.
                    let _ = out.send(Out::Close);
                    return;
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some((len, push)) = reply_len(&buf) {
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    let plan = if push {
                        Plan::Deliver
                    } else {
                        while let Ok(plan) = planned.try_recv() {
                            plans.push_back(plan);
                        }
                        if let Some(Plan::CloseHere) = plans.front() {
                            let _ = out.send(Out::Close);
                            return;
                        }
                        plans.pop_front().unwrap_or(Plan::Deliver)
                    };
                    // Later replies queue behind a delayed one (in order).
                    let due = match plan {
                        Plan::Delay(d) => Instant::now() + d,
                        Plan::Lose => {
                            let _ = out.send(Out::Close);
                            return;
                        }
                        Plan::Deliver | Plan::CloseHere => Instant::now(),
                    };
                    if out.send(Out::Data(due, frame)).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Writes replies to the client when due and not frozen; closes on `Close`.
async fn deliver(
    mut to: OwnedWriteHalf,
    mut outgoing: mpsc::UnboundedReceiver<Out>,
    mut frozen: watch::Receiver<bool>,
    end: End,
) {
    loop {
        let next = tokio::select! {
            next = outgoing.recv() => next,
            () = end.wait() => return,
        };
        match next {
            Some(Out::Data(due, bytes)) => {
                tokio::select! {
                    () = async {
                        tokio::time::sleep_until(due).await;
                        let _ = frozen.wait_for(|f| !*f).await;
                    } => {}
                    () = end.wait() => return,
                }
                if end.is_over() {
                    return;
                }
                if to.write_all(&bytes).await.is_err() {
                    return end.close();
                }
            }
            Some(Out::Close) | None => {
                let _ = to.shutdown().await;
                return end.close();
            }
        }
    }
}

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

/// One complete command at the start of `buf`: its length and arguments.
/// RESP arrays of bulk strings, or an inline command (a line).
fn parse_command(buf: &[u8]) -> Option<(usize, Vec<Vec<u8>>)> {
    if buf.first() != Some(&b'*') {
        let end = buf.iter().position(|&b| b == b'\n')?;
        let line = String::from_utf8_lossy(&buf[..end]);
        let args = line
            .split_whitespace()
            .map(|w| w.as_bytes().to_vec())
            .collect();
        return Some((end + 1, args));
    }
    let (count, mut at) = line_number(buf, 1)?;
    let mut args = Vec::with_capacity(usize::try_from(count.max(0)).unwrap_or(0));
    for _ in 0..count.max(0) {
        if buf.get(at) != Some(&b'$') {
            // Not a bulk string: take the rest of the frame as opaque.
            return Some((buf.len(), args));
        }
        let (len, start) = line_number(buf, at + 1)?;
        let len = usize::try_from(len).ok()?;
        let stop = start + len;
        if buf.len() < stop + 2 {
            return None;
        }
        args.push(buf[start..stop].to_vec());
        at = stop + 2;
    }
    Some((at, args))
}

/// The number on the line starting at `from`, and where the next line
/// starts.
fn line_number(buf: &[u8], from: usize) -> Option<(i64, usize)> {
    let rest = buf.get(from..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let number = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((number, from + end + 2))
}

/// The length of the complete reply at the start of `buf`, and whether it
/// is a RESP3 push (not the reply to a command); `None` while incomplete.
fn reply_len(buf: &[u8]) -> Option<(usize, bool)> {
    let push = buf.first() == Some(&b'>');
    value_len(buf, 0).map(|end| (end, push))
}

fn value_len(buf: &[u8], at: usize) -> Option<usize> {
    let kind = *buf.get(at)?;
    let line_end = |from: usize| -> Option<usize> {
        let rest = buf.get(from..)?;
        rest.windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p + 2)
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => line_end(at + 1),
        b'$' | b'=' | b'!' => {
            let (len, start) = line_number(buf, at + 1)?;
            if len < 0 {
                return Some(start);
            }
            let stop = start + usize::try_from(len).ok()? + 2;
            (buf.len() >= stop).then_some(stop)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let (count, mut next) = line_number(buf, at + 1)?;
            if count < 0 {
                return Some(next);
            }
            let items = if matches!(kind, b'%' | b'|') {
                count * 2
            } else {
                count
            };
            for _ in 0..items {
                next = value_len(buf, next)?;
            }
            // An attribute precedes the value it describes.
            if kind == b'|' {
                return value_len(buf, next);
            }
            Some(next)
        }
        // Not RESP: pass the rest through as one frame.
        _ => Some(buf.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_split_out_of_a_pipeline_and_partial_frames_wait() {
        let two = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$2\r\n25\r\n";
        let (len, args) = parse_command(two).unwrap();
        assert_eq!(args, vec![b"GET".to_vec(), b"k".to_vec()]);
        let (rest, wait) = parse_command(&two[len..]).unwrap();
        assert_eq!(wait[0], b"WAIT");
        assert_eq!(len + rest, two.len());
        assert_eq!(parse_command(&two[..len - 1]), None);
        let (_, inline) = parse_command(b"PING\r\n").unwrap();
        assert_eq!(inline, vec![b"PING".to_vec()]);
    }

    #[test]
    fn binary_arguments_with_crlf_inside_are_kept_whole() {
        let frame = b"*2\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n";
        let (len, args) = parse_command(frame).unwrap();
        assert_eq!(len, frame.len());
        assert_eq!(args[1], b"a\r\nb");
    }

    #[test]
    fn replies_of_every_kind_are_measured_and_partial_ones_wait() {
        for reply in [
            &b"+OK\r\n"[..],
            b"-NOSCRIPT No matching script\r\n",
            b":1\r\n",
            b"$-1\r\n",
            b"$5\r\nab\r\nc\r\n",
            b"*2\r\n$1\r\na\r\n:2\r\n",
            b"*-1\r\n",
            b"%1\r\n+k\r\n*1\r\n_\r\n",
            b"|1\r\n+a\r\n+b\r\n:3\r\n",
        ] {
            let mut buf = reply.to_vec();
            buf.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(reply_len(&buf), Some((reply.len(), false)), "{reply:?}");
            assert_eq!(reply_len(&reply[..reply.len() - 1]), None, "{reply:?}");
        }
        assert_eq!(reply_len(b">2\r\n+a\r\n+b\r\n"), Some((12, true)));
    }

    #[test]
    fn names_and_keys_are_read_from_the_arguments() {
        let command = |args: &[&str]| Command {
            n: 1,
            conn: 1,
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        };
        assert_eq!(command(&["script", "load", "x"]).name(), "SCRIPT LOAD");
        assert_eq!(command(&["set", "k", "v"]).key().as_deref(), Some("k"));
        let evalsha = command(&["EVALSHA", "abc", "1", "rec", "a"]);
        assert_eq!(evalsha.key().as_deref(), Some("rec"));
        assert_eq!(command(&["EVAL", "s", "0"]).key(), None);
    }

    #[test]
    fn kth_rules_count_only_matching_commands() {
        let mut armed = Armed {
            rule: Rule::at(At::named("SET").occurrence(2)),
            seen: 0,
        };
        let command = |name: &str| Command {
            n: 1,
            conn: 1,
            args: vec![name.as_bytes().to_vec()],
        };
        assert!(!armed.fires_at(&command("SET")));
        assert!(!armed.fires_at(&command("GET")));
        assert!(armed.fires_at(&command("set")));
    }
}
