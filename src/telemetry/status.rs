//! What the admin status page shows that Prometheus does not keep: recent errors by
//! `error_code` (with the last path that met each), the principals (rate-limit keys) refused
//! most often recently, rejection rates per rate-limit policy over the last minutes, and the
//! TLS certificates' expiry. Process-wide ([`StatusBoard`], one per `Metrics`), so reloads
//! keep it.
//!
//! "Recent" is two windows of [`WINDOW`]: the current one and the one before, so a count
//! covers between one and two windows. Everything is bounded: at most [`MAX_KEYS`] refused
//! keys per window (later ones are counted under `other`), paths cut to [`MAX_PATH`] bytes.
//! Only refusals and errors take the board's locks; an allowed request never does.
//!
//! It stores what clients sent (paths, principal names) as they sent it: the page escapes
//! everything it renders (`server::status_page`).
//!
//! The TLS hook: whoever loads certificates calls [`StatusBoard::set_certificates`] with a
//! name and `not_after` per certificate (at start and after every reload); until then the page
//! says "no TLS".

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// The length of one window of "recent".
pub const WINDOW: Duration = Duration::from_secs(300);
/// Most distinct refused keys kept per window.
pub const MAX_KEYS: usize = 1024;
/// Longest path kept for an error.
pub const MAX_PATH: usize = 200;
/// How many of the most refused keys the page lists.
pub const TOP: usize = 10;

/// A certificate the gateway serves, for the expiry section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateExpiry {
    /// What the operator calls it (the listener, or the certificate's file or SNI name).
    pub name: String,
    pub not_after: SystemTime,
}

/// One error code's recent count and last sighting.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentError {
    pub code: String,
    pub count: u64,
    pub status: u16,
    pub last_path: String,
    pub last_seen: SystemTime,
}

/// A key refused by a policy, and how often recently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub policy: String,
    pub key: String,
    pub count: u64,
}

/// A policy's decisions over the sampled period.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRate {
    pub policy: String,
    pub allowed: u64,
    pub denied: u64,
    /// Seconds the counts cover.
    pub over_s: f64,
}

/// Counts per key in the current and the previous window.
struct Windowed<K> {
    started: Instant,
    current: HashMap<K, Entry>,
    previous: HashMap<K, Entry>,
    /// Keys refused in the current window beyond `MAX_KEYS`.
    overflow: u64,
}

#[derive(Clone)]
struct Entry {
    count: u64,
    status: u16,
    last_path: String,
    last_seen: SystemTime,
}

impl<K: std::hash::Hash + Eq + Clone> Windowed<K> {
    fn new(now: Instant) -> Self {
        Windowed {
            started: now,
            current: HashMap::new(),
            previous: HashMap::new(),
            overflow: 0,
        }
    }

