//! `bash .ci/dev`, the README's first command, run as a newcomer runs it
//! (on free ports, so that it cannot meet a Redis or a watch already
//! there): it starts its own `redis-server`, serves the function on
//! 127.0.0.1 only, answers the README's session (a `201` naming the
//! README's order, its replay, a `422`, a `400`, the order by its
//! `Location`), and on Ctrl-C (`SIGINT`
//! to its process group, as a terminal sends it) stops the Redis it
//! started and leaves no process behind.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::harness::{without_run_env, workspace_root};
use testkit::server::free_port;

fn answers(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// `.ci/dev` in a process group of its own, its output in a file.
struct Dev {
    child: Child,
    log: PathBuf,
    /// Where the script writes the pid of the `redis-server` it starts.
    redis_pidfile: PathBuf,
}

impl Dev {
    fn start(redis_port: u16, watch_port: u16) -> Self {
        let log = std::env::temp_dir().join(format!("dev-{watch_port}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new("bash");
        // Its build goes to this workspace's target directory, as from a
        // shell.
        without_run_env(&mut command);
        let child = command
            .arg(".ci/dev")
            .env("REDIS_PORT", redis_port.to_string())
            .env("WATCH_PORT", watch_port.to_string())
            .env_remove("WATCH_ADDRESS")
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("bash is required");
        let redis_pidfile =
            std::env::temp_dir().join(format!("idempotent-orders-redis-{redis_port}.pid"));
        Self {
            child,
            log,
            redis_pidfile,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    fn group_alive(&self) -> bool {
        Command::new("pgrep")
            .args(["-g", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("pgrep is required (apt-get install procps)")
            .success()
    }
}

impl Drop for Dev {
    /// After a failure: the group, and the Redis the script started (it
    /// daemonizes, so it is in no group of ours), are killed.
    fn drop(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
        if let Ok(pid) = std::fs::read_to_string(&self.redis_pidfile) {
            let _ = Command::new("kill")
                .arg(pid.trim())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The listening TCP sockets on `port`, as `/proc/net/tcp{,6}` give their
/// local addresses (hex, as the kernel writes them).
fn listeners(port: u16) -> Vec<String> {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // State 0A is LISTEN.
                    (fields.get(3) == Some(&"0A") && fields.get(1)?.ends_with(&port))
                        .then(|| fields[1].to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `curl -i`: the status, and the whole answer.
fn curl(args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "-i", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl is required (apt-get install curl)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn post(url: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let header = key.map(|k| format!("Idempotency-Key: {k}"));
    let mut args = vec!["-X", "POST", url, "-H", "content-type: application/json"];
    if let Some(header) = &header {
        args.extend(["-H", header]);
    }
    args.extend(["-d", body]);
    curl(&args)
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[test]
fn the_dev_script_serves_the_readme_session_on_loopback_and_cleans_up_on_ctrl_c() {
    let (redis_port, watch_port) = (free_port(), free_port());
    let mut dev = Dev::start(redis_port, watch_port);
    let base = format!("http://127.0.0.1:{watch_port}/lambda-url/idempotent-orders");
    let orders = format!("{base}/orders");
    let started = Instant::now();
    // The build comes first (already done by the suite's own, most times).
    while curl(&[&format!("{base}/problems/request-in-progress")]).0 != 200 {
        assert!(dev.group_alive(), "bash .ci/dev exited:\n{}", dev.logs());
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the function never answered:\n{}",
            dev.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(answers(redis_port), "no Redis on its port:\n{}", dev.logs());

    // Loopback only: 127.0.0.1 (0100007F), not every interface.
    let listening = listeners(watch_port);
    assert_eq!(
        listening,
        [format!("0100007F:{watch_port:04X}")],
        "{}",
        dev.logs()
    );

    let key = "7d0c6a52-3c1e-4f7a-9a39-2f6b1e0c0001";
    let (status, created) = post(
        &orders,
        Some(key),
        r#"{"product":"Espresso beans 1kg","quantity":2}"#,
    );
    assert_eq!(status, 201, "{created}");
    let (status, replay) = post(
        &orders,
        Some(key),
        r#"{"quantity":2, "product":"Espresso beans 1kg"}"#,
    );
    assert_eq!(status, 201, "{replay}");
    assert!(replay.contains("idempotent-replayed: true"), "{replay}");
    assert_eq!(body(&replay), body(&created));
    let (status, reused) = post(
        &orders,
        Some(key),
        r#"{"product":"Espresso beans 1kg","quantity":3}"#,
    );
    assert_eq!(status, 422, "{reused}");
    // Problem types point at this server's documents (the URL it prints).
    let reused_type =
        format!("http://localhost:{watch_port}/lambda-url/idempotent-orders/problems/idempotency-key-reused");
    assert!(reused.contains(&reused_type), "{reused}");
    let (status, missing) = post(
        &orders,
        None,
        r#"{"product":"Espresso beans 1kg","quantity":2}"#,
    );
    assert_eq!(status, 400, "{missing}");
    let location = created
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .map(str::trim)
        .expect("a Location header");
    // The README shows this key's order: its id is derived from the
    // record key, the same here as there.
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let shown = readme
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("the README's session shows a Location");
    assert_eq!(location, shown);
    let (status, order) = curl(&[&format!("{base}{location}")]);
    assert_eq!(status, 200, "{order}");
    assert!(body(&created).contains(body(&order)), "{order}\n{created}");

    // Ctrl-C: the script ends, and nothing of its group is left.
    dev.signal("-INT");
    let stopping = Instant::now();
    while dev.child.try_wait().ok().flatten().is_none() {
        assert!(
            stopping.elapsed() < Duration::from_secs(30),
            "bash .ci/dev still runs 30 s after SIGINT:\n{}",
            dev.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !dev.group_alive(),
        "still running after SIGINT:\n{}",
        dev.logs()
    );
    let gone = Instant::now();
    while answers(redis_port) && gone.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !answers(redis_port),
        "its redis-server still answers:\n{}",
        dev.logs()
    );
    assert!(
        dev.logs()
            .contains("stopping the redis-server this script started"),
        "{}",
        dev.logs()
    );
}
