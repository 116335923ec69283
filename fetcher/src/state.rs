//! What the fetcher knows of a shop between polls: what it last published for each order line
//! (so re-polling unchanged orders publishes nothing), which lines it still follows, when each
//! family of calls last completed, and the shop's credential dates.
//!
//! The state is durable: after every complete poll it is stored as one message per shop on
//! `qoo10.state.<shop>` (stream `QOO10_FETCH_STATE`, one message kept per subject), and read back
//! at start. A restart therefore neither re-publishes everything nor loses a change, and windows
//! start where the last good call of their kind ended.
//!
//! The `Nats-Msg-Id` of a row names its content *and* the content it replaces, so a line that
//! goes A → B → A publishes three distinct messages (JetStream would drop a second "A" inside its
//! duplicate window if the id named the content alone).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use schemas::alert::Alert;
use schemas::qapi::RowFacts;
use schemas::raw::RowKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::{Family, Progress};

/// Content hash of a row (hex, 96 bits: collisions are not a practical concern per order line).
pub fn row_hash(row_bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(row_bytes)[..12])
}

/// A line the fetcher has seen, as compact as the state message needs it (days are days since
/// 1970-01-01).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    #[serde(rename = "p")]
    pub pack_no: u64,
    /// Order date (JST).
    #[serde(rename = "d")]
    pub ordered: u16,
    /// Shipping status last seen (0: only a claim row was seen).
    #[serde(rename = "s")]
    pub status: u8,
    #[serde(rename = "k")]
    pub claim: u8,
    /// The day (UTC) a poll last returned it.
    #[serde(rename = "t")]
    pub seen: u16,
    /// The version (fetch time, µs) last published for it: the next one is always above, whatever
    /// the clock does.
    #[serde(rename = "v", default)]
    pub version: i64,
}

impl Line {
    fn terminal(&self) -> bool {
        schemas::status::is_terminal(self.status, self.claim)
    }
}

fn day(d: NaiveDate) -> u16 {
    u16::try_from(schemas::time::epoch_day(d)).unwrap_or(0)
}

fn date(d: u16) -> NaiveDate {
    schemas::time::from_epoch_day(i64::from(d))
}

/// How long a line that ended (delivered, cancelled, …) is remembered after a poll last returned
/// it: the windows that return such a line do so only around its last transition.
const ENDED_KEPT_DAYS: i64 = 3;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchState {
    /// `"order:1090000101"` → content hash last published.
    rows: HashMap<String, String>,
    /// The lines followed (and those recently ended), by order number.
    #[serde(default)]
    lines: HashMap<u64, Line>,
    /// `"recent:order"` → when that family's calls of that kind last completed.
    #[serde(default)]
    families: BTreeMap<String, DateTime<Utc>>,
    /// A complete poll has been made: the shop's first import is done.
    #[serde(default)]
    pub imported: bool,
    /// When the last complete poll finished: a restart waits out the rest of the interval
    /// instead of polling every shop at once.
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    /// The last failed poll: when, and why (no secrets: error texts are scrubbed).
    #[serde(default)]
    pub last_error: Option<(DateTime<Utc>, String)>,
    /// The open `credentials_invalid` alerts, by what was refused: the certification key
    /// (`""`) or a method Qoo10 does not permit. Resolved by the next poll it succeeds in.
    #[serde(default)]
    pub credentials_alerts: BTreeMap<String, Alert>,
    /// Written by earlier versions (one alert at most); read into `credentials_alerts`.
    #[serde(default, rename = "credentials_alert", skip_serializing)]
    legacy_credentials_alert: Option<Alert>,
    /// The API key (a fingerprint, never the key) and the day it was first certified (JST).
    #[serde(default)]
    pub key_certified: Option<(String, NaiveDate)>,
    /// The open `credentials_expiring` alert, if any.
    #[serde(default)]
    pub expiring_alert: Option<Alert>,
    /// Stored as a head and this many parts holding the lines (0: everything in one message, as
    /// earlier versions stored it).
    #[serde(default)]
    parts: u32,
    /// Hashes and lines seen in the poll under way; merged in when the poll completes.
    #[serde(skip)]
    current: HashMap<String, String>,
    #[serde(skip)]
    current_lines: HashMap<u64, Line>,
    /// Rows of the poll under way that JetStream acknowledged: kept even if the poll fails.
    #[serde(skip)]
    confirmed: std::collections::HashSet<String>,
}

