//! The world of one schedule: a fresh `redis-server` and three simulated
//! Lambda instances ([`Instance`]), each the real `App` in process behind
//! its own fault proxy, and the scenario's set-up ([`World::prepare`]).
//!
//! A fresh world per schedule keeps schedules independent, so they can run
//! at once and a failure names one schedule; reading Redis directly
//! ([`World::orders`], [`World::records`]) is how the checker sees what was
//! stored, not what the clients were told.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idempotent_orders::{App, Config};
use serde_json::{json, Value};
use testkit::fault_proxy::{Fault, FaultProxy};
use testkit::harness::{function_env, lookup};
use testkit::proxy::socket_addr;
use testkit::RedisServer;

use crate::client::{backoff, retry_until_final, Answers, Ask, Attempt};
use crate::schedule::{label, Kind, Lease, Scenario, Step};

/// `REDIS_TIMEOUT_MS` of every simulated instance.
pub(crate) const TIMEOUT: Duration = Duration::from_millis(100);

fn config(redis_url: &str, lease: Lease) -> Config {
    let vars = function_env(
        redis_url,
        &[("REDIS_TIMEOUT_MS", "100"), ("METRICS_NAMESPACE", "")],
    );
    let mut config = Config::from_lookup(lookup(vars)).expect("config");
    config.settings.lease = lease.length();
    config
}

/// One simulated Lambda instance: the function in process, behind its own
/// fault proxy. A kill replaces the function (a cold start).
pub(crate) struct Instance {
    pub(crate) name: String,
    pub(crate) proxy: FaultProxy,
    app: Mutex<App>,
    pub(crate) lease: Lease,
}

impl Instance {
    fn start(name: &str, redis: &RedisServer, lease: Lease) -> Arc<Self> {
        let proxy = FaultProxy::start(socket_addr(&redis.url()));
        let app = App::from_config(&config(&proxy.url(), lease)).expect("app");
        Arc::new(Self {
            name: name.to_owned(),
            proxy,
            app: Mutex::new(app),
            lease,
        })
    }

    pub(crate) fn app(&self) -> App {
        self.app.lock().unwrap().clone()
    }

    /// The process died: its connections close, a new one starts cold.
    pub(crate) fn restart(&self) {
        self.proxy.kill_connections();
        let app = App::from_config(&config(&self.proxy.url(), self.lease)).expect("app");
        *self.app.lock().unwrap() = app;
    }
}

/// A fresh world for one schedule: its own `redis-server`, three instances.
pub(crate) struct World {
    pub(crate) redis: RedisServer,
    pub(crate) a: Arc<Instance>,
    pub(crate) b: Arc<Instance>,
    pub(crate) c: Arc<Instance>,
    pub(crate) ask: Ask,
    pub(crate) refused: Ask,
    pub(crate) answers: Answers,
    pub(crate) product: String,
}

static WORLDS: AtomicUsize = AtomicUsize::new(0);

impl World {
    pub(crate) fn new(lease: Lease) -> Self {
        let redis = RedisServer::start();
        let n = WORLDS.fetch_add(1, Ordering::SeqCst);
        let product = format!("sim-{n}");
        let body = json!({ "product": product, "quantity": 1 }).to_string();
        let key = format!("key-{n}");
        Self {
            a: Instance::start("a", &redis, lease),
            b: Instance::start("b", &redis, lease),
            c: Instance::start("c", &redis, lease),
            redis,
            ask: Ask {
                key: key.clone(),
                body: body.clone(),
                content_type: "application/json",
            },
            refused: Ask {
                key,
                body,
                content_type: "text/plain",
            },
            answers: Answers::default(),
            product,
        }
    }

