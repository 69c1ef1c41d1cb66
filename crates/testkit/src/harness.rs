//! Runs the real release binary the way AWS Lambda runs it: each instance
//! is a process that talks to its own Runtime API server (see
//! `harness/runtime_api.rs`), so tests can hand the same event to many
//! instances at one instant, kill, freeze and thaw them, and read their logs.
//!
//! In-process tests (`tests/orders_api.rs`) call `App` directly; this is
//! for what only the deployed shape shows: the binary's start-up, its one
//! Redis connection per process, the Runtime API client, races between
//! instances, and a process dying mid-request.
//!
//! Instances get a clean environment (only `PATH`, `TMPDIR` and
//! `RUST_BACKTRACE` pass through) so a developer's `REDIS_URL` or
//! `AWS_LAMBDA_LOG_FORMAT` cannot change a test.

mod event;
mod outcome;
mod runtime_api;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use event::{as_function_url_event, as_rest_event, clf_time, order_event, v2_event};
pub use outcome::{base64_decode, ApiResponse, Outcome};
pub use runtime_api::{trace_id, Fault};
use runtime_api::{Endpoint, Finished, Status};

/// How long `start` waits for every instance's first `/next`.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `invoke_many` waits for an instance to come back to `/next`.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(60);
/// Variables passed from the test's environment to every instance.
const PASSED_THROUGH: [&str; 3] = ["PATH", "TMPDIR", "RUST_BACKTRACE"];

/// The release binary `name` of this workspace, built once per test
/// process (`cargo build --release --locked --bin <name>`); panics with
/// cargo's output if the build fails.
pub fn release_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let binary = build_release(&["--bin", name]).join(name);
    assert!(
        binary.is_file(),
        "cargo built the release binary but {} does not exist",
        binary.display()
    );
    built.push((name.to_owned(), binary.clone()));
    binary
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `cargo` (the one running this test or bench) without what cargo sets
/// for the running test or bench, not for a build: a build script that
/// reads `CARGO_MANIFEST_DIR` (ring's does) would otherwise be rebuilt,
/// with all that depends on it, every time a build from the shell and one
/// from a test alternate.
pub fn cargo_command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    without_run_env(&mut command);
    command
}

/// Removes from `command`'s environment what cargo sets for the running
/// test or bench alone (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …): a cargo
/// build started from it would otherwise see a changed environment and
/// rebuild what tracks it (ring's build script tracks
/// `CARGO_MANIFEST_DIR`).
pub fn without_run_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_the_run = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&name.as_ref())
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_");
        if set_for_the_run {
            command.env_remove(name.as_ref());
        }
    }
}

/// Runs `cargo build --release --locked <targets>` in this workspace and
/// returns the release output directory; panics with cargo's output if the
/// build fails. Shared with the benchmark.
pub fn build_release(targets: &[&str]) -> PathBuf {
    let root = workspace_root();
    let mut command = cargo_command();
    let output = command
        .args(["build", "--release", "--locked"])
        .args(targets)
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run {:?}: {e}", command.get_program()));
    assert!(
        output.status.success(),
        "cargo build --release failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir), // an absolute `dir` replaces the base
        None => root.join("target"),
    };
    target_dir.join("release")
}

/// One process and its Runtime API server.
struct Instance {
    pid: u32,
    api: SocketAddr,
    endpoint: Arc<Endpoint>,
    server: JoinHandle<()>,
    waiter: Option<std::thread::JoinHandle<()>>,
    log: PathBuf,
    init: Duration,
}

/// A set of running instances of one binary. Dropping it kills them all and
/// stops their servers; their logs are deleted unless the test is panicking.
pub struct Harness {
    instances: Vec<Instance>,
    dir: PathBuf,
}

