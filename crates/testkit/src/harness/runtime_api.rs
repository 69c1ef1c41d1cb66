//! The Lambda Runtime API, as much of it as `lambda_runtime` uses: a minimal
//! HTTP/1.1 server on tokio, one per instance (its own port), so that every
//! request is known to come from that instance.
//!
//! It speaks just enough HTTP for hyper's client: keep-alive, several
//! requests per connection, `content-length` or chunked request bodies, and
//! always a `content-length` on its own answers. A `/next` call parks until
//! the harness queues an invocation, while watching its connection so that
//! a client that dies while parked stops counting as parked.
//!
//! It can also misbehave once, on a test's request ([`Fault`]): answer a
//! parked `/next` with `204` or drop its connection, refuse a post with a
//! status, or take a post and drop the connection without answering.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

const PREFIX: &str = "/2018-06-01/runtime/";
const FUNCTION_ARN: &str = "arn:aws:lambda:eu-west-1:123456789012:function:idempotent-orders";

/// One invocation queued for an instance.
pub(super) struct Job {
    pub event: Vec<u8>,
    pub deadline_in: Duration,
    /// The Lambda tenant it runs in (`Lambda-Runtime-Aws-Tenant-Id`), if any.
    pub tenant: Option<String>,
    pub reply: oneshot::Sender<Finished>,
}

/// One way the Runtime API misbehaves, once, for the runtime under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A parked `/next` call is answered `204 No Content` and no event (as
    /// `cargo lambda watch` answers when nothing is waiting).
    NextNoContent,
    /// A parked `/next` call's connection is closed without an answer.
    NextDropped,
    /// The next `/response` or `/error` post is recorded but answered with
    /// this status (Lambda answers `410` once the invocation timed out).
    PostRefused(u16),
    /// The next `/response` or `/error` post is recorded, then its
    /// connection closed without an answer.
    PostDropped,
}

/// What a parked `/next` call is woken with.
pub(super) enum Work {
    Invoke(Job),
    Disturb(Fault),
}

/// How the instance ended an invocation, seen from the Runtime API.
pub(super) struct Finished {
    /// The `Lambda-Runtime-Aws-Request-Id` the invocation was handed out with.
    pub request_id: String,
    /// `true` for `/error`, `false` for `/response`.
    pub is_error: bool,
    pub body: Vec<u8>,
    /// From writing the event on `/next` to reading the whole answer.
    pub elapsed: Duration,
}

/// What the harness knows about an instance; watched for changes.
#[derive(Debug, Default, Clone)]
pub(super) struct Status {
    /// `/next` calls currently waiting for an invocation.
    pub parked: usize,
    /// When the first `/next` call arrived.
    pub first_next: Option<Instant>,
    /// The body of a `/init/error` call.
    pub init_error: Option<String>,
    /// The process's exit status, once it is gone.
    pub exited: Option<String>,
    /// TCP connections the instance has opened to its Runtime API.
    pub connections: usize,
}

/// The Runtime API state of one instance.
pub(super) struct Endpoint {
    pub status: watch::Sender<Status>,
    jobs_tx: mpsc::UnboundedSender<Work>,
    jobs_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Work>>,
    in_flight: Mutex<HashMap<String, InFlight>>,
    /// A fault for the next post, if a test asked for one.
    post_fault: Mutex<Option<Fault>>,
}

struct InFlight {
    handed_out: Instant,
    reply: oneshot::Sender<Finished>,
}

impl Endpoint {
    pub fn new() -> Self {
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        Self {
            status: watch::Sender::new(Status::default()),
            jobs_tx,
            jobs_rx: tokio::sync::Mutex::new(jobs_rx),
            in_flight: Mutex::new(HashMap::new()),
            post_fault: Mutex::new(None),
        }
    }