    /// Prepares the scenario; returns what the faulted attempt sends.
    pub(crate) async fn prepare(&self, scenario: Scenario) -> Result<Ask, String> {
        match scenario {
            Scenario::New => Ok(self.ask.clone()),
            Scenario::Refused => Ok(self.refused.clone()),
            Scenario::Slow => {
                let write = Step {
                    label: "order write".into(),
                    occurrence: 1,
                };
                let slow = Fault::DelayReply(Duration::from_millis(90));
                self.a.proxy.inject(write.at(), slow);
                Ok(self.ask.clone())
            }
            Scenario::Replay => {
                // Set-up, not under test: retried until it succeeds.
                let first = retry_until_final(
                    vec![Arc::clone(&self.c)],
                    self.ask.clone(),
                    None,
                    self.answers.clone(),
                )
                .await?;
                match first.status {
                    201 => Ok(self.ask.clone()),
                    _ => Err(format!("set-up order failed: {}", first.summary())),
                }
            }
            Scenario::Rerun => {
                // The first attempt dies just before its completion (set-up:
                // an attempt that fails earlier, under load, is repeated).
                let step = Step {
                    label: "complete".into(),
                    occurrence: 1,
                };
                let (rule, mut arrivals) = Kind::KillBefore.rule(&step, self.c.lease).notify();
                self.c.proxy.add(rule);
                let mut tries = 0;
                loop {
                    let mut first = Attempt::start(&self.c, &self.ask);
                    match first.until(&mut arrivals).await {
                        Ok(_) => {
                            first.kill();
                            self.c.proxy.release();
                            self.c.restart();
                            break;
                        }
                        Err(answer) if tries < 5 => {
                            self.answers.push(&self.ask, &answer);
                            tries += 1;
                            tokio::time::sleep(backoff(&answer)).await;
                        }
                        Err(answer) => {
                            return Err(format!(
                                "set-up crash missed: {:?}",
                                answer.map(|a| a.summary())
                            ))
                        }
                    }
                }
                self.wait_out_leases().await;
                Ok(self.ask.clone())
            }
        }
    }

    /// Waits until no in-progress record is left (its lease ended or it
    /// was completed or released).
    pub(crate) async fn wait_out_leases(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            let busy = self
                .records()
                .iter()
                .any(|(_, value)| value.first() == Some(&b'p'));
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last commands each instance sent, for a failure report.
    pub(crate) fn trace(&self) -> String {
        let mut out = String::new();
        for instance in [&self.a, &self.b, &self.c] {
            let commands = instance.proxy.commands();
            let tail = &commands[commands.len().saturating_sub(12)..];
            let tail: Vec<String> = tail
                .iter()
                .map(|c| format!("{} {}", c.n, label(c)))
                .collect();
            out.push_str(&format!(
                "  {} sent {} commands on {} connections, last: {}\n",
                instance.name,
                commands.len(),
                commands.last().map_or(0, |c| c.conn),
                tail.join(", ")
            ));
        }
        out
    }

    pub(crate) fn records(&self) -> Vec<(String, Vec<u8>)> {
        let mut conn = self.redis.conn();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("idempotency:*")
            .query(&mut conn)
            .unwrap_or_default();
        keys.into_iter()
            .filter_map(|k| {
                let v: Option<Vec<u8>> = redis::cmd("GET").arg(&k).query(&mut conn).ok()?;
                Some((k, v?))
            })
            .collect()
    }

    /// `(key, JSON)` of every stored order of this world's product, as a
    /// client sees it: without the owner hash stored beside it.
    pub(crate) fn orders(&self) -> Vec<(String, String)> {
        let mut conn = self.redis.conn();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("orders:*")
            .query(&mut conn)
            .unwrap_or_default();
        keys.into_iter()
            .filter_map(|k| {
                let v: Option<String> = redis::cmd("GET").arg(&k).query(&mut conn).ok()?;
                let mut stored: Value = serde_json::from_str(&v?).ok()?;
                stored.as_object_mut()?.remove("owner");
                Some((k, stored.to_string()))
            })
            .filter(|(_, json)| {
                serde_json::from_str::<Value>(json).is_ok_and(|v| v["product"] == *self.product)
            })
            .collect()
    }
}
