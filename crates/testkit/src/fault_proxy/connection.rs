//! The proxy task: the accept loop, and per connection three tasks that
//! carry commands to the server and replies back.
//!
//! Requests are parsed, numbered and matched to rules as they arrive; each
//! forwarded command leaves a plan for its reply, and replies are matched
//! to plans by order. That is what lets a fault land on exactly one command
//! of a pipeline, and what lets the proxy hold, drop or delay it without
//! knowing anything of what the commands mean.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::command::{parse_command, reply_len};
use super::{lock, Fault, Shared};

pub(super) async fn accept(listener: TcpListener, shared: Arc<Shared>) {
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