/// The most a stored part of the state holds, about.
pub const PART_BYTES: usize = 256 * 1024;

/// Lines and their hashes, a share of them (see [`FetchState::to_messages`]).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Part {
    rows: HashMap<String, String>,
    lines: HashMap<u64, Line>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Same content as last published: nothing to do.
    Unchanged,
    /// New or changed: publish with this message id.
    Publish { msg_id: String },
}

/// What the fetcher says of a row besides publishing it (the envelope's marks).
#[derive(Debug, PartialEq, Eq)]
pub struct Observed {
    pub decision: Decision,
    /// The shop's first import is under way.
    pub first_import: bool,
    /// A line never seen before, in a cart an earlier complete poll already returned.
    pub new_in_known_cart: bool,
}

impl FetchState {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let mut state: FetchState = serde_json::from_slice(bytes)?;
        // A state written before the first-import mark existed: a complete poll has been made.
        state.imported |= state.last_success.is_some();
        if let Some(a) = state.legacy_credentials_alert.take() {
            state.credentials_alerts.entry(String::new()).or_insert(a);
        }
        Ok(state)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("maps of strings and numbers serialize")
    }

    /// The state as stored: a head (everything but the lines and their hashes) and parts of at
    /// most about [`PART_BYTES`] each, line `n` in part `n % parts`, so no message nears NATS's
    /// 1 MB `max_payload` however many lines a shop follows.
    pub fn to_messages(&self) -> (Vec<u8>, Vec<Vec<u8>>) {
        // About 100 bytes a line as JSON (its entry and its hashes).
        let estimate = self.lines.len().max(self.rows.len()) * 100;
        let parts = estimate.div_ceil(PART_BYTES).max(1).next_power_of_two();
        let mut split: Vec<Part> = (0..parts).map(|_| Part::default()).collect();
        for (n, line) in &self.lines {
            split[(*n % parts as u64) as usize].lines.insert(*n, *line);
        }
        for (key, hash) in &self.rows {
            let n = key.rsplit(':').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            split[(n % parts as u64) as usize].rows.insert(key.clone(), hash.clone());
        }
        let head = FetchState { rows: HashMap::new(), lines: HashMap::new(), parts: parts as u32, ..self.clone() };
        let parts = split.iter().map(|p| serde_json::to_vec(p).expect("maps serialize")).collect();
        (head.to_bytes(), parts)
    }

    /// How many parts the head says there are (0: the head holds everything).
    pub fn parts(&self) -> u32 {
        self.parts
    }

    /// Adds a stored part's lines and hashes to a state read from its head.
    pub fn add_part(&mut self, bytes: &[u8]) -> Result<(), serde_json::Error> {
        let part: Part = serde_json::from_slice(bytes)?;
        self.rows.extend(part.rows);
        self.lines.extend(part.lines);
        Ok(())
    }

    /// Lines known (followed or recently ended).
    pub fn len(&self) -> usize {
        self.lines.len().max(self.rows.len())
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.lines.is_empty()
    }

    /// Records a row seen in the current poll and says whether to publish it.
    pub fn observe(&mut self, shop: &str, kind: RowKind, facts: &RowFacts, hash: &str, today: NaiveDate) -> Observed {
        let first_import = !self.imported;
        let Some(order_no) = facts.order_no else {
            // No order number: cannot be tracked; publish (the normalizer dead-letters it).
            let msg_id = format!("raw:{shop}:{}:-:{hash}", kind.as_str());
            return Observed { decision: Decision::Publish { msg_id }, first_import, new_in_known_cart: false };
        };
        let known = self.lines.contains_key(&order_no) || self.current_lines.contains_key(&order_no);
        let new_in_known_cart = !first_import
            && !known
            && kind == RowKind::Order
            && facts.pack_no.is_some_and(|p| self.lines.values().any(|l| l.pack_no == p));
        self.note_line(order_no, kind, facts, today);
        let key = format!("{}:{order_no}", kind.as_str());
        let previous = self.current.get(&key).or_else(|| self.rows.get(&key)).cloned();
        self.current.insert(key, hash.to_owned());
        let decision = match previous {
            Some(p) if p == hash => Decision::Unchanged,
            p => Decision::Publish {
                msg_id: format!("raw:{shop}:{}:{order_no}:{hash}:{}", kind.as_str(), p.as_deref().unwrap_or("-")),
            },
        };
        Observed { decision, first_import, new_in_known_cart }
    }

    fn note_line(&mut self, order_no: u64, kind: RowKind, facts: &RowFacts, today: NaiveDate) {
        let before = self.current_lines.get(&order_no).or_else(|| self.lines.get(&order_no)).copied();
        let mut line = before.unwrap_or(Line { pack_no: 0, ordered: 0, status: 0, claim: 0, seen: 0, version: 0 });
        line.pack_no = facts.pack_no.unwrap_or(line.pack_no);
        line.ordered = facts.ordered.map(day).unwrap_or(line.ordered);
        match kind {
            RowKind::Order => line.status = facts.shipping_status.unwrap_or(line.status),
            RowKind::Claim => line.claim = facts.claim_status.unwrap_or(line.claim),
        }
        line.seen = day(today);
        self.current_lines.insert(order_no, line);
    }

    /// The poll completed at `now` after running these families' calls: what it saw is merged
    /// in, the families' windows move on, and lines that ended days ago or fell out of
    /// `follow_days` are forgotten.
    pub fn complete_poll(&mut self, now: DateTime<Utc>, ran: &[(Family, RowKind)], follow_days: u32) {
        self.confirmed.clear();
        self.rows.extend(std::mem::take(&mut self.current));
        self.lines.extend(std::mem::take(&mut self.current_lines));
        for (family, kind) in ran {
            self.families.insert(family_key(*family, *kind), now);
        }
        // The first import covered the look-back: the long windows, which reach before it, start
        // a day later (a line it did not return is no news an hour later).
        if !self.imported {
            self.families.entry(family_key(Family::Long, RowKind::Order)).or_insert(now);
        }
        self.imported = true;
        let today = schemas::time::today_jst(now);
        let ended_before = day(today - Duration::days(ENDED_KEPT_DAYS));
        let followed_from = day(today - Duration::days(i64::from(follow_days) + 1));
        self.lines.retain(|_, l| !(l.terminal() && l.seen < ended_before) && l.ordered >= followed_from);
        let lines = &self.lines;
        self.rows.retain(|key, _| {
            key.rsplit(':').next().and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| lines.contains_key(&n))
        });
    }

    /// The version a row of `order_no` fetched at `fetched_at` is published with: the fetch
    /// time, or just above the line's last published version when the clock went back.
    pub fn version_for(&self, order_no: Option<u64>, fetched_at: DateTime<Utc>) -> DateTime<Utc> {
        let last = order_no
            .and_then(|n| self.current_lines.get(&n).or_else(|| self.lines.get(&n)))
            .map_or(i64::MIN, |l| l.version);
        if fetched_at.timestamp_micros() > last {
            return fetched_at;
        }
        DateTime::from_timestamp_micros(last + 1).unwrap_or(fetched_at)
    }

    /// JetStream acknowledged the row of `kind` for `order_no`, published with `version`.
    pub fn confirm(&mut self, kind: RowKind, order_no: u64, version: DateTime<Utc>) {
        self.confirmed.insert(format!("{}:{order_no}", kind.as_str()));
        if let Some(line) = self.current_lines.get_mut(&order_no) {
            line.version = line.version.max(version.timestamp_micros());
        }
    }

    /// The poll failed: what JetStream acknowledged is kept (a change published, then reverted
    /// before the next good poll, must be published again), the rest forgotten; the windows stay
    /// where the last complete poll left them.
    pub fn abandon_poll(&mut self) {
        let confirmed = std::mem::take(&mut self.confirmed);
        for (key, hash) in self.current.drain() {
            if confirmed.contains(&key) {
                self.rows.insert(key, hash);
            }
        }
        self.lines.extend(self.current_lines.drain());
    }

    /// What the planner needs: whether the first import is done, when each family last
    /// completed, and the order date of the oldest line still open in statuses 1–3.
    pub fn progress(&self) -> Progress {
        let last = self.families.iter().filter_map(|(k, t)| parse_family_key(k).map(|key| (key, *t))).collect();
        let oldest_open =
            self.lines.values().filter(|l| !l.terminal() && l.status <= 3).map(|l| l.ordered).min().map(date);
        Progress { imported: self.imported, last, oldest_open }
    }

    /// How far `clock` is behind the newest time this state recorded (a completed call, a
    /// line's published version), if it is: a clock stepped back. A poll then moves its times up
    /// by that much, so that its versions, fetch times and windows keep their order with the
    /// last poll's, and `order_vanished` still compares like with like.
    pub fn behind(&self, clock: DateTime<Utc>) -> Option<chrono::Duration> {
        let calls = self.families.values().copied().max();
        let lines = self.lines.values().map(|l| l.version).max().and_then(DateTime::from_timestamp_micros);
        let newest = calls.max(lines)?;
        (newest >= clock).then(|| newest - clock + chrono::Duration::milliseconds(1))
    }

    /// The order numbers of this cart that the state knows.
    pub fn cart(&self, pack_no: u64) -> Vec<u64> {
        let mut nos: Vec<u64> = self.lines.iter().filter(|(_, l)| l.pack_no == pack_no).map(|(n, _)| *n).collect();
        nos.sort_unstable();
        nos
    }
}

