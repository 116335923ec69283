//! Leases: which instance of a service is the one that works, enforced through NATS.
//!
//! The stream `LEASES` keeps one message per subject:
//! - `leases.alive.<instance>`: each instance's heartbeat, published every [`HEARTBEAT`];
//! - `leases.claim.<name>`: who holds the lease `name` (`sink`, `fetcher.<shop>`), written only
//!   with `Nats-Expected-Last-Subject-Sequence`, so of two instances claiming at once exactly one
//!   succeeds (works on nats-server 2.9 and current ones).
//!
//! An instance takes a lease that nobody holds, or whose holder has not been heard from for
//! [`TTL`]: "heard" means its heartbeat's stream sequence moved, as this instance observed it
//! (its own clock, never the holder's, so clocks may disagree), checked once more against the
//! stream itself just before the claim. A holder fences itself: it counts as holding only while
//! its last acknowledged heartbeat was sent less than [`TTL`] − [`MARGIN`] ago, so it stops
//! writing before anyone may take over; after such a gap it checks the stream before it writes
//! again. Every instance watches the stream (an ordered consumer from the last message of each
//! subject), so standbys notice a free lease within a heartbeat, and a holder notices a claim
//! that took its lease. Claims are written again every hour: the stream forgets after a week.
//!
//! One [`Leases`] per process; cheap to clone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind};
use futures::StreamExt;
use schemas::subjects::{Namespace, Stream};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How often an instance says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long an instance that is not heard from still holds its leases. A standby takes over at
/// most `TTL` plus one check after the holder died: within the contract's 30 s.
pub const TTL: Duration = Duration::from_secs(15);
/// A holder stops writing this long before anyone may take over from it.
pub const MARGIN: Duration = Duration::from_secs(5);
/// How often held claims are written again (the stream keeps a message a week).
const REASSERT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("leases: {0}")]
    Nats(String),
    /// This instance no longer holds the lease (another took it, or it could not say it is
    /// alive for too long): it must not write.
    #[error("lease {name} lost{}", holder.as_deref().map(|h| format!(" to {h}")).unwrap_or_default())]
    Lost { name: String, holder: Option<String> },
}

/// What a heartbeat and a claim say, for people reading the stream and for error texts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// Unique per process start; empty in a claim: released.
    pub instance: String,
    pub service: String,
    pub host: String,
    pub pid: u32,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} (pid {} on {})", self.service, self.instance, self.pid, self.host)
    }
}

#[derive(Debug, Clone)]
struct Claim {
    holder: Holder,
    /// Stream sequence of the claim message: what a new claim must name.
    seq: u64,
}

#[derive(Debug)]
struct View {
    claims: HashMap<String, Claim>,
    /// Per instance: the last heartbeat sequence seen, and when (our clock) it was first seen.
    heard: HashMap<String, (u64, Instant)>,
    /// Our own last acknowledged heartbeat was sent at this instant.
    alive_since: Option<Instant>,
    /// Names this instance holds and must check against the stream after a heartbeat gap.
    unverified: bool,
    last_reassert: Instant,
}

/// What [`View::precheck`] says before asking the stream.
#[derive(Debug, PartialEq, Eq)]
enum Precheck {
    /// This instance holds it and may write.
    Held,
    /// This instance cannot say it is alive: a claim would fence it at once.
    CannotSayAlive,
    /// Held by another instance heard from within [`TTL`].
    HeldByLive,
    /// The stream must say.
    AskStream,
}

/// The decisions of the lease state machine, without IO (its tests run on a paused clock).
impl View {
    fn new() -> View {
        View {
            claims: HashMap::new(),
            heard: HashMap::new(),
            alive_since: None,
            unverified: false,
            last_reassert: Instant::now(),
        }
    }

    /// `me` holds `name` and may write: its claim stands, it is not waiting to check the stream
    /// after a gap, and its last acknowledged heartbeat was sent under `TTL − MARGIN` ago.
    fn holds(&self, me: &str, name: &str) -> bool {
        let mine = self.claims.get(name).is_some_and(|c| c.holder.instance == me);
        mine && !self.unverified && self.alive_since.is_some_and(|t| t.elapsed() < TTL - MARGIN)
    }

