//! The schedule model: what a schedule is ([`Schedule`]: a scenario, a
//! lease shape, a step, a fault [`Kind`], perhaps a [`Race`]), and how the
//! schedules are found.
//!
//! Steps are not numbered by hand: each scenario is traced once without
//! faults and its commands named by what they do ([`label`]), so the
//! enumeration follows the code's real path and a new command in it gets
//! every fault without a change here. The sampled run draws combinations of
//! the enumerated schedules from a seed, so a failure can be replayed.

use std::time::Duration;

use testkit::fault_proxy::{At, Command, Fault, Rule};
use testkit::fuzz::Rng;

use crate::client::Attempt;
use crate::world::{World, TIMEOUT};

/// The lease shape of a schedule. The lease is the same whatever the
/// deadline; the shapes differ in how the two compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// Deadline 300 ms, lease 400 ms: the lease outlives the invocation,
    /// so no heartbeat.
    Deadline,
    /// A 60 s function timeout and a 210 ms lease, renewed every 70 ms
    /// while the handler runs: a lease tied to the deadline would block a
    /// key for a minute here, and a frozen instance can wake after a
    /// takeover.
    Renewed,
    /// Deadline 300 ms, lease 2.3 s (for the tests about `Retry-After`).
    Long,
}

impl Lease {
    pub(crate) fn deadline(self) -> Duration {
        match self {
            Self::Deadline | Self::Long => Duration::from_millis(300),
            Self::Renewed => Duration::from_secs(60),
        }
    }

    pub(crate) fn length(self) -> Duration {
        match self {
            Self::Deadline => Duration::from_millis(400),
            Self::Renewed => Duration::from_millis(210),
            Self::Long => Duration::from_millis(2300),
        }
    }

    /// Whether `kind` is a fault of this shape: no reply comes a minute
    /// late (the store's own timeout ends the call long before).
    pub(crate) fn has(self, kind: Kind) -> bool {
        kind != Kind::PastDeadline || self != Self::Renewed
    }
}

/// What a command is, for naming steps.
pub(crate) fn label(command: &Command) -> String {
    let key = command.key().unwrap_or_default();
    let record = key.starts_with("idempotency:");
    match command.name().as_str() {
        "CLIENT SETINFO" | "HELLO" | "AUTH" | "SELECT" => "connect".to_owned(),
        "SET" if record => "claim".to_owned(),
        "SET" if key.starts_with("orders:") => "order write".to_owned(),
        "GET" if key.starts_with("orders:") => "order read".to_owned(),
        "EVALSHA" | "EVAL" if record => {
            let value = command.arg(5).unwrap_or_default();
            match (command.args.len(), value.first()) {
                (5, _) => "release".to_owned(),
                (_, Some(b'c')) => "complete".to_owned(),
                (_, Some(b'p')) => "renew".to_owned(),
                _ => "script on the record".to_owned(),
            }
        }
        "SCRIPT LOAD" => "script load".to_owned(),
        other => other.to_ascii_lowercase(),
    }
}

/// A step of a scenario: the `occurrence`-th command with this label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) label: String,
    pub(crate) occurrence: u32,
}

impl Step {
    pub(crate) fn at(&self) -> At {
        let label = self.label.clone();
        At::matching(move |c| self::label(c) == label).occurrence(self.occurrence)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.occurrence == 1 {
            write!(f, "{}", self.label)
        } else {
            write!(f, "{} #{}", self.label, self.occurrence)
        }
    }
}

/// The steps in a list of commands (one per command; only the first
/// connection handshake command, the others fail the same way).
fn steps(commands: &[Command]) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for command in commands {
        let label = label(command);
        let occurrence = out.iter().filter(|s| s.label == label).count() as u32 + 1;
        if label == "connect" && occurrence > 1 {
            continue;
        }
        out.push(Step { label, occurrence });
    }
    out
}

/// What happens at the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The connection drops before the command is sent.
    Drop,
    /// The command is applied, its reply lost with the connection.
    Lose,
    /// The reply comes after `REDIS_TIMEOUT_MS`.
    Slow,
    /// The reply comes after the invocation's deadline.
    PastDeadline,
    /// The reply comes after the lease ended.
    PastLease,
    /// All of the instance's traffic stalls until the lease ended, then
    /// flows: the command lands late.
    Stall,
    /// The process dies just before sending the command.
    KillBefore,
    /// The process dies just after sending it (applied, nobody reads the
    /// reply).
    KillAfter,
    /// The process freezes as it sends the command; the client retries
    /// elsewhere; then it thaws (and goes on if before its deadline).
    Freeze,
}

const KINDS: [Kind; 9] = [
    Kind::Drop,
    Kind::Lose,
    Kind::Slow,
    Kind::PastDeadline,
    Kind::PastLease,
    Kind::Stall,
    Kind::KillBefore,
    Kind::KillAfter,
    Kind::Freeze,
];

/// The faults a racing schedule combines with each race timing.
const RACE_KINDS: [Kind; 5] = [
    Kind::Drop,
    Kind::Lose,
    Kind::Slow,
    Kind::PastLease,
    Kind::KillAfter,
];