    /// Queues an invocation, in `tenant` if given; the next `/next` call
    /// takes it.
    pub fn submit(
        &self,
        event: Vec<u8>,
        deadline_in: Duration,
        tenant: Option<String>,
    ) -> oneshot::Receiver<Finished> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            event,
            deadline_in,
            tenant,
            reply,
        };
        // The receiver lives as long as `self`: sending cannot fail.
        let _ = self.jobs_tx.send(Work::Invoke(job));
        rx
    }

    /// Misbehaves once: a `/next` fault wakes the next parked (or the next
    /// arriving) `/next` call, in turn with queued invocations; a post
    /// fault applies to the next post.
    pub fn disturb(&self, fault: Fault) {
        match fault {
            Fault::NextNoContent | Fault::NextDropped => {
                let _ = self.jobs_tx.send(Work::Disturb(fault));
            }
            Fault::PostRefused(_) | Fault::PostDropped => {
                *self.post_fault.lock().expect("post fault") = Some(fault);
            }
        }
    }

    /// Records the process's exit and abandons its invocations.
    pub fn exited(&self, how: String) {
        self.status.send_modify(|s| s.exited = Some(how));
        self.in_flight.lock().expect("in-flight map").clear();
    }

    fn finish(&self, id: &str, is_error: bool, body: Vec<u8>) -> bool {
        let entry = self.in_flight.lock().expect("in-flight map").remove(id);
        let Some(entry) = entry else { return false };
        let elapsed = entry.handed_out.elapsed();
        let _ = entry.reply.send(Finished {
            request_id: id.to_owned(),
            is_error,
            body,
            elapsed,
        });
        true
    }
}

