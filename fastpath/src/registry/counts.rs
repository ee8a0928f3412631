//! What the registry counts for `/metrics`: verifications started and their outcomes by
//! method, and how many numbers are in each state.
//!
//! Outcomes are counted by the service as they happen (atomics, no store access); the
//! state counts are read from the store on demand (see
//! [`Registry::state_counts`](super::Registry::state_counts)), because the store is the
//! only place that knows every state change, including imports and expiry sweeps.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Method, Registry, State, Store, method_str, service::RegistryError};
use crate::verify::Channel;

/// Every method, in label order.
pub const METHODS: [Method; 3] = [Method::Call, Method::Message, Method::MissedCall];

/// Every state, in label order.
pub const STATES: [State; 4] = [
    State::Pending,
    State::Verified,
    State::Expired,
    State::Revoked,
];

/// How one verification event ended. Each start refused, each failed delivery, each code
/// checked and each missed call seen counts one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The proof held: the number is verified.
    Verified,
    /// A code that did not match (attempts remain).
    WrongCode,
    /// The wrong code that used up the attempts; the challenge is gone.
    TooManyAttempts,
    /// The code or missed-call expectation was past its validity.
    Expired,
    /// Nothing of this method was pending for the number (an unsolicited missed call,
    /// a code after the challenge ended, a code for a call or missed-call challenge).
    NoChallenge,
    /// The trunk could not deliver the code (no answer, busy, an error status,
    /// unreachable, digits missing).
    DeliveryFailed,
    /// The trunk said the number is gone (404, 410, 484, 604): the number was revoked.
    NumberGone,
    /// Refused by the per-number or per-account rate limits.
    RateLimited,
    /// The registry itself failed (database, worker).
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Verified,
        Outcome::WrongCode,
        Outcome::TooManyAttempts,
        Outcome::Expired,
        Outcome::NoChallenge,
        Outcome::DeliveryFailed,
        Outcome::NumberGone,
        Outcome::RateLimited,
        Outcome::Error,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::WrongCode => "wrong_code",
            Outcome::TooManyAttempts => "too_many_attempts",
            Outcome::Expired => "expired",
            Outcome::NoChallenge => "no_challenge",
            Outcome::DeliveryFailed => "delivery_failed",
            Outcome::NumberGone => "number_gone",
            Outcome::RateLimited => "rate_limited",
            Outcome::Error => "error",
        }
    }

    /// The outcome a checked code's error stands for; `None` for errors that are not
    /// about the proof (an invalid or unknown number: the request never reached one).
    pub fn of_error(error: &RegistryError) -> Option<Self> {
        Some(match error {
            RegistryError::WrongCode { .. } => Outcome::WrongCode,
            RegistryError::TooManyAttempts(_) => Outcome::TooManyAttempts,
            RegistryError::CodeExpired(_) => Outcome::Expired,
            RegistryError::NoChallenge(_) | RegistryError::NotACodeMethod(..) => {
                Outcome::NoChallenge
            }
            RegistryError::RateLimited { .. } => Outcome::RateLimited,
            RegistryError::Delivery(crate::verify::Failure::NumberGone(_)) => Outcome::NumberGone,
            RegistryError::Delivery(_) => Outcome::DeliveryFailed,
            RegistryError::Store(_) | RegistryError::Worker(_) | RegistryError::Random(_) => {
                Outcome::Error
            }
            RegistryError::Number(_)
            | RegistryError::Invalid(_)
            | RegistryError::Revoked(_)
            | RegistryError::NoMissedCallNumber => return None,
        })
    }
}

fn method_index(method: Method) -> usize {
    match method {
        Method::Call => 0,
        Method::Message => 1,
        Method::MissedCall => 2,
    }
}

/// Verifications started and their outcomes, by method; shared by every clone of the
/// registry. Bounded label sets: 3 methods, 3 x 9 (method, outcome) pairs.
#[derive(Debug, Default)]
pub struct VerificationCounters {
    started: [AtomicU64; METHODS.len()],
    outcomes: [[AtomicU64; Outcome::ALL.len()]; METHODS.len()],
}

