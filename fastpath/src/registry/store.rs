//! The storage contract. Calls block (SQLite does I/O); the async service runs them on
//! the blocking pool. Every method that changes a number's state writes its audit entry
//! in the same transaction.

use super::{
    AuditEntry, Challenge, NewNumber, NumberRecord, RoutableNumber, State, Transition,
    counts::StateCounts,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("number {0} is not registered")]
    NotFound(String),
    #[error("number {number} is already registered (state {state})", state = .state.as_str())]
    AlreadyRegistered { number: String, state: State },
    #[error("number {number} is {from} and cannot become {to}", from = .from.as_str(), to = .to.as_str())]
    InvalidTransition {
        number: String,
        from: State,
        to: State,
    },
    #[error("the registry database holds bad data: {0}")]
    Corrupt(String),
    #[error("registry database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("registry schema: {0}")]
    Schema(String),
}

/// A consistent view of the routable numbers taken at one moment, read without the
/// store: the sync's full load (a second or so at 1M numbers) must not hold up writes.
pub trait Snapshot: Send {
    /// As [`Store::routable_chunks`], with the snapshot's `now`.
    fn routable_chunks(
        &mut self,
        chunk: usize,
        each: &mut dyn FnMut(Vec<RoutableNumber>) -> bool,
    ) -> Result<(), StoreError>;

    /// How many numbers are in each state (for `/metrics`: read here, off the store,
    /// so that a scrape never holds up the writer).
    fn state_counts(&mut self) -> Result<StateCounts, StoreError>;
}

pub trait Store: Send + 'static {
    /// Opens a [`Snapshot`] of the numbers routable at `now`.
    fn snapshot(&self, now: i64) -> Result<Box<dyn Snapshot>, StoreError>;

    /// Registers `new` as pending; a revoked number may be registered again (by anyone).
    fn register(&mut self, new: &NewNumber, now: i64) -> Result<NumberRecord, StoreError>;
    fn get(&self, number: &str) -> Result<Option<NumberRecord>, StoreError>;
    /// All numbers, or one account's, ordered by number.
    fn list(&self, account: Option<&str>) -> Result<Vec<NumberRecord>, StoreError>;
    /// Moves a number to the transition's state if [`State::can_become`] allows it.
    /// Verifying or revoking also drops the number's challenge, in the same transaction.
    fn transition(
        &mut self,
        number: &str,
        transition: &Transition,
        now: i64,
    ) -> Result<NumberRecord, StoreError>;
    /// Records why a proof failed; the state does not change.
    fn record_failure(
        &mut self,
        number: &str,
        reason: &str,
        now: i64,
    ) -> Result<NumberRecord, StoreError>;
    /// Verified numbers whose expiry has passed become expired; returns them.
    fn expire_due(&mut self, now: i64) -> Result<Vec<NumberRecord>, StoreError>;
    /// Every number that takes the fast path at `now` (see [`NumberRecord::is_routable`]),
    /// handed to `each` in chunks of up to `chunk`; `each` returns `false` to stop early.
    fn routable_chunks(
        &self,
        now: i64,
        chunk: usize,
        each: &mut dyn FnMut(Vec<RoutableNumber>) -> bool,
    ) -> Result<(), StoreError>;

    /// Every number that takes the fast path at `now`, at once.
    fn routable(&self, now: i64) -> Result<Vec<RoutableNumber>, StoreError> {
        let mut all = Vec::new();
        self.routable_chunks(now, 64 * 1024, &mut |mut chunk| {
            all.append(&mut chunk);
            true
        })?;
        Ok(all)
    }
    fn audit(&self, number: &str) -> Result<Vec<AuditEntry>, StoreError>;

    fn put_challenge(&mut self, challenge: &Challenge) -> Result<(), StoreError>;
    fn challenge(&self, number: &str) -> Result<Option<Challenge>, StoreError>;
    /// Counts one attempt and returns the new count.
    fn count_attempt(&mut self, number: &str) -> Result<u32, StoreError>;
    fn delete_challenge(&mut self, number: &str) -> Result<(), StoreError>;
}