/// Serves `endpoint` on `listener` until the task is aborted (which also
/// drops every open connection).
pub(super) async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    endpoint.status.send_modify(|s| s.connections += 1);
                    connections.spawn(connection(stream, endpoint.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

struct Request {
    method: String,
    path: String,
    /// `Lambda-Runtime-Invocation-Id`, if sent.
    invocation_id: Option<String>,
    body: Vec<u8>,
}

async fn connection(mut stream: TcpStream, endpoint: Arc<Endpoint>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(8192);
    while let Some(request) = read_request(&mut stream, &mut buf).await {
        let answer = match (request.method.as_str(), route(&request.path)) {
            ("GET", Route::Next) => match next(&mut stream, &mut buf, &endpoint).await {
                Some(answer) => answer,
                None => return,
            },
            ("POST", Route::Finish(id, is_error)) => {
                // A runtime echoes the invocation id it was handed (as
                // lambda_runtime does); one that does not fails the
                // invocation, for the test to see.
                let echoed = request.invocation_id.as_deref() == Some(&invocation_id(id));
                let (is_error, body) = if echoed {
                    (is_error, request.body)
                } else {
                    (
                        true,
                        b"harness: Lambda-Runtime-Invocation-Id was not echoed".to_vec(),
                    )
                };
                let known = endpoint.finish(id, is_error, body);
                let fault = endpoint.post_fault.lock().expect("post fault").take();
                match fault {
                    Some(Fault::PostDropped) => return,
                    Some(Fault::PostRefused(status)) => {
                        reply(status, &[], br#"{"errorMessage":"refused by the test"}"#)
                    }
                    _ if known => reply(202, &[], br#"{"status":"OK"}"#),
                    _ => reply(404, &[], br#"{"errorMessage":"unknown request id"}"#),
                }
            }
            ("POST", Route::InitError) => {
                let body = String::from_utf8_lossy(&request.body).into_owned();
                endpoint.status.send_modify(|s| s.init_error = Some(body));
                reply(202, &[], br#"{"status":"OK"}"#)
            }
            _ => reply(404, &[], br#"{"errorMessage":"not found"}"#),
        };
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

enum Route<'a> {
    Next,
    Finish(&'a str, bool),
    InitError,
    Other,
}

fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Route::Other;
    };
    if rest == "invocation/next" {
        return Route::Next;
    }
    if rest == "init/error" {
        return Route::InitError;
    }
    let Some(rest) = rest.strip_prefix("invocation/") else {
        return Route::Other;
    };
    match (rest.strip_suffix("/response"), rest.strip_suffix("/error")) {
        (Some(id), _) => Route::Finish(id, false),
        (_, Some(id)) => Route::Finish(id, true),
        _ => Route::Other,
    }
}

/// Decrements `parked` however the `/next` call ends.
struct Parked<'a>(&'a Endpoint);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.status.send_modify(|s| s.parked -= 1);
    }
}

/// Parks a `/next` call until a job is queued; `None` if the client left
/// or the connection is to be dropped.
async fn next(stream: &mut TcpStream, buf: &mut Vec<u8>, endpoint: &Endpoint) -> Option<Vec<u8>> {
    let now = Instant::now();
    endpoint.status.send_modify(|s| {
        s.first_next.get_or_insert(now);
        s.parked += 1;
    });
    let parked = Parked(endpoint);
    let job = loop {
        tokio::select! {
            work = async { endpoint.jobs_rx.lock().await.recv().await } => match work {
                Some(Work::Invoke(job)) => break job,
                Some(Work::Disturb(Fault::NextNoContent)) => return Some(reply(204, &[], b"")),
                Some(Work::Disturb(_)) | None => return None,
            },
            // hyper sends nothing while it waits: EOF or an error means the
            // process is gone. Anything else is kept for the next request.
            read = stream.read_buf(buf) => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    };
    drop(parked);

    let id = uuid::Uuid::new_v4().to_string();
    let trace_id = trace_id(&id);
    let invocation = invocation_id(&id);
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + job.deadline_in;
    let deadline = deadline.as_millis().to_string();
    let mut headers = vec![
        ("lambda-runtime-aws-request-id", id.as_str()),
        ("lambda-runtime-deadline-ms", deadline.as_str()),
        ("lambda-runtime-invoked-function-arn", FUNCTION_ARN),
        ("lambda-runtime-trace-id", trace_id.as_str()),
        ("lambda-runtime-invocation-id", invocation.as_str()),
        ("content-type", "application/json"),
    ];
    // Sent only under tenant isolation mode.
    if let Some(tenant) = &job.tenant {
        headers.push(("lambda-runtime-aws-tenant-id", tenant.as_str()));
    }
    let answer = reply(200, &headers, &job.event);
    let in_flight = InFlight {
        handed_out: Instant::now(),
        reply: job.reply,
    };
    endpoint
        .in_flight
        .lock()
        .expect("in-flight map")
        .insert(id, in_flight);
    Some(answer)
}

/// The `Lambda-Runtime-Invocation-Id` handed out with `request_id`.
fn invocation_id(request_id: &str) -> String {
    format!("invocation-{request_id}")
}

/// The `Lambda-Runtime-Trace-Id` handed out with `request_id`: an X-Ray
/// trace header of its own per invocation, derived from the request id so
/// that tests can tell which invocation a trace id belongs to.
pub fn trace_id(request_id: &str) -> String {
    let hex: String = request_id.chars().filter(char::is_ascii_hexdigit).collect();
    let hex = format!("{hex:0<32}");
    format!("Root=1-{}-{};Sampled=0", &hex[..8], &hex[8..32])
}

fn reply(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        404 => "Not Found",
        410 => "Gone",
        _ => "Refused",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads bytes into `buf` until `pred` finds what it needs; `None` at EOF.
async fn fill<T>(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut pred: impl FnMut(&[u8]) -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(found) = pred(buf) {
            return Some(found);
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request (head and body) from the connection; `None` when the
/// client closed it or sent something unparseable.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_len = fill(stream, buf, |b| find(b, b"\r\n\r\n").map(|at| at + 4)).await?;
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    buf.drain(..head_len);

    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let method = start.next()?.to_owned();
    let path = start.next()?.to_owned();
    let mut length = 0;
    let mut chunked = false;
    let mut invocation_id = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = value.parse().ok()?;
        } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name == "lambda-runtime-invocation-id" {
            invocation_id = Some(value.to_owned());
        }
    }

    let body = if chunked {
        read_chunked(stream, buf).await?
    } else {
        fill(stream, buf, |b| (b.len() >= length).then_some(())).await?;
        buf.drain(..length).collect()
    };
    Some(Request {
        method,
        path,
        invocation_id,
        body,
    })
}

/// Decodes a chunked body (trailers are read and dropped).
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_len = fill(stream, buf, |b| find(b, b"\r\n").map(|at| at + 2)).await?;
        let line = String::from_utf8_lossy(&buf[..line_len - 2]).into_owned();
        buf.drain(..line_len);
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                let len = fill(stream, buf, |b| find(b, b"\r\n").map(|at| at + 2)).await?;
                buf.drain(..len);
                if len == 2 {
                    return Some(body);
                }
            }
        }
        fill(stream, buf, |b| (b.len() >= size + 2).then_some(())).await?;
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}
