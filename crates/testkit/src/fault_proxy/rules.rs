//! What a test asks of the proxy: [`Rule`]s, the command each fires at
//! ([`At`]), the [`Fault`] it applies, and the [`Arrivals`] it notifies.
//!
//! A rule is one-shot. It names its command by number, or by what it is
//! ("the second `SET`", counted from when the rule is armed), which stays
//! right when the client's path changes; rules armed by a firing rule
//! ([`Rule::and_then`]) reach "the command after that one".

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Command;

type Filter = Arc<dyn Fn(&Command) -> bool + Send + Sync>;

/// Which command a [`Rule`] fires at.
#[derive(Clone)]
pub enum At {
    /// The command with this number on the proxy (see [`Command::n`]).
    Nth(u64),
    /// The `k`-th command (from 1) that passes the filter, counted from
    /// when the rule was added.
    Kth {
        /// Which matching command.
        k: u32,
        /// What a command must look like to count.
        filter: Filter,
    },
}

impl At {
    /// The command numbered `n`.
    pub fn nth(n: u64) -> Self {
        Self::Nth(n)
    }

    /// The next command whose [`Command::name`] is `name` (case-insensitive).
    pub fn named(name: &str) -> Self {
        let name = name.to_ascii_uppercase();
        Self::matching(move |c| c.name() == name)
    }

    /// The next command passing `filter`.
    pub fn matching(filter: impl Fn(&Command) -> bool + Send + Sync + 'static) -> Self {
        Self::Kth {
            k: 1,
            filter: Arc::new(filter),
        }
    }

    /// The next command of any kind.
    pub fn next() -> Self {
        Self::matching(|_| true)
    }

    /// The `k`-th matching command instead of the first (no effect on
    /// [`At::Nth`]).
    pub fn occurrence(self, k: u32) -> Self {
        match self {
            Self::Kth { filter, .. } => Self::Kth { k, filter },
            nth => nth,
        }
    }
}

/// What happens to the command a [`Rule`] fires at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection is closed before the command is forwarded: it is never
    /// applied. Replies to earlier commands are delivered first.
    DropBeforeForward,
    /// The command is forwarded and applied; its reply is swallowed and the
    /// connection closed. Nothing after it on that connection is forwarded.
    LoseReply,
    /// The reply (and, in order, every later reply on the connection) is
    /// delivered this long after it arrived.
    DelayReply(Duration),
}

/// A one-shot rule: where it fires, whether it notifies and holds, and its
/// fault. Built with [`Rule::at`] and added with
/// [`FaultProxy::add`](super::FaultProxy::add).
pub struct Rule {
    at: At,
    pub(super) hold: bool,
    pub(super) fault: Option<Fault>,
    pub(super) notify: Option<mpsc::UnboundedSender<Command>>,
    pub(super) then: Option<Box<Rule>>,
}

impl Rule {
    /// A rule firing at `at` that does nothing yet.
    pub fn at(at: At) -> Self {
        Self {
            at,
            hold: false,
            fault: None,
            notify: None,
            then: None,
        }
    }

    /// Arms `next` when this rule fires; `next` counts commands from the
    /// one after (e.g. `At::next()` is the command that follows).
    pub fn and_then(mut self, next: Rule) -> Self {
        self.then = Some(Box::new(next));
        self
    }

    /// Applies `fault` to the command (after a hold is released).
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// Holds the command and all later traffic until released.
    pub fn hold(mut self) -> Self {
        self.hold = true;
        self
    }

    /// Sends the command on the returned channel when it arrives: once a
    /// hold it sets is in place, before the command is forwarded.
    pub fn notify(mut self) -> (Self, Arrivals) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.notify = Some(tx);
        (self, Arrivals(rx))
    }
}

/// Notifications of a [`Rule`] (see [`Rule::notify`]).
pub struct Arrivals(mpsc::UnboundedReceiver<Command>);

impl Arrivals {
    /// The command the rule fired at, once it arrives, or `None` after
    /// `within`.
    pub async fn wait(&mut self, within: Duration) -> Option<Command> {
        tokio::time::timeout(within, self.0.recv())
            .await
            .ok()
            .flatten()
    }

    /// The command, if the rule already fired.
    pub fn fired(&mut self) -> Option<Command> {
        self.0.try_recv().ok()
    }
}

pub(super) struct Armed {
    pub(super) rule: Rule,
    pub(super) seen: u32,
}

impl Armed {
    pub(super) fn fires_at(&mut self, command: &Command) -> bool {
        match &self.rule.at {
            At::Nth(n) => *n == command.n,
            At::Kth { k, filter } => {
                let matches = filter(command);
                if matches {
                    self.seen += 1;
                }
                matches && self.seen == *k
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kth_rules_count_only_matching_commands() {
        let mut armed = Armed {
            rule: Rule::at(At::named("SET").occurrence(2)),
            seen: 0,
        };
        let command = |name: &str| Command {
            n: 1,
            conn: 1,
            args: vec![name.as_bytes().to_vec()],
        };
        assert!(!armed.fires_at(&command("SET")));
        assert!(!armed.fires_at(&command("GET")));
        assert!(armed.fires_at(&command("set")));
    }
}