    fn precheck(&self, me: &str, name: &str) -> Precheck {
        if self.holds(me, name) {
            return Precheck::Held;
        }
        if self.alive_since.is_none_or(|t| t.elapsed() >= TTL - MARGIN) {
            return Precheck::CannotSayAlive;
        }
        let live = self.claims.get(name).is_some_and(|c| {
            !c.holder.instance.is_empty()
                && c.holder.instance != me
                && self.heard.get(&c.holder.instance).is_some_and(|(_, t)| t.elapsed() < TTL)
        });
        if live { Precheck::HeldByLive } else { Precheck::AskStream }
    }

    /// `instance`'s heartbeat is at stream sequence `seq`: it is heard from now if that moved.
    fn heard_beat(&mut self, instance: &str, seq: u64) {
        let heard = self.heard.entry(instance.to_owned()).or_insert((seq, Instant::now()));
        if heard.0 != seq {
            *heard = (seq, Instant::now());
        }
    }

    /// Gone: its heartbeat has not moved for [`TTL`], as this instance observed it.
    fn gone(&mut self, instance: &str, beat: u64) -> bool {
        self.heard_beat(instance, beat);
        self.heard.get(instance).is_some_and(|(_, t)| t.elapsed() >= TTL)
    }

    /// Our heartbeat sent at `sent` was acknowledged. After a gap long enough that someone may
    /// have taken over, our claims must be checked against the stream before we write again.
    fn beat_acked(&mut self, sent: Instant) {
        if self.alive_since.is_some_and(|t| t.elapsed() >= TTL - MARGIN) {
            self.unverified = true;
        }
        self.alive_since = Some(sent);
    }

    /// A claim of `name` by `holder` at `seq` was seen on the stream; true when it took the
    /// lease from `me`. Older claims than the one known change nothing.
    fn saw_claim(&mut self, me: &str, name: &str, holder: Holder, seq: u64) -> bool {
        if self.claims.get(name).is_some_and(|c| c.seq >= seq) {
            return false;
        }
        let taken = self.claims.get(name).is_some_and(|c| c.holder.instance == me)
            && holder.instance != me
            && !holder.instance.is_empty();
        self.claims.insert(name.to_owned(), Claim { holder, seq });
        taken
    }
}

#[derive(Debug)]
struct Inner {
    js: jetstream::Context,
    ns: Namespace,
    stream: String,
    me: Holder,
    view: Mutex<View>,
}

#[derive(Debug, Clone)]
pub struct Leases {
    inner: Arc<Inner>,
}

impl Leases {
    /// Starts the heartbeat and the watch of the stream for this process (`service` names it in
    /// the claims).
    pub async fn start(js: jetstream::Context, ns: Namespace, service: &str) -> Result<Leases, LeaseError> {
        let me = Holder {
            instance: format!("{:016x}", rand_id()),
            service: service.to_owned(),
            host: hostname(),
            pid: std::process::id(),
        };
        let view = View::new();
        let stream = ns.stream(Stream::Leases);
        let leases = Leases { inner: Arc::new(Inner { js, ns, stream, me, view: Mutex::new(view) }) };
        // Retried like every JetStream call at start: a cluster electing a leader times out.
        crate::nats::jetstream_call("lease heartbeat", || leases.heartbeat()).await?;
        let watch = crate::nats::jetstream_call("lease watch", || leases.watch_consumer()).await?;
        tokio::spawn(leases.clone().watch(watch));
        tokio::spawn(leases.clone().beat());
        Ok(leases)
    }

    /// This process.
    pub fn me(&self) -> &Holder {
        &self.inner.me
    }

    /// Who holds `name`, if anyone does (as this instance last saw it).
    pub fn holder(&self, name: &str) -> Option<Holder> {
        let view = self.inner.view.lock().expect("lease view");
        view.claims.get(name).map(|c| c.holder.clone()).filter(|h| !h.instance.is_empty())
    }

    /// True while this instance holds `name` and may write: its claim stands and its heartbeat
    /// is recent enough that nobody may have taken over.
    pub fn holds(&self, name: &str) -> bool {
        self.inner.view.lock().expect("lease view").holds(&self.inner.me.instance, name)
    }

    /// [`Leases::holds`] as a result, for the write paths.
    pub fn check(&self, name: &str) -> Result<(), LeaseError> {
        if self.holds(name) {
            return Ok(());
        }
        let holder = self.holder(name).filter(|h| h.instance != self.inner.me.instance).map(|h| h.to_string());
        Err(LeaseError::Lost { name: name.to_owned(), holder })
    }

