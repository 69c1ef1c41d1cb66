//! [`Watch`]: the real `cargo lambda watch` serving the function over HTTP
//! (its function-URL path) on a free port, in a process group of its own,
//! stopped with everything it started when dropped.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{cargo_command, workspace_root};

/// How to get cargo-lambda, for the panic when it is missing.
pub const HINT: &str = "cargo-lambda is required by this test: `pip install cargo-lambda` (or run `bash .ci/run`, which installs it)";

/// `cargo lambda watch` in its own process group.
pub struct Watch {
    child: Child,
    port: u16,
    log: PathBuf,
    stopped: bool,
}

impl Watch {
    /// Starts `cargo lambda watch` with the function's environment `env`
    /// (written to an env file: `--env-var` splits values at commas) and
    /// up to `concurrency` instances, and waits until it listens. The
    /// function itself is built on the first request: see
    /// [`Watch::wait_until_serving`].
    pub fn start(env: &[(&str, &str)], concurrency: usize) -> Self {
        let port = crate::server::free_port();
        let log = std::env::temp_dir().join(format!("watch-{port}.log"));
        let env_file = std::env::temp_dir().join(format!("watch-{port}.env"));
        let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&env_file, text).expect("env file");
        let out = std::fs::File::create(&log).expect("log file");
        // The function it builds goes to this workspace's target/debug:
        // built with the test's cargo variables, it would leave ring and
        // all above it to rebuild for the next `cargo test`.
        let child = cargo_command()
            .args(["lambda", "watch", "--ignore-changes"])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .arg("--env-file")
            .arg(&env_file)
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{HINT} ({e})"));
        let mut watch = Self {
            child,
            port,
            log,
            stopped: false,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = watch.child.try_wait() {
                panic!("cargo lambda watch exited ({status}):\n{}", watch.logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "watch never listened:\n{}",
                watch.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        watch
    }

    /// Waits until the function answers (watch builds and starts it on the
    /// first request), up to `limit`.
    pub fn wait_until_serving(&self, limit: Duration) {
        let started = Instant::now();
        let url = self.url("/problems/request-in-progress");
        loop {
            let ok = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "--max-time"])
                .arg(limit.as_secs().max(1).to_string())
                .arg(&url)
                .status()
                .expect("curl is required (apt-get install curl)")
                .success();
            if ok {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "the function never answered:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The port watch listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The function's base URL: `http://127.0.0.1:<port>/lambda-url/idempotent-orders`.
    pub fn base_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/lambda-url/idempotent-orders",
            self.port
        )
    }

    /// The URL of `path` (`/orders`, …) on the function.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Everything watch and the function logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the whole process tree: watch and cargo (watch's process
    /// group), and the function instances (watch stops them on SIGTERM;
    /// they have process groups of their own, so stragglers are found by
    /// parentage and killed).
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let instances = descendants(self.child.id());
        let group = format!("-{}", self.child.id());
        kill(&["-TERM", "--", &group]);
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(300));
        kill(&["-KILL", "--", &group]);
        for pid in instances {
            kill(&["-KILL", &pid.to_string()]);
        }
    }

    /// Whether any process of watch's group is still running.
    pub fn group_alive(&self) -> bool {
        Command::new("pgrep")
            .args(["-g", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `kill <args>`, quietly: what it signals may be gone already.
fn kill(args: &[&str]) {
    let _ = Command::new("kill")
        .args(args)
        .stderr(Stdio::null())
        .status();
}

/// Every process below `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let output = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let children: Vec<u32> = output
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut all = children.clone();
    for child in children {
        all.extend(descendants(child));
    }
    all
}
