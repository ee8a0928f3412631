//! The standard route: carrier trunks by priority and weight, with failover.
//!
//! A stateless proxy keeps no transactions, so a trunk's health is read from the traffic
//! itself: the oldest INVITE sent to it that no response has followed yet. If nothing
//! comes back within the timeout, or the trunk answers 503, or the kernel reports it
//! unreachable, it is taken out for a back-off that doubles on each failure in a row and
//! resets once it answers again.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use tracing::{info, warn};

use super::{
    counters::{ProxyCounter, ProxyCounters},
    settings::{ProxyConfig, Trunk},
};

/// Milliseconds since the [`Trunks`] were made, never 0 (0 means "none" in the atomics).
pub type Millis = u64;

#[derive(Debug, Default)]
struct TrunkState {
    /// While `now < down_until` the trunk is out. 0: up.
    down_until: AtomicU64,
    /// When the oldest unanswered INVITE was sent; 0: none pending.
    pending_since: AtomicU64,
    backoff: AtomicU64,
    /// Taken out and not yet heard from since.
    failed: AtomicBool,
}

/// Which trunk takes a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Trunk {
        index: usize,
        address: SocketAddr,
    },
    /// Every trunk is out; the earliest comes back in this many seconds.
    AllDown {
        retry_after_s: u32,
    },
    NoTrunks,
}

/// The trunks as configured, with their states; a reload swaps in a new set.
#[derive(Debug)]
struct TrunkSet {
    list: Vec<Trunk>,
    /// By position in `list`; shared with the previous set for trunks a reload kept.
    state: Vec<Arc<TrunkState>>,
    timeout: Millis,
    retry: Millis,
    retry_max: Millis,
}

#[derive(Debug)]
pub struct Trunks {
    set: ArcSwap<TrunkSet>,
    epoch: Instant,
    counters: Arc<ProxyCounters>,
}

/// One trunk as `fastpath status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrunkStatus {
    pub name: String,
    pub address: SocketAddr,
    pub priority: u32,
    pub weight: u32,
    pub up: bool,
    /// While out: milliseconds until it is tried again.
    pub retry_in_ms: u64,
}

impl TrunkSet {
    /// `config`'s trunks, keeping the state of those `previous` had at the same address
    /// (a reload does not bring a failed trunk back early, nor forget a pending INVITE).
    fn new(config: &ProxyConfig, previous: Option<&TrunkSet>) -> Self {
        let ms = |d: Duration| d.as_millis() as u64;
        let state = config
            .trunks
            .iter()
            .map(|t| {
                previous
                    .and_then(|p| {
                        let i = p.list.iter().position(|o| o.address == t.address)?;
                        Some(Arc::clone(&p.state[i]))
                    })
                    .unwrap_or_else(|| {
                        Arc::new(TrunkState {
                            backoff: AtomicU64::new(ms(config.trunk_retry)),
                            ..Default::default()
                        })
                    })
            })
            .collect();
        Self {
            list: config.trunks.clone(),
            state,
            timeout: ms(config.trunk_timeout),
            retry: ms(config.trunk_retry),
            retry_max: ms(config.trunk_retry_max),
        }
    }

    fn is_up(&self, index: usize, now: Millis) -> bool {
        self.state
            .get(index)
            .is_some_and(|s| s.down_until.load(Relaxed) <= now)
    }
}

impl Trunks {
    pub fn new(config: &ProxyConfig, counters: Arc<ProxyCounters>) -> Self {
        Self {
            set: ArcSwap::from_pointee(TrunkSet::new(config, None)),
            epoch: Instant::now(),
            counters,
        }
    }

    /// Takes `config`'s trunks and timers (a reload); calls being routed meanwhile see
    /// either the old set or the new one, whole.
    pub fn reload(&self, config: &ProxyConfig) {
        let next = TrunkSet::new(config, Some(&self.set.load()));
        self.set.store(Arc::new(next));
    }

    pub fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Every trunk with its state at `now`.
    pub fn status(&self, now: Millis) -> Vec<TrunkStatus> {
        let set = self.set.load();
        set.list
            .iter()
            .zip(&set.state)
            .map(|(t, s)| {
                let down_until = s.down_until.load(Relaxed);
                TrunkStatus {
                    name: t.name.clone(),
                    address: t.address,
                    priority: t.priority,
                    weight: t.weight,
                    up: down_until <= now,
                    retry_in_ms: down_until.saturating_sub(now),
                }
            })
            .collect()
    }