    /// Takes `name` if it is free or its holder is gone; true when this instance holds it.
    pub async fn acquire(&self, name: &str) -> Result<bool, LeaseError> {
        let precheck = self.inner.view.lock().expect("lease view").precheck(&self.inner.me.instance, name);
        match precheck {
            Precheck::Held => return Ok(true),
            // Not alive: claiming would fence us at once. Held by a live one: no need to ask.
            Precheck::CannotSayAlive | Precheck::HeldByLive => return Ok(false),
            Precheck::AskStream => {}
        }
        // The stream itself says who holds it, and which sequence a new claim must name.
        let stored = self.last(&self.claim_subject(name)).await?;
        let expected = stored.as_ref().map_or(0, |m| m.sequence);
        let holder: Holder = stored.as_ref().and_then(|m| serde_json::from_slice(&m.payload).ok()).unwrap_or_default();
        if !holder.instance.is_empty() && holder.instance != self.inner.me.instance && !self.gone(&holder).await? {
            let mut view = self.inner.view.lock().expect("lease view");
            view.claims.insert(name.to_owned(), Claim { holder, seq: expected });
            return Ok(false);
        }
        self.claim(name, expected, &self.inner.me.clone()).await
    }

    /// Gives `name` up (on a clean stop): a standby takes it at once instead of after [`TTL`].
    pub async fn release(&self, name: &str) {
        let seq = {
            let view = self.inner.view.lock().expect("lease view");
            match view.claims.get(name) {
                Some(c) if c.holder.instance == self.inner.me.instance => c.seq,
                _ => return,
            }
        };
        match self.claim(name, seq, &Holder::default()).await {
            Ok(_) => tracing::info!(lease = name, "lease released"),
            Err(e) => {
                tracing::warn!(lease = name, error = %e, "lease not released; a standby takes over after the TTL")
            }
        }
    }

    /// Waits until this instance holds `name` (true), or a stop was asked for (false). `waiting`
    /// is told who holds it meanwhile, each time that changes.
    pub async fn wait_for(&self, name: &str, mut waiting: impl FnMut(Option<&Holder>)) -> Result<bool, LeaseError> {
        let mut told: Option<Option<Holder>> = None;
        while !crate::shutting_down() {
            if self.acquire(name).await? {
                return Ok(true);
            }
            let holder = self.holder(name);
            if told.as_ref() != Some(&holder) {
                waiting(holder.as_ref());
                told = Some(holder);
            }
            crate::sleep_unless_stopping(HEARTBEAT).await;
        }
        Ok(false)
    }

    /// Whether `holder` is gone: its heartbeat's sequence, read from the stream, has not moved
    /// for [`TTL`] as this instance observed it.
    async fn gone(&self, holder: &Holder) -> Result<bool, LeaseError> {
        let beat = self.last(&self.alive_subject(&holder.instance)).await?.map_or(0, |m| m.sequence);
        Ok(self.inner.view.lock().expect("lease view").gone(&holder.instance, beat))
    }

