//! The number registry: who registered which number, for which SIP peer, and whether the
//! number is proven theirs right now. Storage sits behind [`store::Store`] (SQLite by
//! default); [`service::Registry`] adds the verification lifecycle and publishes every
//! change for the cache sync.

pub mod code;
pub mod counts;
pub mod daemon;
#[cfg(test)]
pub(crate) mod fake_trunk;
mod migrations;
pub mod number;
pub mod ratelimit;
pub mod service;
#[cfg(test)]
mod service_tests;
pub mod sqlite;
pub mod store;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

pub use crate::verify::Method;
pub use service::{Registry, Settings};
pub use sqlite::SqliteStore;
pub use store::{Store, StoreError};

/// Where a number stands. The allowed moves are [`State::can_become`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Registered, not (yet) proven.
    Pending,
    /// Proven, until `expires_at`.
    Verified,
    /// Was verified; the proof is too old and must be renewed.
    Expired,
    /// Withdrawn by its owner or an admin, or the trunk says the number is gone.
    Revoked,
}

impl State {
    /// The one place that says which state changes exist.
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Pending, Verified | Revoked)
                | (Verified, Verified | Expired | Revoked)
                | (Expired, Verified | Revoked)
                | (Revoked, Pending)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Verified => "verified",
            State::Expired => "expired",
            State::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => State::Pending,
            "verified" => State::Verified,
            "expired" => State::Expired,
            "revoked" => State::Revoked,
            _ => return None,
        })
    }
}

/// SIP transport the peer expects. The fast path forwards UDP only, so only `udp`
/// peers are put in `ROUTES`; the others take the userspace path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => return None,
        })
    }
}

/// The owner's SIP address: an IP literal, because the kernel fast path cannot resolve
/// names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerAddress {
    pub host: IpAddr,
    pub port: u16,
    #[serde(default)]
    pub transport: Transport,
}

impl PeerAddress {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

pub fn method_str(method: Method) -> &'static str {
    match method {
        Method::Call => "call",
        Method::Message => "message",
        Method::MissedCall => "missed_call",
    }
}

pub fn parse_method(text: &str) -> Option<Method> {
    Some(match text {
        "call" => Method::Call,
        "message" => Method::Message,
        "missed_call" => Method::MissedCall,
        _ => return None,
    })
}

/// One registered number. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberRecord {
    /// E.164 digits without `+`.
    pub number: String,
    pub account: String,
    pub peer: PeerAddress,
    pub state: State,
    pub opt_in: bool,
    pub verification_method: Option<Method>,
    pub verified_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// Why the last verification attempt failed, if it did.
    pub last_failure: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl NumberRecord {
    /// The one place that says whether a number takes the fast path.
    pub fn is_routable(&self, now_ms: i64) -> bool {
        self.state == State::Verified
            && self.opt_in
            && self.peer.transport == Transport::Udp
            && self.expires_at.is_some_and(|at| at > now_ms)
    }
}

/// A registration request, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNumber {
    pub number: String,
    pub account: String,
    pub peer: PeerAddress,
    pub opt_in: bool,
}

/// A state change the registry is asked to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Verify { method: Method, ttl_ms: i64 },
    Expire,
    Revoke { reason: String },
}

impl Transition {
    pub fn target(&self) -> State {
        match self {
            Transition::Verify { .. } => State::Verified,
            Transition::Expire => State::Expired,
            Transition::Revoke { .. } => State::Revoked,
        }
    }
}

/// One line of the audit log: every state change and every failed proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: i64,
    pub number: String,
    pub from_state: Option<State>,
    pub to_state: State,
    pub reason: String,
}

/// A code (or missed-call expectation) waiting for its proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub number: String,
    pub method: Method,
    /// `None` for a missed call: the proof is the call itself.
    pub code: Option<String>,
    pub expires_at: i64,
    pub attempts: u32,
}

/// What the fast path needs of a routable number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutableNumber {
    pub key: fastpath_common::RouteKey,
    pub peer: SocketAddr,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine() {
        use State::*;
        assert!(Pending.can_become(Verified));
        assert!(Expired.can_become(Verified));
        assert!(Verified.can_become(Verified));
        assert!(!Pending.can_become(Expired));
        assert!(!Revoked.can_become(Verified));
        assert!(!Expired.can_become(Pending));
        for s in [Pending, Verified, Expired, Revoked] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
    }
}