    pub fn is_up(&self, index: usize, now: Millis) -> bool {
        self.set.load().is_up(index, now)
    }

    /// The transport trunk `index` is configured for.
    pub fn transport(&self, index: usize) -> Option<super::core::Transport> {
        self.set.load().list.get(index).map(|t| t.transport)
    }

    /// The trunk for a call whose Call-ID hashes to `hash`: the same call (its INVITE,
    /// retransmissions, CANCEL, ACK) gets the same trunk while the set of trunks up stays
    /// the same, and calls spread over the best priority by weight.
    pub fn pick(&self, hash: u64, now: Millis) -> Pick {
        let set = self.set.load();
        let list = &set.list;
        if list.is_empty() {
            return Pick::NoTrunks;
        }
        let up = |i: &usize| set.is_up(*i, now);
        let Some(best) = (0..list.len()).filter(up).map(|i| list[i].priority).min() else {
            let soonest = set
                .state
                .iter()
                .map(|s| s.down_until.load(Relaxed))
                .min()
                .unwrap_or(now);
            let secs = soonest.saturating_sub(now).div_ceil(1000).max(1);
            return Pick::AllDown {
                retry_after_s: secs as u32,
            };
        };
        let tier = || {
            (0..list.len())
                .filter(up)
                .filter(move |&i| list[i].priority == best)
        };
        let total: u64 = tier().map(|i| u64::from(list[i].weight)).sum();
        let mut point = hash % total.max(1);
        for i in tier() {
            let w = u64::from(list[i].weight);
            if point < w {
                return Pick::Trunk {
                    index: i,
                    address: list[i].address,
                };
            }
            point -= w;
        }
        // Unreachable with total > 0; the first of the tier is a safe answer anyway.
        let i = tier().next().unwrap_or(0);
        Pick::Trunk {
            index: i,
            address: list[i].address,
        }
    }

    /// An INVITE went to trunk `index`: start its response clock unless one is running.
    pub fn invite_sent(&self, index: usize, now: Millis) {
        if let Some(s) = self.set.load().state.get(index) {
            let _ = s.pending_since.compare_exchange(0, now, Relaxed, Relaxed);
        }
    }

    /// A response came from trunk `index`.
    pub fn response(&self, index: usize, code: u16, now: Millis) {
        let set = self.set.load();
        let Some(s) = set.state.get(index) else {
            return;
        };
        s.pending_since.store(0, Relaxed);
        if code == 503 {
            self.take_out(&set, index, now, "answered 503");
            return;
        }
        if s.failed.swap(false, Relaxed) {
            s.backoff.store(set.retry, Relaxed);
            s.down_until.store(0, Relaxed);
            self.counters.add(ProxyCounter::TrunkUp, 1);
            info!(trunk = %set.list[index].name, "trunk answers again: up");
        }
    }

