//! The client side: what a client sends ([`Ask`]), what it gets back
//! ([`Answer`]), one invocation in flight ([`Attempt`]), and a client that
//! retries until it has a final answer ([`retry_until_final`]).
//!
//! The guarantee is about what clients see, so every answer of a schedule
//! is recorded ([`Answers`]) for the checker; and a client retries the way a
//! real one would (same key, honouring `Retry-After`), so a schedule ends
//! only when every client would have stopped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::Value;
use testkit::fault_proxy::{Arrivals, Command, Freezer};
use testkit::fixtures::context_with_deadline_in;
use testkit::harness::v2_event;
use tokio::task::JoinHandle;

use crate::world::Instance;

/// How long a client keeps retrying one request before the schedule fails.
const CLIENT_BUDGET: Duration = Duration::from_secs(12);

/// What a client sends.
#[derive(Clone)]
pub(crate) struct Ask {
    pub(crate) key: String,
    pub(crate) body: String,
    pub(crate) content_type: &'static str,
}

impl Ask {
    pub(crate) fn request(&self, deadline: Duration) -> Request {
        let event = v2_event(
            "POST",
            "/orders",
            &[
                ("content-type", self.content_type),
                ("idempotency-key", &self.key),
            ],
            Some(&self.body),
        );
        lambda_http::request::from_str(&event.to_string())
            .expect("a valid event")
            .with_lambda_context(context_with_deadline_in(deadline))
    }
}

/// An answer a client got.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    via: String,
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// When the client got it.
    pub(crate) at: Instant,
}

impl Answer {
    fn new(via: &str, response: &Response<Body>) -> Self {
        let mut headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        headers.sort();
        Self {
            via: via.to_owned(),
            status: response.status().as_u16(),
            headers,
            body: response.body().to_vec(),
            at: Instant::now(),
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    /// The headers a replay must repeat: all but the replay marker.
    pub(crate) fn replayable_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n != "idempotent-replayed")
            .cloned()
            .collect()
    }

    pub(crate) fn problem(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_owned))
            .and_then(|t| t.rsplit(':').next().map(str::to_owned))
            .unwrap_or_default()
    }

    pub(crate) fn is_final(&self) -> bool {
        !matches!(self.status, 409 | 503 | 500)
    }

    /// Whether the key is usable again: the request ran (`201`), was
    /// replayed, or was refused as another request's key (`422`).
    pub(crate) fn recovered(&self) -> bool {
        matches!(self.status, 201 | 422)
    }

    pub(crate) fn summary(&self) -> String {
        let replay = if self.replayed() { " replay" } else { "" };
        let problem = self.problem();
        let gap = if problem.is_empty() { "" } else { " " };
        format!("{}:{}{replay}{gap}{problem}", self.via, self.status)
    }
}

/// One invocation in flight: cut off at its deadline (Lambda kills it),
/// freezable, abortable (killed).
pub(crate) struct Attempt {
    via: String,
    pub(crate) pause: Freezer,
    handle: JoinHandle<Option<Response<Body>>>,
}

impl Attempt {
    pub(crate) fn start(instance: &Instance, ask: &Ask) -> Self {
        let deadline = instance.lease.deadline();
        let request = ask.request(deadline);
        let app = instance.app();
        let pause = Freezer::default();
        let run = pause.wrap(async move { app.handle(request).await });
        let handle = tokio::spawn(async move { tokio::time::timeout(deadline, run).await.ok() });
        Self {
            via: instance.name.clone(),
            pause,
            handle,
        }
    }

    fn outcome(
        via: &str,
        joined: Result<Option<Response<Body>>, tokio::task::JoinError>,
    ) -> Option<Answer> {
        match joined {
            Ok(Some(response)) => Some(Answer::new(via, &response)),
            _ => None,
        }
    }

    pub(crate) async fn answer(self) -> Option<Answer> {
        let via = self.via;
        Self::outcome(&via, self.handle.await)
    }

    /// Waits for the rule's command or for the attempt to end, whichever
    /// is first. `Err` carries the attempt's answer (it is over).
    pub(crate) async fn until(
        &mut self,
        arrivals: &mut Arrivals,
    ) -> Result<Command, Option<Answer>> {
        tokio::select! {
            biased;
            arrived = arrivals.wait(Duration::from_secs(10)) => match arrived {
                Some(command) => Ok(command),
                None => Err(Self::outcome(&self.via, (&mut self.handle).await)),
            },
            joined = &mut self.handle => Err(Self::outcome(&self.via, joined)),
        }
    }

    pub(crate) fn kill(&self) {
        self.handle.abort();
    }
}

/// Every answer of a schedule, in order.
#[derive(Clone, Default)]
pub(crate) struct Answers(Arc<Mutex<Vec<(Ask, Answer)>>>);

impl Answers {
    pub(crate) fn push(&self, ask: &Ask, answer: &Option<Answer>) {
        if let Some(answer) = answer {
            self.0.lock().unwrap().push((ask.clone(), answer.clone()));
        }
    }

    pub(crate) fn all(&self) -> Vec<(Ask, Answer)> {
        self.0.lock().unwrap().clone()
    }
}

/// How long a client waits before retrying after `answer`: what
/// `Retry-After` says, at least 25 ms, and at most 250 ms. Time in a
/// schedule runs about ten times faster than deployed (100 ms timeouts,
/// leases of a few hundred ms), so a whole second would hide how soon a key
/// is usable again; 250 ms is how often the deployed-scale recovery tests
/// retry.
pub(crate) fn backoff(answer: &Option<Answer>) -> Duration {
    let hinted = answer
        .as_ref()
        .and_then(|a| a.header("retry-after"))
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    hinted.clamp(Duration::from_millis(25), Duration::from_millis(250))
}

/// A client that retries `ask` (round robin over `via`) until a final
/// answer, honouring `Retry-After`. `after` is what it already got.
pub(crate) async fn retry_until_final(
    via: Vec<Arc<Instance>>,
    ask: Ask,
    after: Option<Answer>,
    answers: Answers,
) -> Result<Answer, String> {
    if let Some(answer) = after.as_ref().filter(|a| a.is_final()) {
        return Ok(answer.clone());
    }
    let started = Instant::now();
    let mut last = after;
    let mut got = Vec::new();
    for turn in 0.. {
        tokio::time::sleep(backoff(&last)).await;
        if started.elapsed() > CLIENT_BUDGET {
            return Err(format!(
                "no final answer within {CLIENT_BUDGET:?}: {}",
                got.join(", ")
            ));
        }
        let instance = &via[turn % via.len()];
        let sent = started.elapsed();
        let answer = Attempt::start(instance, &ask).answer().await;
        answers.push(&ask, &answer);
        got.push(format!(
            "{} at {sent:.1?}",
            answer
                .as_ref()
                .map_or("no answer".to_owned(), Answer::summary)
        ));
        if let Some(done) = answer.as_ref().filter(|a| a.is_final()) {
            return Ok(done.clone());
        }
        last = answer;
    }
    unreachable!()
}

/// Sends `ask` once through `instance`, recording the answer.
pub(crate) async fn once(instance: &Instance, ask: &Ask, answers: &Answers) -> Option<Answer> {
    let answer = Attempt::start(instance, ask).answer().await;
    answers.push(ask, &answer);
    answer
}
