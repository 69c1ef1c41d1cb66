//! [`HttpFaultProxy`]: an HTTP/1.1 proxy put between an AWS SDK client and
//! the DynamoDB emulator that gives chosen requests a fault: an error the
//! real service sends (throttling), a reply lost after the request reached
//! the server, or a reply held back past the client's timeout.
//!
//! Each client connection carries one request: the proxy answers with
//! `Connection: close`, as moto does, so every request is one connection
//! and faults apply to requests in the order they arrive.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to one request.
#[derive(Debug, Clone)]
pub enum HttpFault {
    /// Answers at once with this status and DynamoDB error type; the
    /// request never reaches the server.
    Refuse {
        /// HTTP status (DynamoDB sends 400 for throttling).
        status: u16,
        /// The error's type, e.g. `ThrottlingException`.
        error_type: &'static str,
    },
    /// Forwards the request, then closes the client's connection without
    /// the reply: the write landed, the client never hears of it.
    LoseReply,
    /// Forwards the request and holds the reply this long before sending it.
    Delay(Duration),
}

impl HttpFault {
    /// DynamoDB's answer to a request over the table's throughput.
    pub fn throttling() -> Self {
        Self::Refuse {
            status: 400,
            error_type: "ThrottlingException",
        }
    }
}

type Faults = Arc<Mutex<VecDeque<HttpFault>>>;

/// A running proxy; dropping it closes the listener.
pub struct HttpFaultProxy {
    port: u16,
    faults: Faults,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpFaultProxy {
    /// A proxy to `target` on a free port of 127.0.0.1 that forwards every
    /// request until faults are injected. Must be called inside a tokio
    /// runtime.
    pub fn start(target: SocketAddr) -> Self {
        let (listener, port) = crate::proxy::loopback_listener("HttpFaultProxy");
        let (faults, requests) = (Faults::default(), Arc::new(AtomicUsize::new(0)));
        let task = tokio::spawn(accept(listener, target, faults.clone(), requests.clone()));
        Self {
            port,
            faults,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`: the proxy as an endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next request that arrives (after those already given one) gets
    /// `fault`.
    pub fn inject(&self, fault: HttpFault) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(fault);
    }

    /// Requests received so far, faulted or not.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HttpFaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    faults: Faults,
    requests: Arc<AtomicUsize>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let (faults, requests) = (faults.clone(), requests.clone());
        tokio::spawn(async move {
            let _ = serve(client, target, &faults, &requests).await;
        });
    }
}

async fn serve(
    mut client: TcpStream,
    target: SocketAddr,
    faults: &Faults,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut client).await? else {
        return Ok(());
    };
    requests.fetch_add(1, Ordering::SeqCst);
    let fault = faults.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
    if let Some(HttpFault::Refuse { status, error_type }) = fault {
        let body = format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{error_type}","message":"injected by the test"}}"#
        );
        let reply = format!(
            "HTTP/1.1 {status} Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\n\
             x-amzn-ErrorType: {error_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return client.write_all(reply.as_bytes()).await;
    }
    let mut server = TcpStream::connect(target).await?;
    server.write_all(&request).await?;
    let mut reply = Vec::new();
    server.read_to_end(&mut reply).await?;
    match fault {
        Some(HttpFault::LoseReply) => return Ok(()),
        Some(HttpFault::Delay(delay)) => tokio::time::sleep(delay).await,
        _ => {}
    }
    client.write_all(&reply).await
}

/// One whole request (head and `Content-Length` body), rewritten to ask
/// the server to close the connection after its reply; `None` at EOF.
async fn read_request(client: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let kept: String = head
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let mut request = format!("{kept}Connection: close\r\n\r\n").into_bytes();
    request.extend_from_slice(&buf[head_end..head_end + length]);
    Ok(Some(request))
}