fn family_key(family: Family, kind: RowKind) -> String {
    format!("{}:{}", family.name(), kind.as_str())
}

fn parse_family_key(key: &str) -> Option<(Family, RowKind)> {
    let (f, k) = key.split_once(':')?;
    let family = [Family::Recent, Family::Slow, Family::Long].into_iter().find(|x| x.name() == f)?;
    let kind = [RowKind::Order, RowKind::Claim].into_iter().find(|x| x.as_str() == k)?;
    Some((family, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(order_no: u64, pack_no: u64, status: u8, ordered: &str) -> RowFacts {
        RowFacts {
            order_no: Some(order_no),
            pack_no: Some(pack_no),
            shipping_status: Some(status),
            claim_status: None,
            ordered: NaiveDate::parse_from_str(ordered, "%Y-%m-%d").ok(),
        }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 29).unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-11-29T03:00:00Z".parse().unwrap()
    }

    fn publish(s: &mut FetchState, order: u64, hash: &str) -> Decision {
        s.observe("s", RowKind::Order, &facts(order, 7, 2, "2026-11-28"), hash, today()).decision
    }

    #[test]
    fn unchanged_rows_are_skipped_changed_rows_published() {
        let mut s = FetchState::default();
        assert_eq!(publish(&mut s, 1, "aa"), Decision::Publish { msg_id: "raw:s:order:1:aa:-".into() });
        s.complete_poll(now(), &[], 365);
        assert_eq!(publish(&mut s, 1, "aa"), Decision::Unchanged);
        s.complete_poll(now(), &[], 365);
        assert_eq!(publish(&mut s, 1, "bb"), Decision::Publish { msg_id: "raw:s:order:1:bb:aa".into() });
        s.complete_poll(now(), &[], 365);
        // Back to the first content: a new id, so JetStream will not drop it as a duplicate.
        assert_eq!(publish(&mut s, 1, "aa"), Decision::Publish { msg_id: "raw:s:order:1:aa:bb".into() });
    }

    #[test]
    fn a_clock_behind_the_state_is_measured_from_its_newest_time() {
        let mut s = FetchState::default();
        assert_eq!(s.behind(now()), None, "an empty state: any clock will do");
        publish(&mut s, 1, "aa");
        s.confirm(RowKind::Order, 1, now() + chrono::Duration::minutes(4));
        s.complete_poll(now(), &[(Family::Recent, RowKind::Order)], 365);
        assert_eq!(s.behind(now() + chrono::Duration::minutes(5)), None, "a clock ahead is used as it is");
        let back = now() - chrono::Duration::hours(3);
        let skew = s.behind(back).expect("stepped back");
        assert!(back + skew > now() + chrono::Duration::minutes(4), "past the newest version: {skew}");
    }

    #[test]
    fn a_failed_poll_keeps_the_last_complete_state() {
        let mut s = FetchState::default();
        publish(&mut s, 1, "aa");
        s.complete_poll(now(), &[], 365);
        publish(&mut s, 1, "bb");
        s.abandon_poll();
        assert_eq!(publish(&mut s, 1, "bb"), Decision::Publish { msg_id: "raw:s:order:1:bb:aa".into() });
    }

    #[test]
    fn what_a_failed_poll_published_is_kept() {
        let mut s = FetchState::default();
        publish(&mut s, 1, "aa");
        s.complete_poll(now(), &[], 365);
        publish(&mut s, 1, "bb");
        s.confirm(RowKind::Order, 1, now());
        s.abandon_poll();
        assert_eq!(publish(&mut s, 1, "aa"), Decision::Publish { msg_id: "raw:s:order:1:aa:bb".into() }, "bb went out");
    }

    #[test]
    fn versions_never_go_back_whatever_the_clock_does() {
        let mut s = FetchState::default();
        publish(&mut s, 1, "aa");
        s.confirm(RowKind::Order, 1, now());
        s.complete_poll(now(), &[], 365);
        let stepped_back = now() - Duration::hours(3);
        let v = s.version_for(Some(1), stepped_back);
        assert_eq!(v, now() + Duration::microseconds(1));
        assert_eq!(s.version_for(Some(1), now() + Duration::hours(1)), now() + Duration::hours(1));
        assert_eq!(s.version_for(Some(2), stepped_back), stepped_back, "a new line takes the clock");
        let back = FetchState::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back.version_for(Some(1), stepped_back), v, "durable");
    }

    #[test]
    fn lines_a_poll_does_not_return_are_still_followed() {
        let mut s = FetchState::default();
        publish(&mut s, 1, "aa");
        s.complete_poll(now(), &[(Family::Recent, RowKind::Order)], 365);
        s.complete_poll(now() + Duration::days(20), &[], 365);
        assert_eq!(publish(&mut s, 1, "aa"), Decision::Unchanged, "twenty days unseen, still followed");
        assert_eq!(s.progress().oldest_open, NaiveDate::from_ymd_opt(2026, 11, 28));
        // Delivered: ended, and forgotten a few days after a poll last returned it.
        s.observe("s", RowKind::Order, &facts(1, 7, 5, "2026-11-28"), "cc", today());
        s.complete_poll(now(), &[], 365);
        assert_eq!(s.progress().oldest_open, None, "a delivered line is not open");
        s.complete_poll(now() + Duration::days(4), &[], 365);
        assert!(s.is_empty());
    }

    #[test]
    fn first_import_and_lines_new_in_a_known_cart_are_marked() {
        let mut s = FetchState::default();
        let o = s.observe("s", RowKind::Order, &facts(1, 7, 2, "2026-11-28"), "aa", today());
        assert!(o.first_import && !o.new_in_known_cart);
        let same_poll = s.observe("s", RowKind::Order, &facts(2, 7, 2, "2026-11-28"), "aa", today());
        assert!(!same_poll.new_in_known_cart, "the cart is new in this poll");
        s.complete_poll(now(), &[(Family::Recent, RowKind::Order)], 365);
        let added = s.observe("s", RowKind::Order, &facts(3, 7, 2, "2026-11-28"), "aa", today());
        assert!(!added.first_import && added.new_in_known_cart);
        let other = s.observe("s", RowKind::Order, &facts(4, 8, 2, "2026-11-28"), "aa", today());
        assert!(!other.new_in_known_cart);
        assert_eq!(s.cart(7), [1, 2]);
        let p = s.progress();
        assert!(p.imported && p.last.contains(&((Family::Recent, RowKind::Order), now())));
    }

    #[test]
    fn a_large_state_is_stored_in_parts_well_below_the_payload_limit() {
        let mut s = FetchState::default();
        for n in 0..30_000u64 {
            s.observe(
                "s",
                RowKind::Order,
                &facts(1_000_000_000 + n, n, 2, "2026-11-28"),
                "0123456789abcdef01234567",
                today(),
            );
        }
        s.complete_poll(now(), &[(Family::Recent, RowKind::Order)], 365);
        let (head, parts) = s.to_messages();
        assert_eq!(parts.len(), 16, "about 3 MB in parts of at most 256 KiB, a power of two");
        assert_eq!(FetchState::from_bytes(&head).unwrap().len(), 0, "the head holds no lines");
        assert!(parts.iter().all(|p| p.len() < 512 * 1024), "{:?}", parts.iter().map(Vec::len).collect::<Vec<_>>());
        let mut back = FetchState::from_bytes(&head).unwrap();
        assert_eq!(back.parts() as usize, parts.len());
        for p in &parts {
            back.add_part(p).unwrap();
        }
        assert_eq!(back.len(), 30_000);
        assert_eq!(back.progress(), s.progress());
    }

    #[test]
    fn state_survives_a_round_trip_and_reads_older_states() {
        let mut s = FetchState::default();
        s.observe("s", RowKind::Claim, &facts(9, 7, 0, "2026-11-28"), "cc", today());
        s.complete_poll(now(), &[(Family::Slow, RowKind::Claim)], 365);
        let back = FetchState::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.len(), 1);
        let old = br#"{"rows":{"order:1":"aa"},"last_success":"2026-11-29T00:00:00Z","credentials_alert":null}"#;
        let old = FetchState::from_bytes(old).unwrap();
        assert!(old.imported, "a state with a complete poll has made its first import");
    }

    #[test]
    fn hashes_name_content() {
        assert_eq!(row_hash(b"a").len(), 24);
        assert_ne!(row_hash(b"a"), row_hash(b"b"));
        assert_eq!(row_hash(b"a"), row_hash(b"a"));
        let key = family_key(Family::Long, RowKind::Claim);
        assert_eq!(parse_family_key(&key), Some((Family::Long, RowKind::Claim)));
        assert_eq!(parse_family_key("long:other"), None);
    }

    /// Edges of forgetting: an ended line is kept ENDED_KEPT_DAYS after it was last seen, a
    /// line is followed follow_days (+1 for the JST day) after its order date.
    #[test]
    fn lines_are_forgotten_exactly_at_their_edges() {
        let mut s = FetchState::default();
        assert!(s.is_empty());
        let delivered = |n| facts(n, n, 5, "2026-11-20");
        for (n, seen) in [(1, today() - Duration::days(3)), (2, today() - Duration::days(4))] {
            s.observe("s", RowKind::Order, &delivered(n), "h", seen);
        }
        s.observe("s", RowKind::Order, &facts(3, 3, 2, "2026-11-18"), "h", today()); // 10 + 1 days ago
        s.observe("s", RowKind::Order, &facts(4, 4, 2, "2026-11-17"), "h", today());
        s.complete_poll(now(), &[], 10);
        let mut kept: Vec<u64> = s.lines.keys().copied().collect();
        kept.sort();
        assert_eq!(kept, [1, 3]);
        assert!(!s.is_empty());
        assert_eq!(s.rows.len(), 2, "hashes of forgotten lines go with them");
    }

    /// The first import starts the long windows; a new line in a known cart is marked once a
    /// poll; a clock that stands still still raises the version; only lines still to ship are
    /// "open".
    #[test]
    fn first_import_marks_versions_and_open_lines() {
        let mut s = FetchState::default();
        s.observe("s", RowKind::Order, &facts(1, 7, 2, "2026-11-28"), "a", today());
        s.complete_poll(now(), &[(Family::Recent, RowKind::Order)], 365);
        assert_eq!(s.families.get("long:order"), Some(&now()), "the first import covered the long window");
        let later = now() + Duration::hours(1);
        s.complete_poll(later, &[(Family::Recent, RowKind::Order)], 365);
        assert_eq!(s.families.get("long:order"), Some(&now()), "only the first import sets it");
        let first = s.observe("s", RowKind::Order, &facts(2, 7, 2, "2026-11-28"), "b", today());
        let again = s.observe("s", RowKind::Order, &facts(2, 7, 2, "2026-11-28"), "b", today());
        assert!(first.new_in_known_cart && !again.new_in_known_cart, "seen once already in this poll");
        s.confirm(RowKind::Order, 2, now());
        assert_eq!(s.version_for(Some(2), now()), now() + Duration::microseconds(1), "the same instant again");
        assert_eq!(s.version_for(Some(2), later), later);
        s.observe("s", RowKind::Order, &facts(3, 8, 4, "2026-11-01"), "c", today()); // shipping: not open
        s.observe("s", RowKind::Order, &facts(4, 9, 5, "2026-11-02"), "d", today()); // delivered
        s.observe("s", RowKind::Order, &facts(5, 9, 3, "2026-11-10"), "e", today());
        s.complete_poll(later, &[], 365);
        assert_eq!(s.progress().oldest_open, NaiveDate::from_ymd_opt(2026, 11, 10));
    }
}
