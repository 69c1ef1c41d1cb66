//! Test support shared by the integration tests: a real `redis-server`
//! started by the test on a free port (killed on drop, stoppable and
//! restartable on the same port), and fixture events from `events/`.
//!
//! No test mocks Redis, and none is skipped when `redis-server` is missing:
//! that is a failure that says how to install it.
#![allow(dead_code)] // each test binary uses its own subset

pub mod harness;
pub mod proxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idempotent_orders::idempotency::IdempotencyConfig;
use idempotent_orders::{redis_conn, App, Config};
use lambda_http::http::HeaderValue;
use lambda_http::{Body, Context, Request, RequestExt, Response};

const INSTALL_HINT: &str = "redis-server is required by the integration tests and was not found. \
Install it with `sudo apt-get install -y redis-server` (Debian/Ubuntu) or `brew install redis` (macOS), \
or run `bash .ci/run`, which installs it. Set REDIS_SERVER_BIN to use a binary outside PATH.";

/// A `redis-server` process owned by one test.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    extra: Vec<String>,
    tls: Option<PathBuf>,
}

fn binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free TCP port on 127.0.0.1")
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::launch(extra, None)
    }

    /// Starts a TLS-only server (`rediss://`) with a CA and certificate
    /// generated for this test by the `openssl` CLI.
    pub fn start_tls() -> Self {
        let dir = std::env::temp_dir().join(format!("idem-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        generate_certificates(&dir);
        Self::launch(&[], Some(dir))
    }

    fn launch(extra: &[&str], tls: Option<PathBuf>) -> Self {
        // Picking a free port then binding it is racy between parallel
        // tests; a server that loses the race exits, and we try another.
        for _ in 0..10 {
            let mut server = Self {
                port: free_port(),
                child: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                tls: tls.clone(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server failed to start on 10 different ports");
    }

    fn args(&self) -> Vec<String> {
        let port = self.port.to_string();
        let mut args: Vec<String> = match &self.tls {
            None => vec!["--port".into(), port],
            Some(dir) => {
                let file = |name: &str| dir.join(name).display().to_string();
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port,
                    "--tls-cert-file".into(),
                    file("server.crt"),
                    "--tls-key-file".into(),
                    file("server.key"),
                    "--tls-ca-cert-file".into(),
                    file("ca.crt"),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]
            }
        };
        for arg in ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"] {
            args.push(arg.into());
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    fn spawn(&mut self) -> bool {
        let child = match Command::new(binary())
            .args(self.args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
            Err(e) => panic!("could not start redis-server: {e}"),
        };
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.ping() {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server on port {} did not answer PING within 10 s",
            self.port
        );
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls.is_some() {
            // Listening is enough: a plain PING cannot cross TLS.
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        // A server with a password answers NOAUTH: it is up all the same.
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
    }

    /// The server's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's URL (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|dir| dir.join("ca.crt"))
    }

    /// Kills the server (as an outage would) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing is saved).
    pub fn restart(&mut self) {
        self.stop();
        let started = Instant::now();
        // The port can take a moment to be bindable again.
        while !self.spawn() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server could not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A synchronous connection for the test's own assertions.
    pub fn conn(&self) -> redis::Connection {
        let client = match self.ca_file() {
            None => redis::Client::open(self.url()),
            Some(ca) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).expect("CA file")),
                },
            ),
        };
        client
            .and_then(|c| c.get_connection())
            .expect("test connection to redis-server")
    }

    /// Number of keys matching `pattern` (e.g. `orders:*`).
    pub fn count(&self, pattern: &str) -> usize {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.conn())
            .expect("KEYS");
        keys.len()
    }

    /// Number of stored orders.
    pub fn orders(&self) -> usize {
        self.count("orders:*")
    }

    /// The server's `INFO commandstats` `calls` for one command.
    pub fn calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.conn())
            .expect("INFO");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Resets `INFO commandstats`.
    pub fn reset_stats(&self) {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut self.conn())
            .expect("CONFIG RESETSTAT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.tls {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes `ca.crt`, `server.crt` (for 127.0.0.1 and localhost) and
/// `server.key` into `dir`.
fn generate_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| {
                panic!("the TLS tests need the openssl CLI ({e}); install it with `sudo apt-get install -y openssl`")
            });
        assert!(status.success(), "openssl {args:?} failed");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=idempotent-orders test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("san.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

/// The function's configuration pointed at `server`, with short timeouts.
pub fn config(server: &RedisServer) -> Config {
    Config {
        redis_url: server.url(),
        redis_timeout: Duration::from_millis(500),
        redis_ca_file: server.ca_file(),
        redis_cluster: false,
        idempotency: IdempotencyConfig::default(),
    }
}

/// A Redis connection as the binary makes it (one per instance).
pub fn connection(config: &Config) -> redis_conn::RedisConn {
    redis_conn::connect(config).expect("connection manager")
}

/// The function as `main` builds it, against `server`.
pub fn app(server: &RedisServer) -> App {
    let config = config(server);
    App::new(connection(&config), &config)
}

/// Loads `events/<name>` as a request, with a Lambda context whose deadline
/// is 3 s away (as Lambda would send).
pub fn event(name: &str) -> Request {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let req = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    req.with_lambda_context(context_with_deadline_in(Duration::from_secs(3)))
}

/// A Lambda context whose deadline is `left` from now.
pub fn context_with_deadline_in(left: Duration) -> Context {
    let mut ctx = Context::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ctx.deadline = (now + left).as_millis() as u64;
    ctx.request_id = format!("test-{}", uuid::Uuid::new_v4());
    ctx
}

/// Sets (replacing) a header on a request.
pub fn with_header(mut req: Request, name: &'static str, value: &str) -> Request {
    let value = HeaderValue::from_str(value).expect("test header value");
    req.headers_mut().insert(name, value);
    req
}

/// The body bytes of a response.
pub fn body(response: &Response<Body>) -> Vec<u8> {
    response.body().to_vec()
}

/// The body parsed as JSON.
pub fn json(response: &Response<Body>) -> serde_json::Value {
    serde_json::from_slice(response.body()).expect("JSON body")
}

/// Whether the response is a replay.
pub fn replayed(response: &Response<Body>) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// Asserts a problem+json response with `status`.
pub fn assert_problem(response: &Response<Body>, status: u16) {
    assert_eq!(response.status().as_u16(), status, "{:?}", response.body());
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem = json(response);
    assert_eq!(problem["status"], status);
    for field in ["type", "title", "detail"] {
        assert!(
            problem[field].is_string(),
            "problem lacks {field}: {problem}"
        );
    }
}

/// One line of `events/expected_status.txt`.
pub struct ExpectedStatus {
    /// The event file in `events/`.
    pub file: String,
    /// The status it must get.
    pub status: u16,
    /// Whether that answer is a replay.
    pub replay: bool,
}

/// `events/expected_status.txt`, checked to list every event file once.
pub fn expected_statuses() -> Vec<ExpectedStatus> {
    let dir = format!("{}/events", env!("CARGO_MANIFEST_DIR"));
    let table =
        std::fs::read_to_string(format!("{dir}/expected_status.txt")).expect("expected_status.txt");
    let expected: Vec<ExpectedStatus> = table
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut parts = line.split_whitespace();
            let file = parts.next().expect("file").to_owned();
            let status = parts.next().and_then(|s| s.parse().ok()).expect("status");
            ExpectedStatus {
                file,
                status,
                replay: parts.next() == Some("replay"),
            }
        })
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("events/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    let listed: Vec<String> = expected.iter().map(|e| e.file.clone()).collect();
    assert_eq!(
        listed, files,
        "events/expected_status.txt must list every event, in order"
    );
    expected
}

/// A local Redis Cluster of three masters (no replicas), each a
/// `redis-server` on a free port, joined with `redis-cli --cluster create`.
pub struct RedisCluster {
    /// The three master nodes.
    pub nodes: Vec<RedisServer>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits for `cluster_state:ok`.
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("idem-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                let conf = dir.join(format!("nodes-{i}.conf")).display().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("redis-cli is required ({e}); {INSTALL_HINT}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Self { nodes, dir };
        let started = Instant::now();
        while !cluster.nodes.iter().all(|n| {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut n.conn())
                .unwrap_or_default();
            info.contains("cluster_state:ok")
        }) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the cluster never became ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// The function's configuration for this cluster (seed: the first node).
    pub fn config(&self) -> Config {
        Config {
            redis_cluster: true,
            ..config(&self.nodes[0])
        }
    }

    /// Keys matching `pattern` on every node, summed.
    pub fn count(&self, pattern: &str) -> usize {
        self.nodes.iter().map(|n| n.count(pattern)).sum()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
