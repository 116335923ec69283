//! Whether a service is ready, in one line: what `/readyz` answers.
//!
//! A stage tells its [`Health`] what it is (standby or active), how much work waits for it, and
//! when it last made something durable; [`Health::verdict`] decides. Connections are checked at
//! each request by the service's ready check (`crate::telemetry`), this state beside them.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// Start-up reads not done yet.
    Starting,
    /// Another instance holds the lease (its description, when known).
    Standby(Option<String>),
    Active,
}

#[derive(Debug)]
struct State {
    role: Role,
    /// Messages waiting for this stage: not yet delivered, or delivered and not acknowledged.
    pending: u64,
    last_commit: Instant,
    last_error: Option<String>,
}

/// What a stage says of itself (see the module docs).
#[derive(Debug)]
pub struct Health {
    stall_after: Duration,
    state: Mutex<State>,
}

impl Health {
    pub fn new(stall_after: Duration) -> Health {
        let state = State { role: Role::Starting, pending: 0, last_commit: Instant::now(), last_error: None };
        Health { stall_after, state: Mutex::new(state) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("health state"))
    }

    /// Waiting for the lease that `holder` has.
    pub fn standby(&self, holder: Option<String>) {
        self.with(|s| s.role = Role::Standby(holder));
    }

    /// Working: the stall clock starts now.
    pub fn active(&self) {
        self.with(|s| {
            s.role = Role::Active;
            s.last_commit = Instant::now();
        });
    }

    /// Something was made durable (or there was nothing to do).
    pub fn committed(&self) {
        self.with(|s| {
            s.last_commit = Instant::now();
            s.last_error = None;
        });
    }

    pub fn pending(&self, n: u64) {
        self.with(|s| s.pending = n);
    }

    /// The error the stage is retrying (shown with a stall).
    pub fn error(&self, e: impl std::fmt::Display) {
        let text: String = e.to_string().chars().take(200).collect();
        self.with(|s| s.last_error = Some(text));
    }

    /// `Ok` when the stage is active and making progress; else the one-line reason.
    pub fn verdict(&self) -> Result<(), String> {
        self.with(|s| match &s.role {
            Role::Starting => Err("starting".into()),
            Role::Standby(None) => Err("standby".into()),
            Role::Standby(Some(h)) => Err(format!("standby: {h} is active")),
            Role::Active => stalled(s, self.stall_after).map_or(Ok(()), Err),
        })
    }
}

/// Work is pending and nothing was committed for `stall_after`.
fn stalled(s: &State, stall_after: Duration) -> Option<String> {
    let idle = s.last_commit.elapsed();
    if s.pending == 0 || idle < stall_after {
        return None;
    }
    let since = humantime::format_duration(Duration::from_secs(idle.as_secs()));
    let why = s.last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default();
    Some(format!("stalled: {} messages pending, nothing committed for {since}{why}", s.pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_only_when_active_and_progressing() {
        let h = Health::new(Duration::from_secs(120));
        assert_eq!(h.verdict(), Err("starting".into()));
        h.standby(Some("sink a1 (pid 7 on host)".into()));
        assert_eq!(h.verdict(), Err("standby: sink a1 (pid 7 on host) is active".into()));
        h.active();
        assert_eq!(h.verdict(), Ok(()));
        h.pending(40);
        tokio::time::advance(Duration::from_secs(119)).await;
        assert_eq!(h.verdict(), Ok(()));
        h.error("insert: ClickHouse answered 241 Memory limit");
        tokio::time::advance(Duration::from_secs(2)).await;
        let v = h.verdict().unwrap_err();
        assert!(v.starts_with("stalled: 40 messages pending, nothing committed for 2m 1s"), "{v}");
        assert!(v.contains("Memory limit"), "{v}");
        h.committed();
        assert_eq!(h.verdict(), Ok(()));
        h.pending(0);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(h.verdict(), Ok(()), "nothing pending is not a stall");
    }
}