    /// Writes the claim `name` → `holder` if the subject's last message is still `expected`.
    async fn claim(&self, name: &str, expected: u64, holder: &Holder) -> Result<bool, LeaseError> {
        let subject = self.claim_subject(name);
        let payload = serde_json::to_vec(holder).expect("a holder serializes");
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .expected_last_subject_sequence(expected);
        let sent = self.inner.js.send_publish(subject, publish).await;
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) => {
                let mut view = self.inner.view.lock().expect("lease view");
                view.claims.insert(name.to_owned(), Claim { holder: holder.clone(), seq: ack.sequence });
                if !holder.instance.is_empty() {
                    tracing::info!(lease = name, instance = %holder.instance, "lease taken");
                }
                Ok(!holder.instance.is_empty())
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
            Err(e) => Err(LeaseError::Nats(format!("claim {name}: {e}"))),
        }
    }

    /// The last message of `subject`, if any.
    async fn last(&self, subject: &str) -> Result<Option<jetstream::message::StreamMessage>, LeaseError> {
        use jetstream::stream::LastRawMessageErrorKind;
        let stream = self.inner.js.get_stream(&self.inner.stream).await.map_err(|e| LeaseError::Nats(e.to_string()))?;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(LeaseError::Nats(format!("read {subject}: {e}"))),
        }
    }

    fn claim_subject(&self, name: &str) -> String {
        self.inner.ns.leases(&format!("claim.{name}"))
    }

    fn alive_subject(&self, instance: &str) -> String {
        self.inner.ns.leases(&format!("alive.{instance}"))
    }

    /// One heartbeat, acknowledged; then `alive_since` moves to when it was sent.
    async fn heartbeat(&self) -> Result<(), LeaseError> {
        let sent = Instant::now();
        let payload = serde_json::to_vec(&self.inner.me).expect("a holder serializes");
        let subject = self.alive_subject(&self.inner.me.instance);
        let ack = self.inner.js.publish(subject, payload.into()).await.map_err(|e| LeaseError::Nats(e.to_string()))?;
        ack.await.map_err(|e| LeaseError::Nats(e.to_string()))?;
        self.inner.view.lock().expect("lease view").beat_acked(sent);
        Ok(())
    }

    async fn beat(self) {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if let Err(e) = self.heartbeat().await {
                tracing::warn!(error = %e, "lease heartbeat failed");
                continue;
            }
            if let Err(e) = self.verify_and_reassert().await {
                tracing::warn!(error = %e, "lease claims not checked");
            }
        }
    }

    /// After a heartbeat gap, each claim we think we hold is read from the stream (another may
    /// have taken it); every hour, each held claim is written again.
    async fn verify_and_reassert(&self) -> Result<(), LeaseError> {
        let (unverified, due, mine) = {
            let view = self.inner.view.lock().expect("lease view");
            let mine: Vec<(String, u64)> = view
                .claims
                .iter()
                .filter(|(_, c)| c.holder.instance == self.inner.me.instance)
                .map(|(n, c)| (n.clone(), c.seq))
                .collect();
            (view.unverified, view.last_reassert.elapsed() >= REASSERT, mine)
        };
        if unverified {
            for (name, _) in &mine {
                let stored = self.last(&self.claim_subject(name)).await?;
                let holder: Holder =
                    stored.as_ref().and_then(|m| serde_json::from_slice(&m.payload).ok()).unwrap_or_default();
                if holder.instance != self.inner.me.instance {
                    tracing::warn!(lease = %name, holder = %holder, "lease lost while this instance could not say it was alive");
                    let seq = stored.map_or(0, |m| m.sequence);
                    self.inner.view.lock().expect("lease view").claims.insert(name.clone(), Claim { holder, seq });
                }
            }
            self.inner.view.lock().expect("lease view").unverified = false;
        }
        if due {
            for (name, seq) in mine {
                if !self.claim(&name, seq, &self.inner.me.clone()).await? {
                    tracing::warn!(lease = %name, "lease taken by another instance");
                }
            }
            self.inner.view.lock().expect("lease view").last_reassert = Instant::now();
        }
        Ok(())
    }

    async fn watch_consumer(&self) -> Result<jetstream::consumer::push::Ordered, LeaseError> {
        let err = |e: String| LeaseError::Nats(format!("watch {}: {e}", self.inner.stream));
        let stream = self.inner.js.get_stream(&self.inner.stream).await.map_err(|e| err(e.to_string()))?;
        let config = consumer::push::OrderedConfig {
            deliver_subject: self.inner.js_inbox(),
            filter_subject: self.inner.ns.leases(">"),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        };
        let c = stream.create_consumer(config).await.map_err(|e| err(e.to_string()))?;
        c.messages().await.map_err(|e| err(e.to_string()))
    }

    /// Keeps the view current: claims as they are written, heartbeats as they arrive.
    async fn watch(self, mut messages: jetstream::consumer::push::Ordered) {
        let (claim, alive) = (self.inner.ns.leases("claim."), self.inner.ns.leases("alive."));
        while let Some(next) = messages.next().await {
            let Ok(msg) = next else { continue };
            let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            let mut view = self.inner.view.lock().expect("lease view");
            if let Some(name) = msg.subject.strip_prefix(claim.as_str()) {
                let holder: Holder = serde_json::from_slice(&msg.payload).unwrap_or_default();
                let shown = holder.to_string();
                if view.saw_claim(&self.inner.me.instance, name, holder, seq) {
                    tracing::warn!(lease = name, holder = %shown, "lease taken by another instance");
                }
            } else if let Some(instance) = msg.subject.strip_prefix(alive.as_str()) {
                view.heard_beat(instance, seq);
            }
        }
        tracing::warn!("lease watch ended");
    }
}

/// One lease as the write paths see it: [`Fence::check`] before every durable step.
#[derive(Debug, Clone)]
pub struct Fence {
    leases: Leases,
    name: String,
}

