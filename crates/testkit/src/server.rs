//! [`RedisServer`]: a real `redis-server` started by the test on a free
//! port, killed on drop, stoppable, freezable and restartable on the same
//! port, with a synchronous connection for the test's own assertions.
//!
//! No test mocks Redis, and none is skipped when `redis-server` is missing:
//! that is a failure that says how to install it. `REDIS_SERVER_BIN` picks
//! the binary (a `valkey-server` for the Valkey pass; see [`crate::engine`]).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::engine::{self, binary, install_hint, Engine};
use crate::tls::generate_certificates;

/// A `redis-server` process owned by one test.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    extra: Vec<String>,
    tls: Option<PathBuf>,
    /// The server's own working directory: a replica writes the RDB it
    /// receives there as `dump.rdb`, and a server loads a `dump.rdb` it
    /// finds at start, so servers must never share one.
    dir: PathBuf,
    /// What answered the last start, when it could be asked (not over TLS
    /// nor behind a password).
    engine: Option<Engine>,
}

/// Who answers on a server's port.
#[derive(Debug, PartialEq)]
enum Answer {
    /// Nothing yet.
    Nobody,
    /// Our own child, and what it is when it says.
    Ours(Option<Engine>),
    /// Another process's server, which won the race for the port.
    Another,
}