impl Harness {
    /// Starts one process of `binary` per element of `envs` (that
    /// instance's extra environment, which overrides the defaults) and
    /// returns once every one has called `/next`. Panics with the log of an
    /// instance that exits or reports an init error first.
    pub async fn start(binary: &Path, envs: Vec<Vec<(String, String)>>) -> Self {
        let dir = std::env::temp_dir().join(format!("lambda-harness-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create the harness's log directory");
        let mut harness = Self {
            instances: Vec::with_capacity(envs.len()),
            dir,
        };
        let mut spawned_at = Vec::with_capacity(envs.len());
        for (i, env) in envs.into_iter().enumerate() {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a Runtime API port");
            let port = listener.local_addr().expect("Runtime API address").port();
            let endpoint = Arc::new(Endpoint::new());
            let server = tokio::spawn(runtime_api::serve(listener, endpoint.clone()));

            let log = harness.dir.join(format!("instance-{i}.log"));
            let stdout = File::create(&log).expect("create an instance log");
            let stderr = stdout.try_clone().expect("share the instance log");
            let mut command = Command::new(binary);
            command.env_clear();
            for var in PASSED_THROUGH {
                if let Some(value) = std::env::var_os(var) {
                    command.env(var, value);
                }
            }
            command
                .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
                .env("AWS_LAMBDA_FUNCTION_NAME", function_name(binary))
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("RUST_LOG", "warn")
                .envs(env)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr);
            spawned_at.push(Instant::now());
            let mut child = command
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));
            let pid = child.id();
            let reaper = endpoint.clone();
            let waiter = std::thread::Builder::new()
                .name(format!("harness-wait-{pid}"))
                .spawn(move || {
                    let how = match child.wait() {
                        Ok(status) => status.to_string(),
                        Err(e) => format!("wait failed: {e}"),
                    };
                    reaper.exited(how);
                })
                .expect("spawn a thread to wait for the instance");
            harness.instances.push(Instance {
                pid,
                api: SocketAddr::from(([127, 0, 0, 1], port)),
                endpoint,
                server,
                waiter: Some(waiter),
                log,
                init: Duration::ZERO,
            });
        }

        for (i, spawned) in spawned_at.into_iter().enumerate() {
            let mut status = harness.instances[i].endpoint.status.subscribe();
            let ready = status.wait_for(|s| {
                s.first_next.is_some() || s.exited.is_some() || s.init_error.is_some()
            });
            let status: Status = match tokio::time::timeout(INIT_TIMEOUT, ready).await {
                Ok(Ok(status)) => status.clone(),
                _ => panic!(
                    "instance {i} did not call /next within {INIT_TIMEOUT:?}; log:\n{}",
                    harness.logs(i)
                ),
            };
            match (status.first_next, status.init_error, status.exited) {
                (Some(first), None, _) => harness.instances[i].init = first - spawned,
                (_, init_error, exited) => panic!(
                    "instance {i} failed to start (init error: {init_error:?}, exit: {exited:?}); log:\n{}",
                    harness.logs(i)
                ),
            }
        }
        harness
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether the harness has no instances.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Hands `event` to instance `i` (once it is polling `/next`) and waits
    /// for its response or error, or for the process to die. Does not time
    /// out: a paused instance keeps this waiting until it is resumed.
    /// Dropping the future does not withdraw the event (as with a client
    /// that gives up on Lambda): the instance still runs it.
    pub async fn invoke(&self, i: usize, event: &Value, deadline_in: Duration) -> Outcome {
        let reply = self.submit(i, event, deadline_in, None);
        self.collect(i, reply).await
    }

    /// [`Harness::invoke`] in the Lambda tenant `tenant`: the event is
    /// handed out with `Lambda-Runtime-Aws-Tenant-Id`, as Lambda does for a
    /// function in tenant isolation mode.
    pub async fn invoke_in_tenant(
        &self,
        i: usize,
        event: &Value,
        deadline_in: Duration,
        tenant: &str,
    ) -> Outcome {
        let reply = self.submit(i, event, deadline_in, Some(tenant.to_owned()));
        self.collect(i, reply).await
    }

    /// [`Harness::invoke`] with an event of any bytes, JSON or not.
    pub async fn invoke_bytes(&self, i: usize, event: &[u8], deadline_in: Duration) -> Outcome {
        let reply = self.instances[i]
            .endpoint
            .submit(event.to_vec(), deadline_in, None);
        self.collect(i, reply).await
    }

    /// Makes instance `i`'s Runtime API misbehave once, as `fault` says.
    pub fn disturb(&self, i: usize, fault: Fault) {
        self.instances[i].endpoint.disturb(fault);
    }

    /// Waits until `n` of instance `i`'s `/next` calls are parked (a
    /// Managed Instances process polls with several at once).
    pub async fn wait_parked(&self, i: usize, n: usize) {
        let mut status = self.instances[i].endpoint.status.subscribe();
        let parked = status.wait_for(|s| s.parked >= n || s.exited.is_some());
        if tokio::time::timeout(BARRIER_TIMEOUT, parked).await.is_err() {
            panic!("instance {i} never had {n} /next calls parked");
        }
    }

    /// Hands the same event to every instance at one instant (once all are
    /// parked in `/next`) and returns their outcomes by instance.
    pub async fn invoke_all(&self, event: &Value, deadline_in: Duration) -> Vec<Outcome> {
        let assignments = (0..self.len()).map(|i| (i, event.clone())).collect();
        self.invoke_many(assignments, deadline_in).await
    }

    /// Waits until every instance named in `assignments` is parked in
    /// `/next` (or dead), then releases all the `(instance, event)` pairs
    /// together; outcomes come back in the order of `assignments`. An
    /// instance named twice runs its events one after the other.
    pub async fn invoke_many(
        &self,
        assignments: Vec<(usize, Value)>,
        deadline_in: Duration,
    ) -> Vec<Outcome> {
        let untenanted = assignments.into_iter().map(|(i, e)| (i, e, None));
        self.invoke_many_in_tenants(untenanted.collect(), deadline_in)
            .await
    }

    /// [`Harness::invoke_many`] with each event in the Lambda tenant named
    /// beside it, if any (see [`Harness::invoke_in_tenant`]).
    pub async fn invoke_many_in_tenants(
        &self,
        assignments: Vec<(usize, Value, Option<String>)>,
        deadline_in: Duration,
    ) -> Vec<Outcome> {
        let distinct: BTreeSet<usize> = assignments.iter().map(|(i, ..)| *i).collect();
        for &i in &distinct {
            let mut status = self.instances[i].endpoint.status.subscribe();
            let parked = status.wait_for(|s| s.parked > 0 || s.exited.is_some());
            if tokio::time::timeout(BARRIER_TIMEOUT, parked).await.is_err() {
                panic!("instance {i} did not come back to /next within {BARRIER_TIMEOUT:?}");
            }
        }
        let replies: Vec<_> = assignments
            .into_iter()
            .map(|(i, event, tenant)| (i, self.submit(i, &event, deadline_in, tenant)))
            .collect();
        let mut outcomes = Vec::with_capacity(replies.len());
        for (i, reply) in replies {
            outcomes.push(self.collect(i, reply).await);
        }
        outcomes
    }

    fn submit(
        &self,
        i: usize,
        event: &Value,
        deadline_in: Duration,
        tenant: Option<String>,
    ) -> oneshot::Receiver<Finished> {
        let event = serde_json::to_vec(event).expect("serialise the event");
        self.instances[i]
            .endpoint
            .submit(event, deadline_in, tenant)
    }

    async fn collect(&self, i: usize, mut reply: oneshot::Receiver<Finished>) -> Outcome {
        let mut status = self.instances[i].endpoint.status.subscribe();
        tokio::select! {
            biased;
            finished = &mut reply => finished.map_or(Outcome::Died, Outcome::from_finished),
            _ = status.wait_for(|s| s.exited.is_some()) => {
                reply.try_recv().map_or(Outcome::Died, Outcome::from_finished)
            }
        }
    }

    /// SIGKILLs instance `i` (as a Lambda timeout would) and waits until it
    /// is gone; its in-flight invocation, if any, ends as [`Outcome::Died`].
    pub async fn kill(&self, i: usize) {
        self.signal(i, "KILL");
        let mut status = self.instances[i].endpoint.status.subscribe();
        let _ = status.wait_for(|s| s.exited.is_some()).await;
    }

    /// Freezes instance `i` (SIGSTOP): it keeps its sockets but runs nothing.
    pub fn pause(&self, i: usize) {
        self.signal(i, "STOP");
    }

    /// Thaws an instance frozen by [`Harness::pause`] (SIGCONT).
    pub fn resume(&self, i: usize) {
        self.signal(i, "CONT");
    }

    /// Whether instance `i`'s process is still running (or frozen).
    pub fn is_alive(&self, i: usize) -> bool {
        self.instances[i].endpoint.status.borrow().exited.is_none()
    }

    /// Waits until instance `i` exits on its own and returns its exit
    /// status; panics if it is still running after `BARRIER_TIMEOUT`.
    pub async fn wait_exit(&self, i: usize) -> String {
        let mut status = self.instances[i].endpoint.status.subscribe();
        let exited = status.wait_for(|s| s.exited.is_some());
        if tokio::time::timeout(BARRIER_TIMEOUT, exited).await.is_err() {
            panic!("instance {i} did not exit:\n{}", self.logs(i));
        }
        self.exit_status(i).unwrap_or_default()
    }

    /// The exit status of a dead instance (e.g. `signal: 9 (SIGKILL)`).
    pub fn exit_status(&self, i: usize) -> Option<String> {
        self.instances[i].endpoint.status.borrow().exited.clone()
    }

    /// The process id of instance `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.instances[i].pid
    }

    /// The address of instance `i`'s Runtime API (`AWS_LAMBDA_RUNTIME_API`).
    pub fn runtime_api_addr(&self, i: usize) -> SocketAddr {
        self.instances[i].api
    }

    /// Time from spawning instance `i` to its first `/next` call.
    pub fn init_duration(&self, i: usize) -> Duration {
        self.instances[i].init
    }

    /// TCP connections instance `i` has opened to its Runtime API so far.
    pub fn api_connections(&self, i: usize) -> usize {
        self.instances[i].endpoint.status.borrow().connections
    }

    /// The body of instance `i`'s `/init/error` call, if it made one.
    pub fn init_error(&self, i: usize) -> Option<String> {
        self.instances[i]
            .endpoint
            .status
            .borrow()
            .init_error
            .clone()
    }

    /// Everything instance `i` wrote to stdout and stderr so far.
    pub fn logs(&self, i: usize) -> String {
        let log = &self.instances[i].log;
        std::fs::read(log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("<could not read {}: {e}>", log.display()))
    }

    /// The file holding instance `i`'s log.
    pub fn log_path(&self, i: usize) -> &Path {
        &self.instances[i].log
    }

    fn signal(&self, i: usize, signal: &str) {
        if self.is_alive(i) {
            send_signal(self.instances[i].pid, signal)
                .unwrap_or_else(|e| panic!("could not run `kill -{signal}`: {e}"));
        }
    }
}