impl Kind {
    /// The rule for this kind at `step`.
    pub(crate) fn rule(self, step: &Step, lease: Lease) -> Rule {
        let rule = Rule::at(step.at());
        match self {
            Self::Drop => rule.fault(Fault::DropBeforeForward),
            Self::Lose => rule.fault(Fault::LoseReply),
            Self::Slow => rule.fault(Fault::DelayReply(TIMEOUT + Duration::from_millis(50))),
            Self::PastDeadline => rule.fault(Fault::DelayReply(
                lease.deadline() + Duration::from_millis(50),
            )),
            Self::PastLease => rule.fault(Fault::DelayReply(
                lease.length() + Duration::from_millis(100),
            )),
            Self::Stall | Self::Freeze => rule.hold(),
            Self::KillBefore => rule.hold().fault(Fault::DropBeforeForward),
            Self::KillAfter => rule.hold().fault(Fault::LoseReply),
        }
    }

    pub(crate) fn is_kill(self) -> bool {
        matches!(self, Self::KillBefore | Self::KillAfter)
    }
}

/// When the second instance sends the same request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Race {
    /// While the first is held just before the step.
    Before,
    /// The moment the step's command reaches the proxy.
    At,
    /// Once the step is done, while the first is held before its next one.
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// A new order.
    New,
    /// A retry of a completed order.
    Replay,
    /// A retry after a crash between the order write and the completion.
    Rerun,
    /// A `415` (released), then the fixed request under the same key.
    Refused,
    /// A new order whose handler is slowed by a 90 ms order write, so the
    /// heartbeat renews the lease (with [`Lease::Renewed`]).
    Slow,
}

/// One fault (and a second in the sampled run) on a scenario.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    pub(crate) scenario: Scenario,
    pub(crate) lease: Lease,
    pub(crate) step: Step,
    pub(crate) kind: Kind,
    pub(crate) race: Option<Race>,
    /// Sampled runs: a second fault, on the second instance.
    pub(crate) second: Option<(Step, Kind)>,
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}/{:?}: {:?} at {}",
            self.scenario, self.lease, self.kind, self.step
        )?;
        if let Some(race) = self.race {
            write!(f, ", second request {race:?}")?;
        }
        if let Some((step, kind)) = &self.second {
            write!(f, ", then {kind:?} at the other instance's {step}")?;
        }
        Ok(())
    }
}

/// The commands the faulted attempt of `scenario` sends when nothing fails.
async fn trace(scenario: Scenario, lease: Lease) -> Vec<Step> {
    let world = World::new(lease);
    let ask = world.prepare(scenario).await.expect("fault-free set-up");
    let before = world.a.proxy.received();
    let answer = Attempt::start(&world.a, &ask).answer().await;
    let expected = if scenario == Scenario::Refused {
        415
    } else {
        201
    };
    assert_eq!(
        answer.as_ref().map(|a| a.status),
        Some(expected),
        "{scenario:?} without faults: {answer:?}"
    );
    let commands: Vec<Command> = world
        .a
        .proxy
        .commands()
        .into_iter()
        .filter(|c| c.n > before)
        .collect();
    steps(&commands)
}

pub(crate) async fn enumerate() -> Vec<Schedule> {
    let mut schedules = Vec::new();
    let shapes = [
        (Scenario::New, Lease::Deadline),
        (Scenario::New, Lease::Renewed),
        (Scenario::Replay, Lease::Deadline),
        (Scenario::Rerun, Lease::Deadline),
        (Scenario::Rerun, Lease::Renewed),
        (Scenario::Refused, Lease::Deadline),
        (Scenario::Slow, Lease::Renewed),
    ];
    for (scenario, lease) in shapes {
        let steps = trace(scenario, lease).await;
        println!(
            "{scenario:?}/{lease:?} steps: {}",
            steps
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for step in &steps {
            for kind in KINDS.into_iter().filter(|&k| lease.has(k)) {
                schedules.push(Schedule {
                    scenario,
                    lease,
                    step: step.clone(),
                    kind,
                    race: None,
                    second: None,
                });
            }
            if scenario == Scenario::New && lease == Lease::Deadline {
                for kind in RACE_KINDS {
                    for race in [Race::Before, Race::At, Race::After] {
                        schedules.push(Schedule {
                            scenario,
                            lease,
                            step: step.clone(),
                            kind,
                            race: Some(race),
                            second: None,
                        });
                    }
                }
            }
        }
    }
    schedules
}

/// A random combination: one enumerated schedule, a random race, and a
/// second fault on the second instance.
pub(crate) fn sample(rng: &mut Rng, enumerated: &[Schedule]) -> Schedule {
    let mut schedule = enumerated[rng.below(enumerated.len())].clone();
    let races = [None, Some(Race::Before), Some(Race::At), Some(Race::After)];
    if !matches!(schedule.kind, Kind::Freeze | Kind::Stall) {
        schedule.race = races[rng.below(races.len())];
    }
    let others: Vec<&Schedule> = enumerated
        .iter()
        .filter(|s| s.scenario == schedule.scenario && s.lease == schedule.lease)
        .collect();
    let other = others[rng.below(others.len())];
    let simple: Vec<Kind> = [
        Kind::Drop,
        Kind::Lose,
        Kind::Slow,
        Kind::PastDeadline,
        Kind::PastLease,
    ]
    .into_iter()
    .filter(|&k| schedule.lease.has(k))
    .collect();
    schedule.second = Some((other.step.clone(), simple[rng.below(simple.len())]));
    schedule
}