    /// The kernel reported `addr` unreachable (ICMP, seen as ECONNREFUSED).
    pub fn unreachable(&self, addr: SocketAddr, now: Millis) {
        let set = self.set.load();
        if let Some(i) = set.list.iter().position(|t| t.address == addr) {
            self.take_out(&set, i, now, "unreachable (ICMP)");
        }
    }

    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.set.load().list.iter().position(|t| t.address == addr)
    }

    /// Takes out trunks whose oldest pending INVITE has waited past the timeout.
    pub fn sweep(&self, now: Millis) {
        let set = self.set.load();
        for (i, s) in set.state.iter().enumerate() {
            let since = s.pending_since.load(Relaxed);
            if since != 0 && now.saturating_sub(since) > set.timeout {
                s.pending_since.store(0, Relaxed);
                self.take_out(&set, i, now, "INVITE unanswered");
            }
        }
    }

    fn take_out(&self, set: &TrunkSet, index: usize, now: Millis, why: &str) {
        let s = &set.state[index];
        if s.down_until.load(Relaxed) > now {
            return; // already out
        }
        let backoff = s.backoff.load(Relaxed);
        s.down_until.store(now + backoff, Relaxed);
        s.backoff.store((backoff * 2).min(set.retry_max), Relaxed);
        s.failed.store(true, Relaxed);
        self.counters.add(ProxyCounter::TrunkDown, 1);
        warn!(trunk = %set.list[index].name, why, retry_in_ms = backoff, "trunk down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::settings::HealthConfig;

    fn trunk_config() -> ProxyConfig {
        ProxyConfig {
            listen: vec![],
            workers: 1,
            trunks: vec![],
            trunk_timeout: Duration::from_millis(1000),
            trunk_retry: Duration::from_millis(5000),
            trunk_retry_max: Duration::from_millis(20_000),
            health: HealthConfig {
                enabled: false,
                interval: Duration::from_secs(1),
                misses: 3,
            },
            tcp: Default::default(),
        }
    }

    fn trunks(list: &[(&str, u32, u32)]) -> Trunks {
        let config = ProxyConfig {
            trunks: list
                .iter()
                .enumerate()
                .map(|(i, &(name, priority, weight))| Trunk {
                    name: name.into(),
                    address: SocketAddr::from(([203, 0, 113, 2 + i as u8], 5060)),
                    priority,
                    weight,
                    transport: Default::default(),
                })
                .collect(),
            ..trunk_config()
        };
        Trunks::new(&config, Arc::default())
    }

    fn index(p: Pick) -> usize {
        match p {
            Pick::Trunk { index, .. } => index,
            other => panic!("no trunk: {other:?}"),
        }
    }

    #[test]
    fn priority_first_then_weight() {
        let t = trunks(&[("backup", 1, 1), ("a", 0, 3), ("b", 0, 1)]);
        let mut hits = [0; 3];
        for h in 0..400u64 {
            hits[index(t.pick(h, 1))] += 1;
        }
        assert_eq!(hits, [0, 300, 100]);
    }

    #[test]
    fn unanswered_invite_fails_over_and_backs_off() {
        let t = trunks(&[("a", 0, 1), ("b", 1, 1)]);
        assert_eq!(index(t.pick(7, 1)), 0);
        t.invite_sent(0, 10);
        t.sweep(900);
        assert_eq!(index(t.pick(7, 900)), 0, "not yet timed out");
        t.sweep(1011);
        assert_eq!(index(t.pick(7, 1011)), 1, "a is out");
        assert_eq!(t.counters.get(ProxyCounter::TrunkDown), 1);
        // Back after 5 s; failing again doubles the back-off.
        assert_eq!(index(t.pick(7, 6011)), 0);
        t.invite_sent(0, 6011);
        t.sweep(7100);
        assert!(!t.is_up(0, 7100 + 9000));
        assert!(t.is_up(0, 7100 + 10_000));
        // Answering resets it.
        t.response(0, 180, 17_200);
        assert_eq!(t.counters.get(ProxyCounter::TrunkUp), 1);
    }

    #[test]
    fn a_reload_keeps_the_state_of_trunks_it_keeps() {
        let t = trunks(&[("a", 0, 1), ("b", 0, 1)]);
        t.response(0, 503, 100);
        let mut config = ProxyConfig {
            trunks: t.set.load().list.clone(),
            ..trunk_config()
        };
        // "a" stays (renamed, reweighted), "b" goes, "c" comes.
        config.trunks[0].name = "a2".into();
        config.trunks[1].address = SocketAddr::from(([203, 0, 113, 9], 5060));
        config.trunks[1].name = "c".into();
        t.reload(&config);
        let status = t.status(200);
        assert_eq!(status.len(), 2);
        assert_eq!((status[0].name.as_str(), status[0].up), ("a2", false));
        assert_eq!(
            status[0].retry_in_ms, 4900,
            "still out for the rest of its back-off"
        );
        assert_eq!((status[1].name.as_str(), status[1].up), ("c", true));
        assert_eq!(index(t.pick(1, 200)), 1, "calls go to the new trunk");
    }

    #[test]
    fn all_down_says_when_to_retry() {
        let t = trunks(&[("a", 0, 1)]);
        t.response(0, 503, 100);
        assert_eq!(t.pick(1, 200), Pick::AllDown { retry_after_s: 5 });
        assert_eq!(trunks(&[]).pick(1, 1), Pick::NoTrunks);
    }
}
