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

#[derive(Debug)]
pub struct Trunks {
    list: Vec<Trunk>,
    state: Vec<TrunkState>,
    epoch: Instant,
    timeout: Millis,
    retry: Millis,
    retry_max: Millis,
    counters: Arc<ProxyCounters>,
}

impl Trunks {
    pub fn new(config: &ProxyConfig, counters: Arc<ProxyCounters>) -> Self {
        let ms = |d: Duration| d.as_millis() as u64;
        Self {
            list: config.trunks.clone(),
            state: config
                .trunks
                .iter()
                .map(|_| TrunkState {
                    backoff: AtomicU64::new(ms(config.trunk_retry)),
                    ..Default::default()
                })
                .collect(),
            epoch: Instant::now(),
            timeout: ms(config.trunk_timeout),
            retry: ms(config.trunk_retry),
            retry_max: ms(config.trunk_retry_max),
            counters,
        }
    }

    pub fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub fn list(&self) -> &[Trunk] {
        &self.list
    }

    pub fn is_up(&self, index: usize, now: Millis) -> bool {
        self.state
            .get(index)
            .is_some_and(|s| s.down_until.load(Relaxed) <= now)
    }

    /// The trunk for a call whose Call-ID hashes to `hash`: the same call (its INVITE,
    /// retransmissions, CANCEL, ACK) gets the same trunk while the set of trunks up stays
    /// the same, and calls spread over the best priority by weight.
    pub fn pick(&self, hash: u64, now: Millis) -> Pick {
        if self.list.is_empty() {
            return Pick::NoTrunks;
        }
        let up = |i: &usize| self.is_up(*i, now);
        let Some(best) = (0..self.list.len())
            .filter(up)
            .map(|i| self.list[i].priority)
            .min()
        else {
            let soonest = self
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
            (0..self.list.len())
                .filter(up)
                .filter(move |&i| self.list[i].priority == best)
        };
        let total: u64 = tier().map(|i| u64::from(self.list[i].weight)).sum();
        let mut point = hash % total.max(1);
        for i in tier() {
            let w = u64::from(self.list[i].weight);
            if point < w {
                return Pick::Trunk {
                    index: i,
                    address: self.list[i].address,
                };
            }
            point -= w;
        }
        // Unreachable with total > 0; the first of the tier is a safe answer anyway.
        let i = tier().next().unwrap_or(0);
        Pick::Trunk {
            index: i,
            address: self.list[i].address,
        }
    }

    /// An INVITE went to trunk `index`: start its response clock unless one is running.
    pub fn invite_sent(&self, index: usize, now: Millis) {
        if let Some(s) = self.state.get(index) {
            let _ = s.pending_since.compare_exchange(0, now, Relaxed, Relaxed);
        }
    }

    /// A response came from trunk `index`.
    pub fn response(&self, index: usize, code: u16, now: Millis) {
        let Some(s) = self.state.get(index) else {
            return;
        };
        s.pending_since.store(0, Relaxed);
        if code == 503 {
            self.take_out(index, now, "answered 503");
            return;
        }
        if s.failed.swap(false, Relaxed) {
            s.backoff.store(self.retry, Relaxed);
            s.down_until.store(0, Relaxed);
            self.counters.add(ProxyCounter::TrunkUp, 1);
            info!(trunk = %self.list[index].name, "trunk answers again: up");
        }
    }

    /// The kernel reported `addr` unreachable (ICMP, seen as ECONNREFUSED).
    pub fn unreachable(&self, addr: SocketAddr, now: Millis) {
        if let Some(i) = self.index_of(addr) {
            self.take_out(i, now, "unreachable (ICMP)");
        }
    }

    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.list.iter().position(|t| t.address == addr)
    }

    /// Takes out trunks whose oldest pending INVITE has waited past the timeout.
    pub fn sweep(&self, now: Millis) {
        for (i, s) in self.state.iter().enumerate() {
            let since = s.pending_since.load(Relaxed);
            if since != 0 && now.saturating_sub(since) > self.timeout {
                s.pending_since.store(0, Relaxed);
                self.take_out(i, now, "INVITE unanswered");
            }
        }
    }

    fn take_out(&self, index: usize, now: Millis, why: &str) {
        let s = &self.state[index];
        if s.down_until.load(Relaxed) > now {
            return; // already out
        }
        let backoff = s.backoff.load(Relaxed);
        s.down_until.store(now + backoff, Relaxed);
        s.backoff.store((backoff * 2).min(self.retry_max), Relaxed);
        s.failed.store(true, Relaxed);
        self.counters.add(ProxyCounter::TrunkDown, 1);
        warn!(trunk = %self.list[index].name, why, retry_in_ms = backoff, "trunk down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::settings::HealthConfig;

    fn trunks(list: &[(&str, u32, u32)]) -> Trunks {
        let config = ProxyConfig {
            listen: vec![],
            workers: 1,
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
            trunk_timeout: Duration::from_millis(1000),
            trunk_retry: Duration::from_millis(5000),
            trunk_retry_max: Duration::from_millis(20_000),
            health: HealthConfig {
                enabled: false,
                interval: Duration::from_secs(1),
                misses: 3,
            },
            tcp: Default::default(),
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
    fn all_down_says_when_to_retry() {
        let t = trunks(&[("a", 0, 1)]);
        t.response(0, 503, 100);
        assert_eq!(t.pick(1, 200), Pick::AllDown { retry_after_s: 5 });
        assert_eq!(trunks(&[]).pick(1, 1), Pick::NoTrunks);
    }
}