impl VerificationCounters {
    /// A challenge was issued: a code sent or a call placed, or a missed call awaited.
    pub fn started(&self, method: Method) {
        self.started[method_index(method)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn outcome(&self, method: Method, outcome: Outcome) {
        self.outcomes[method_index(method)][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get_started(&self, method: Method) -> u64 {
        self.started[method_index(method)].load(Ordering::Relaxed)
    }

    pub fn get_outcome(&self, method: Method, outcome: Outcome) -> u64 {
        self.outcomes[method_index(method)][outcome as usize].load(Ordering::Relaxed)
    }

    /// `(method, started)` for every method.
    pub fn started_by_method(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        METHODS
            .into_iter()
            .map(|m| (method_str(m), self.get_started(m)))
    }

    /// `(method, outcome, count)` for every pair, zeros included (dashboards want every
    /// series present from the start).
    pub fn outcomes_by_method(
        &self,
    ) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        METHODS.into_iter().flat_map(move |m| {
            Outcome::ALL
                .into_iter()
                .map(move |o| (method_str(m), o.as_str(), self.get_outcome(m, o)))
        })
    }
}

/// How many numbers are in each state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StateCounts([u64; STATES.len()]);

impl StateCounts {
    pub fn get(&self, state: State) -> u64 {
        self.0[state as usize]
    }

    pub fn set(&mut self, state: State, count: u64) {
        self.0[state as usize] = count;
    }

    /// `(state, count)` for every state, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (State, u64)> + '_ {
        STATES.into_iter().map(|s| (s, self.get(s)))
    }
}

/// What `/metrics` reads of a running registry, without its store and channel types.
pub trait RegistryReadings: Send + Sync {
    fn verifications(&self) -> &VerificationCounters;
    /// Blocking: call it off the async threads.
    fn state_counts(&self) -> Result<StateCounts, String>;
}

impl<S: Store, C: Channel> RegistryReadings for Registry<S, C> {
    fn verifications(&self) -> &VerificationCounters {
        Registry::verifications(self)
    }

    fn state_counts(&self) -> Result<StateCounts, String> {
        Registry::state_counts(self).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_are_complete_and_distinct() {
        let c = VerificationCounters::default();
        c.started(Method::Call);
        c.outcome(Method::MissedCall, Outcome::Error);
        c.outcome(Method::Message, Outcome::WrongCode);
        c.outcome(Method::Message, Outcome::WrongCode);
        let started: Vec<_> = c.started_by_method().collect();
        assert_eq!(
            started,
            [("call", 1), ("message", 0), ("missed_call", 0)],
            "every method, in order"
        );
        let outcomes: Vec<_> = c.outcomes_by_method().collect();
        assert_eq!(outcomes.len(), METHODS.len() * Outcome::ALL.len());
        let mut pairs: Vec<_> = outcomes.iter().map(|(m, o, _)| (*m, *o)).collect();
        pairs.sort();
        pairs.dedup();
        assert_eq!(pairs.len(), outcomes.len(), "no (method, outcome) twice");
        let nonzero: Vec<_> = outcomes.into_iter().filter(|(_, _, n)| *n > 0).collect();
        assert_eq!(
            nonzero,
            [("message", "wrong_code", 2), ("missed_call", "error", 1)]
        );
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i, "ALL is in declaration order");
        }
    }

    #[test]
    fn state_counts_index_by_state() {
        let mut counts = StateCounts::default();
        counts.set(State::Verified, 7);
        counts.set(State::Revoked, 2);
        let all: Vec<_> = counts.iter().collect();
        assert_eq!(
            all,
            [
                (State::Pending, 0),
                (State::Verified, 7),
                (State::Expired, 0),
                (State::Revoked, 2)
            ]
        );
    }
}