/// A TCP port nothing listens on now, on 127.0.0.1.
pub fn free_port() -> u16 {
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
        let mut log = String::new();
        for _ in 0..10 {
            let dir = std::env::temp_dir().join(format!("redis-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).expect("a working directory for redis-server");
            let mut server = Self {
                port: free_port(),
                child: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                tls: tls.clone(),
                dir,
                engine: None,
            };
            if server.spawn() {
                return server;
            }
            log = std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
        }
        panic!(
            "{} failed to start on 10 different ports; the last one logged:\n{log}",
            binary()
        );
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
        args.push("--dir".into());
        args.push(self.dir.display().to_string());
        args.push("--logfile".into());
        args.push(self.dir.join("server.log").display().to_string());
        // A replica's first sync starts at once, not after the 5 s Redis
        // waits by default for more replicas to share a diskless transfer.
        args.push("--repl-diskless-sync-delay".into());
        args.push("0".into());
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{}", install_hint()),
            Err(e) => panic!("could not start {}: {e}", binary()),
        };
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            match self.answering() {
                Answer::Ours(engine) => {
                    if let Some(engine) = &engine {
                        engine::check(engine);
                    }
                    self.engine = engine;
                    return true;
                }
                // Another process's server holds the port (it won the race
                // for it): ours is exiting, or will.
                Answer::Another => {
                    self.stop();
                    return false;
                }
                Answer::Nobody => {}
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
            "{} on port {} did not answer INFO within 10 s",
            binary(),
            self.port
        );
    }

    /// Whether our own child answers on the port (and what it is), another
    /// process does, or nothing does yet.
    fn answering(&self) -> Answer {
        if self.tls.is_some() {
            // Listening is enough: a plain command cannot cross TLS.
            return match TcpStream::connect(("127.0.0.1", self.port)) {
                Ok(_) => Answer::Ours(None),
                Err(_) => Answer::Nobody,
            };
        }
        let Some(info) = engine::info_server(self.port) else {
            return Answer::Nobody;
        };
        // A server with a password answers NOAUTH: it is up all the same.
        if info.starts_with("-NOAUTH") {
            return Answer::Ours(None);
        }
        let pid = info
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse::<u32>().ok());
        match pid {
            None => Answer::Nobody,
            Some(pid) if Some(pid) == self.pid() => Answer::Ours(Engine::from_info(&info)),
            Some(_) => Answer::Another,
        }
    }

    /// The software and version that answered the last start (`None` over
    /// TLS or behind a password, where it cannot be asked).
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
        let port = self.port;
        // The port can take a moment to be bindable again.
        let started = respawn(
            || self.spawn(),
            Duration::from_secs(10),
            Duration::from_millis(50),
        );
        assert!(started, "redis-server could not restart on port {port}");
    }

    /// Starts a server replicating `primary`, and waits until its link is up
    /// and it holds the primary's data.
    pub fn replica_of(primary: &RedisServer) -> Self {
        Self::replica_of_port(primary.port)
    }

    /// Like [`RedisServer::replica_of`], replicating whatever listens on
    /// `port` of 127.0.0.1: a primary, or a proxy in front of one (to hold
    /// or cut the replication link).
    ///
    /// Returns once the replica acknowledges writes (`WAIT 1` counts it).
    pub fn replica_of_port(port: u16) -> Self {
        let replica = Self::start_with(&["--replicaof", "127.0.0.1", &port.to_string()]);
        wait_for_a_replica(port);
        replica
    }

    /// Returns once a replica acknowledges this server's writes (`WAIT 1`
    /// counts it), as [`RedisServer::replica_of`] does for a new replica:
    /// after [`RedisServer::demote_to_replica_of`], say.
    pub fn wait_for_a_replica(&self) {
        wait_for_a_replica(self.port);
    }

    /// Makes a replica a primary (`REPLICAOF NO ONE`), as a failover does.
    pub fn promote(&self) {
        let _: () = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query(&mut self.conn())
            .expect("REPLICAOF NO ONE");
    }

    /// Makes this server a replica of `primary` while it keeps running and
    /// keeps its clients connected, as a failover that demotes the old
    /// primary does: from now on it refuses their writes (`READONLY`).
    pub fn demote_to_replica_of(&self, primary: &RedisServer) {
        let _: () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(primary.port)
            .query(&mut self.conn())
            .expect("REPLICAOF");
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers,
    /// and a replica stops acknowledging.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a server frozen by [`RedisServer::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()
                .unwrap_or_else(|e| panic!("could not run kill -{signal}: {e}"));
            assert!(status.success(), "kill -{signal} failed");
        }
    }

    /// Starts recording the commands clients send (`MONITOR`), without
    /// the ones scripts run inside Redis.
    pub fn monitor(&self) -> Monitor {
        Monitor::start(self.port)
    }

    /// `INFO <section>` as text.
    pub fn info(&self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn())
            .unwrap_or_default()
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
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(dir) = &self.tls {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The commands clients sent to a server since [`RedisServer::monitor`],
/// read from `MONITOR` on a thread of its own: the exact round trips a
/// function made, which `INFO commandstats` cannot tell (it also counts
/// what scripts run inside Redis).
pub struct Monitor {
    /// Each command's name (lower case) and first argument (its key, for
    /// commands on one key; empty when it has none).
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    stream: TcpStream,
    port: u16,
}

impl Monitor {
    fn start(port: u16) -> Self {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("MONITOR connection");
        stream.write_all(b"MONITOR\r\n").expect("MONITOR");
        let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
        let mut ok = String::new();
        std::io::BufRead::read_line(&mut reader, &mut ok).expect("MONITOR reply");
        assert!(ok.starts_with("+OK"), "MONITOR refused: {ok}");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0) {
                // `+<time> [<db> <client>] "CMD" "arg" …`; scripts show as `[<db> lua]`.
                if !line.contains(" lua] ") {
                    if let Some(start) = line.find("] \"") {
                        let mut quoted = line[start + 3..].split('"');
                        let name = quoted.next().unwrap_or("").to_ascii_lowercase();
                        // After the name: `" "`, then the first argument.
                        let first = quoted.nth(1).unwrap_or("").to_owned();
                        sink.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((name, first));
                    }
                }
                line.clear();
            }
        });
        Self { seen, stream, port }
    }

    /// The command names sent so far (lower case), after waiting briefly
    /// for `MONITOR` to catch up; clears the record.
    pub fn take(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(100));
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// Every command sent before this call, as `(name, first argument)`;
    /// clears the record. Exact however far `MONITOR` lags behind (under
    /// load it can lag by many commands): it sends a marker (`ECHO`) and
    /// waits until the marker comes through, which it does only after
    /// everything the server ran before it.
    pub fn take_commands(&self) -> Vec<(String, String)> {
        let marker = format!("monitor-mark-{}", uuid::Uuid::new_v4().simple());
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).expect("marker connection");
        let command = format!("*2\r\n$4\r\nECHO\r\n${}\r\n{marker}\r\n", marker.len());
        conn.write_all(command.as_bytes()).expect("ECHO marker");
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = seen.iter().position(|(n, a)| n == "echo" && *a == marker) {
                let mut before: Vec<_> = seen.drain(..=at).collect();
                before.pop();
                return before;
            }
            drop(seen);
            assert!(Instant::now() < until, "MONITOR never showed its marker");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Calls `spawn` every `pause` until it reports a started process; false
