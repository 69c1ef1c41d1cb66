//! A TCP proxy that can slow or freeze traffic, put between the function
//! and `redis-server` to make Redis slow (or silent) on demand without
//! touching either side: the tests see what a slow ElastiCache node or a
//! stalled network path does to the function's timeouts.
//!
//! Every accepted connection gets its own connection to the target. Each
//! direction is a reader that stamps every chunk with "read at + delay" and
//! a writer that holds each chunk until then, in order. A delay change
//! applies to chunks read after it; a very long delay freezes the direction.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// A delay in microseconds, changeable while connections are open.
type Delay = Arc<AtomicU64>;

/// A running proxy; dropping it closes the listener and every connection.
pub struct TcpProxy {
    port: u16,
    to_client: Delay,
    to_server: Delay,
    open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `target` on a free port of 127.0.0.1, with no
    /// delay either way. Must be called inside a tokio runtime.
    pub fn start(target: SocketAddr) -> Self {
        let (listener, port) = loopback_listener("TcpProxy");
        let (to_client, to_server) = (Delay::default(), Delay::default());
        let open = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept(
            listener,
            target,
            to_client.clone(),
            to_server.clone(),
            open.clone(),
        ));
        Self {
            port,
            to_client,
            to_server,
            open,
            task,
        }
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`: the proxy as a Redis URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Holds every chunk travelling server → client for `delay`.
    pub fn set_delay(&self, delay: Duration) {
        store(&self.to_client, delay);
    }

    /// Holds every chunk travelling client → server for `delay`.
    pub fn set_client_to_server_delay(&self, delay: Duration) {
        store(&self.to_server, delay);
    }

    /// Connections currently open through the proxy.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // The accept task owns every connection task: aborting it drops them.
        self.task.abort();
    }
}

/// The address in a `redis://host:port[/db]` URL, e.g. a
/// [`RedisServer`](super::RedisServer)'s, as a proxy target.
pub fn socket_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("{url:?} has no IP:port address ({e})"))
}

fn store(delay: &Delay, value: Duration) {
    let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
    delay.store(micros, Ordering::SeqCst);
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    to_client: Delay,
    to_server: Delay,
    open: Arc<AtomicUsize>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    open.fetch_add(1, Ordering::SeqCst);
                    let guard = OpenGuard(open.clone());
                    connections.spawn(relay(client, target, to_client.clone(), to_server.clone(), guard));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Counts a connection as open for as long as it is alive (or until its
/// task is aborted).
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn relay(
    client: TcpStream,
    target: SocketAddr,
    to_client: Delay,
    to_server: Delay,
    _open: OpenGuard,
) {
    // The target refusing: close the client's connection, as a dead
    // server would.
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, to_server),
        pump(server_read, client_write, to_client),
    );
}

/// Copies `from` to `to`, holding each chunk until `delay` after it was
/// read; at EOF, delivers what is held, then shuts `to` down.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Delay) {
    let (held, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let now = Instant::now();
            let hold = Duration::from_micros(delay.load(Ordering::SeqCst));
            // A delay too long to add (Duration::MAX) freezes for a year.
            let at = now
                .checked_add(hold)
                .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
            if held.send((at, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// A tokio listener on a free port of 127.0.0.1, and its port, for the
/// proxy named `proxy`. Must be called inside a tokio runtime.
pub(crate) fn loopback_listener(proxy: &str) -> (TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("bind a port for the {proxy}: {e}"));
    let port = listener.local_addr().expect("listener address").port();
    listener
        .set_nonblocking(true)
        .expect("make the listener non-blocking");
    let listener = TcpListener::from_std(listener)
        .unwrap_or_else(|e| panic!("register the {proxy} listener (needs a tokio runtime): {e}"));
    (listener, port)
}