/// The function name Lambda would report: the binary's file name.
fn function_name(binary: &Path) -> String {
    binary.file_name().map_or_else(
        || "function".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Runs `kill -<signal> <pid>`. A non-zero exit only means the process has
/// just exited, which is not an error here.
fn send_signal(pid: u32, signal: &str) -> std::io::Result<()> {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(drop)
}

impl Drop for Harness {
    fn drop(&mut self) {
        for instance in &mut self.instances {
            let alive = instance.endpoint.status.borrow().exited.is_none();
            // Without a signal sent, joining could wait forever: leave the
            // waiter thread then (the instance exits when its server stops).
            let killed = !alive || send_signal(instance.pid, "KILL").is_ok();
            if let (true, Some(waiter)) = (killed, instance.waiter.take()) {
                let _ = waiter.join();
            }
            instance.server.abort();
        }
        if std::thread::panicking() {
            eprintln!("harness: instance logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Callers without an identity are accepted in tests: the fixture events
/// carry none unless a test adds one.
pub const TEST_SCOPE: &str = "jwt,authorizer,iam,api-key,anonymous";

/// The environment of one function instance pointed at `redis_url`
/// (anonymous callers allowed), plus `extra` variables, which win.
pub fn function_env(redis_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = vec![
        ("REDIS_URL".to_owned(), redis_url.to_owned()),
        ("IDEMPOTENCY_SCOPE".to_owned(), TEST_SCOPE.to_owned()),
    ];
    for (name, value) in extra {
        vars.retain(|(n, _)| n != name);
        vars.push((name.to_string(), value.to_string()));
    }
    vars
}

/// Looks variables up in `vars`, as a configuration reader would in the
/// process environment.
pub fn lookup(vars: Vec<(String, String)>) -> impl Fn(&str) -> Option<String> {
    move |name| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

/// `n` instances of the release binary `name` pointed at `redis_url`.
pub async fn start_function(name: &str, n: usize, redis_url: &str) -> Harness {
    Harness::start(
        &release_binary(name),
        (0..n).map(|_| function_env(redis_url, &[])).collect(),
    )
    .await
}