/// if it did not within `limit` (the port of a process just stopped can
/// take a moment to be bindable again).
pub(crate) fn respawn(mut spawn: impl FnMut() -> bool, limit: Duration, pause: Duration) -> bool {
    let started = Instant::now();
    while !spawn() {
        if started.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(pause);
    }
    true
}

/// Waits until a replica acknowledges the writes of the server on `port`.
/// After a diskless sync the primary streams nothing to a replica until its
/// first acknowledgement, up to a second after the link is up.
///
/// `WAIT` alone can say yes too early: a write made while the primary had
/// no replication backlog yet (before its first replica's sync) does not
/// enter the replication stream, and `WAIT` then counts a replica that has
/// received nothing. So a replica must have acknowledged the stream up to
/// the primary's offset just after the write, and that offset must be
/// above zero. (It is read before `WAIT`, whose own `REPLCONF GETACK`
/// enters the stream after it and is not covered by the acknowledgement
/// it asks for.)
fn wait_for_a_replica(port: u16) {
    let mut primary = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection())
        .expect("a connection to the primary");
    let started = Instant::now();
    // In a row: a replica that has just finished its sync can still miss
    // the next few acknowledgements by a WAIT's 100 ms.
    let mut in_a_row = 0;
    loop {
        let _: redis::RedisResult<()> = redis::cmd("SET")
            .arg("testkit:replica-check")
            .arg(1)
            .query(&mut primary);
        let written = replication_offset(&mut primary);
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(100)
            .query(&mut primary)
            .unwrap_or(0);
        if acked >= 1 && written > 0 && acknowledged_offset(&mut primary) >= written {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
        if in_a_row == 3 {
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg("testkit:replica-check")
                .query(&mut primary);
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the replica never acknowledged its primary's writes"
        );
    }
}

/// The primary's replication offset (`master_repl_offset`), 0 when unknown.
fn replication_offset(primary: &mut redis::Connection) -> u64 {
    replication_info(primary)
        .lines()
        .find_map(|line| line.strip_prefix("master_repl_offset:"))
        .and_then(|offset| offset.trim().parse().ok())
        .unwrap_or(0)
}

/// The highest offset an online replica has acknowledged to the primary
/// (`slaveN:…,state=online,offset=N,…`), 0 when none has.
fn acknowledged_offset(primary: &mut redis::Connection) -> u64 {
    replication_info(primary)
        .lines()
        .filter(|line| line.starts_with("slave") && line.contains("state=online"))
        .filter_map(|line| {
            let at = line.find("offset=")? + "offset=".len();
            line[at..].split(',').next()?.trim().parse().ok()
        })
        .max()
        .unwrap_or(0)
}

fn replication_info(primary: &mut redis::Connection) -> String {
    redis::cmd("INFO")
        .arg("replication")
        .query(primary)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_lost_the_race_for_its_port_is_not_taken_for_ours() {
        let first = RedisServer::start();
        let dir = std::env::temp_dir().join(format!("redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a working directory");
        let mut second = RedisServer {
            port: first.port,
            child: None,
            extra: Vec::new(),
            tls: None,
            dir,
            engine: None,
        };
        assert!(!second.spawn(), "the port answers, but not with our child");
        assert!(second.pid().is_none());
        assert!(matches!(first.answering(), Answer::Ours(Some(_))));
    }

    #[test]
    fn take_commands_returns_every_command_sent_before_it_with_its_key() {
        let redis = RedisServer::start();
        let monitor = redis.monitor();
        // One pipeline: the server runs them faster than MONITOR's reader
        // takes them in, so the reader lags when take_commands is called.
        let mut pipe = redis::pipe();
        for n in 0..20_000 {
            pipe.cmd("SET").arg(format!("key:{n}")).arg(n).ignore();
        }
        pipe.cmd("GET").arg("key:0");
        let _: Vec<String> = pipe.query(&mut redis.conn()).expect("pipeline");
        let seen = monitor.take_commands();
        assert_eq!(seen.len(), 20_001);
        assert!(seen[..20_000]
            .iter()
            .enumerate()
            .all(|(n, (name, key))| name == "set" && *key == format!("key:{n}")));
        assert_eq!(seen[20_000], ("get".to_owned(), "key:0".to_owned()));
        assert!(
            monitor.take_commands().is_empty(),
            "taken commands are gone"
        );
    }
}