impl Fence {
    pub fn check(&self) -> Result<(), LeaseError> {
        self.leases.check(&self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Leases {
    pub fn fence(&self, name: &str) -> Fence {
        Fence { leases: self.clone(), name: name.to_owned() }
    }
}

impl Inner {
    /// An inbox of this connection (its user's prefix: deploy/nats.conf).
    fn js_inbox(&self) -> String {
        self.js.client().new_inbox()
    }
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    //! The state machine on a paused clock: `tokio::time::advance` moves every `Instant` here.
    use super::*;

    fn holder(instance: &str) -> Holder {
        Holder { instance: instance.into(), service: "sink".into(), host: "h".into(), pid: 1 }
    }

    /// `me` alive (a heartbeat just acknowledged) and holding `name` at `seq`.
    fn holding(me: &str, name: &str, seq: u64) -> View {
        let mut v = View::new();
        v.beat_acked(Instant::now());
        v.claims.insert(name.into(), Claim { holder: holder(me), seq });
        v
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_fences_itself_margin_before_anyone_may_take_over() {
        let mut mine = holding("a", "sink", 1);
        // A standby saw a's last heartbeat at the same instant it was sent (the best case for it).
        let mut standby = View::new();
        standby.beat_acked(Instant::now());
        assert!(!standby.gone("a", 7));
        assert!(mine.holds("a", "sink"));
        tokio::time::advance(TTL - MARGIN - Duration::from_millis(1)).await;
        assert!(mine.holds("a", "sink"), "still within TTL − MARGIN");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!mine.holds("a", "sink"), "no heartbeat for TTL − MARGIN: fenced");
        assert!(!standby.gone("a", 7), "yet nobody may take over");
        tokio::time::advance(MARGIN - Duration::from_millis(1)).await;
        assert!(!standby.gone("a", 7), "MARGIN later, still not gone");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(standby.gone("a", 7), "gone after TTL unheard");
        // Its heartbeat moving again (a paused process resumed) makes it heard, not gone.
        assert!(!standby.gone("a", 8));
        // The resumed holder's late heartbeat does not make it hold again: it must check first.
        mine.beat_acked(Instant::now());
        assert!(mine.unverified && !mine.holds("a", "sink"), "after a gap: unverified");
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_seen_on_the_stream_takes_the_lease_and_older_claims_change_nothing() {
        let mut v = holding("a", "sink", 5);
        assert!(!v.saw_claim("a", "sink", holder("b"), 4), "an older claim is ignored");
        assert!(v.holds("a", "sink"));
        assert!(v.saw_claim("a", "sink", holder("b"), 6), "a newer claim by b takes it");
        assert!(!v.holds("a", "sink"));
        assert!(!v.saw_claim("a", "sink", Holder::default(), 7), "a release by b took nothing from a");
        assert!(!v.saw_claim("a", "other", holder("b"), 1), "a claim of a lease a never held");
    }

    #[tokio::test(start_paused = true)]
    async fn acquiring_asks_the_stream_only_when_it_may_succeed() {
        let mut v = View::new();
        assert_eq!(v.precheck("a", "sink"), Precheck::CannotSayAlive, "no heartbeat acknowledged yet");
        v.beat_acked(Instant::now());
        assert_eq!(v.precheck("a", "sink"), Precheck::AskStream, "nobody holds it");
        v.claims.insert("sink".into(), Claim { holder: holder("b"), seq: 3 });
        v.heard_beat("b", 10);
        assert_eq!(v.precheck("a", "sink"), Precheck::HeldByLive);
        // a beats every HEARTBEAT; b's heartbeat stays at 10.
        let start = Instant::now();
        while start.elapsed() < TTL {
            tokio::time::advance(HEARTBEAT).await;
            v.beat_acked(Instant::now());
            v.heard_beat("b", 10);
        }
        assert!(!v.unverified, "a regular heartbeat leaves nothing to check");
        assert_eq!(v.precheck("a", "sink"), Precheck::AskStream, "b unheard for TTL");
        v.claims.insert("sink".into(), Claim { holder: holder("a"), seq: 4 });
        assert_eq!(v.precheck("a", "sink"), Precheck::Held);
        v.claims.insert("sink".into(), Claim { holder: Holder::default(), seq: 5 });
        assert_eq!(v.precheck("a", "sink"), Precheck::AskStream, "released");
    }
}