    fn rotate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= 2 * WINDOW {
            self.previous.clear();
            self.current.clear();
            self.overflow = 0;
            self.started = now;
        } else if elapsed >= WINDOW {
            self.previous = std::mem::take(&mut self.current);
            self.overflow = 0;
            self.started += WINDOW;
        }
    }

    fn add(&mut self, now: Instant, key: K, status: u16, path: &str) {
        self.rotate(now);
        let full = self.current.len() >= MAX_KEYS;
        let entry = match self.current.get_mut(&key) {
            Some(entry) => entry,
            None if full => {
                self.overflow += 1;
                return;
            }
            None => self.current.entry(key).or_insert(Entry {
                count: 0,
                status,
                last_path: String::new(),
                last_seen: SystemTime::now(),
            }),
        };
        entry.count += 1;
        entry.status = status;
        entry.last_seen = SystemTime::now();
        if !path.is_empty() {
            entry.last_path = cut(path, MAX_PATH).to_owned();
        }
    }

    /// Both windows merged.
    fn merged(&mut self, now: Instant) -> HashMap<K, Entry> {
        self.rotate(now);
        let mut merged = self.previous.clone();
        for (key, entry) in &self.current {
            merged
                .entry(key.clone())
                .and_modify(|e| {
                    e.count += entry.count;
                    e.status = entry.status;
                    e.last_path = entry.last_path.clone();
                    e.last_seen = entry.last_seen;
                })
                .or_insert_with(|| entry.clone());
        }
        merged
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Samples of every policy's decision counters, to tell a recent rejection rate.
type Sample = (Instant, Vec<(String, u64, u64)>);

/// The status page's own memory (see the module docs).
pub struct StatusBoard {
    errors: Mutex<Windowed<Cow<'static, str>>>,
    limited: Mutex<Windowed<(Arc<str>, String)>>,
    samples: Mutex<VecDeque<Sample>>,
    certificates: Mutex<Option<Vec<CertificateExpiry>>>,
}

impl std::fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusBoard").finish_non_exhaustive()
    }
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl StatusBoard {
    pub fn new() -> StatusBoard {
        let now = Instant::now();
        StatusBoard {
            errors: Mutex::new(Windowed::new(now)),
            limited: Mutex::new(Windowed::new(now)),
            samples: Mutex::new(VecDeque::new()),
            certificates: Mutex::new(None),
        }
    }

    /// Notes an error answer.
    pub fn error(&self, code: Cow<'static, str>, status: u16, path: &str) {
        lock(&self.errors).add(Instant::now(), code, status, path);
    }

    /// Notes a request refused by `policy` for `key` (a principal, tenant or client IP key).
    pub fn limited(&self, policy: &Arc<str>, key: &dyn std::fmt::Display) {
        let key = cut(&key.to_string(), MAX_PATH).to_owned();
        lock(&self.limited).add(Instant::now(), (policy.clone(), key), 429, "");
    }

    /// Recent errors, most frequent first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        let merged = lock(&self.errors).merged(Instant::now());
        let mut errors: Vec<RecentError> = merged
            .into_iter()
            .map(|(code, e)| RecentError {
                code: code.into_owned(),
                count: e.count,
                status: e.status,
                last_path: e.last_path,
                last_seen: e.last_seen,
            })
            .collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
        errors
    }

    /// The [`TOP`] keys refused most often recently, and how many refusals were not kept
    /// (beyond [`MAX_KEYS`]).
    pub fn top_limited(&self) -> (Vec<Limited>, u64) {
        let mut windowed = lock(&self.limited);
        let merged = windowed.merged(Instant::now());
        let overflow = windowed.overflow;
        drop(windowed);
        let mut top: Vec<Limited> = merged
            .into_iter()
            .map(|((policy, key), e)| Limited {
                policy: policy.to_string(),
                key,
                count: e.count,
            })
            .collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        top.truncate(TOP);
        (top, overflow)
    }

    /// Records the decision counters now (`(policy, allowed, denied)` totals) and returns each
    /// policy's decisions since the oldest sample kept (at most [`WINDOW`] old; the totals
    /// since start when there is none).
    pub fn policy_rates(&self, totals: Vec<(String, u64, u64)>) -> Vec<PolicyRate> {
        let now = Instant::now();
        let mut samples = lock(&self.samples);
        while samples
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > WINDOW)
        {
            samples.pop_front();
        }
        let oldest = samples.front().cloned();
        let rates = totals
            .iter()
            .map(|(policy, allowed, denied)| {
                let (then, over_s) = match &oldest {
                    Some((at, old)) => (
                        old.iter()
                            .find(|(p, _, _)| p == policy)
                            .map_or((0, 0), |(_, a, d)| (*a, *d)),
                        now.saturating_duration_since(*at).as_secs_f64(),
                    ),
                    None => ((0, 0), 0.0),
                };
                PolicyRate {
                    policy: policy.clone(),
                    allowed: allowed.saturating_sub(then.0),
                    denied: denied.saturating_sub(then.1),
                    over_s,
                }
            })
            .collect();
        // One sample per 10 s is plenty, however often the page is read.
        if samples
            .back()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= Duration::from_secs(10))
        {
            samples.push_back((now, totals));
        }
        rates
    }

    /// The TLS hook: the certificates served, replacing any earlier list.
    pub fn set_certificates(&self, certificates: Vec<CertificateExpiry>) {
        *lock(&self.certificates) = Some(certificates);
    }

    /// `None`: nothing was ever reported (no TLS).
    pub fn certificates(&self) -> Option<Vec<CertificateExpiry>> {
        lock(&self.certificates).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_rotate_and_forget_after_two() {
        let start = Instant::now();
        let mut w: Windowed<&str> = Windowed::new(start);
        w.add(start, "a", 404, "/x");
        w.add(start + WINDOW, "b", 404, "/y");
        let merged = w.merged(start + WINDOW);
        assert_eq!(merged.len(), 2, "the previous window still counts");
        let merged = w.merged(start + 3 * WINDOW);
        assert!(merged.is_empty(), "two windows later nothing is recent");
    }

    #[test]
    fn refused_keys_are_bounded_and_the_rest_counted() {
        let start = Instant::now();
        let mut w: Windowed<String> = Windowed::new(start);
        for i in 0..MAX_KEYS + 5 {
            w.add(start, format!("k{i}"), 429, "");
        }
        assert_eq!(w.current.len(), MAX_KEYS);
        assert_eq!(w.overflow, 5);
    }

    #[test]
    fn top_limited_lists_the_most_refused_first_and_at_most_ten() {
        let board = StatusBoard::new();
        let policy: Arc<str> = Arc::from("principal");
        for i in 0..15 {
            for _ in 0..=i {
                board.limited(&policy, &format!("user{i}"));
            }
        }
        let (top, overflow) = board.top_limited();
        assert_eq!(top.len(), TOP);
        assert_eq!(top[0].key, "user14");
        assert_eq!(top[0].count, 15);
        assert_eq!(overflow, 0);
    }

    #[test]
    fn paths_are_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        assert!(cut(&long, MAX_PATH).len() <= MAX_PATH);
        assert!(cut(&long, MAX_PATH).chars().all(|c| c == 'é'));
    }

    #[test]
    fn policy_rates_are_differences_since_the_oldest_sample() {
        let board = StatusBoard::new();
        let first = board.policy_rates(vec![("p".into(), 10, 2)]);
        assert_eq!((first[0].allowed, first[0].denied), (10, 2));
        let second = board.policy_rates(vec![("p".into(), 15, 5)]);
        assert_eq!((second[0].allowed, second[0].denied), (5, 3));
    }
}
