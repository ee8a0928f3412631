//! The registry as the daemon uses it: validation, the verification-code lifecycle,
//! expiry, and a stream of every committed change for the cache sync.
//!
//! Store calls block, so each runs on tokio's blocking pool under one mutex; a change is
//! published while that mutex is still held, so subscribers see changes in commit order.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use super::{
    AuditEntry, Challenge, Method, NewNumber, NumberRecord, PeerAddress, RoutableNumber, State,
    Transition, code,
    counts::{Outcome, StateCounts, VerificationCounters},
    number::{NumberError, parse_e164},
    ratelimit::RateLimiter,
    store::{Store, StoreError},
};
use crate::verify::{Channel, Failure, MissedCall};

/// Tunables; the defaults are the issue's.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a verification holds before the number must be verified again.
    pub verified_ttl: Duration,
    /// How long a code (or a missed-call expectation) is valid.
    pub code_ttl: Duration,
    /// Wrong codes allowed per challenge.
    pub max_attempts: u32,
    pub code_digits: usize,
    /// How long a verification call waits for the keypad.
    pub dtmf_timeout: Duration,
    /// Verifications started per number, and per account, within `rate_window`.
    pub starts_per_number: u32,
    pub starts_per_account: u32,
    /// Codes submitted per account within `rate_window`.
    pub submits_per_account: u32,
    pub rate_window: Duration,
    /// The number owners call for missed-call verification (told to the user).
    pub missed_call_number: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            verified_ttl: Duration::from_secs(90 * 24 * 3600),
            code_ttl: Duration::from_secs(600),
            max_attempts: 5,
            code_digits: code::DEFAULT_DIGITS,
            dtmf_timeout: Duration::from_secs(60),
            starts_per_number: 3,
            starts_per_account: 20,
            submits_per_account: 30,
            rate_window: Duration::from_secs(600),
            missed_call_number: None,
        }
    }
}

/// Unix milliseconds; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Number(#[from] NumberError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("too many requests for {scope}; retry in {retry_after_s} s")]
    RateLimited {
        scope: &'static str,
        retry_after_s: i64,
    },
    #[error("no verification in progress for {0}; start one first")]
    NoChallenge(String),
    #[error("the verification for {0} comes by {1:?}, not by a submitted code")]
    NotACodeMethod(String, Method),
    #[error("the code for {0} has expired; start a new verification")]
    CodeExpired(String),
    #[error("wrong code; {attempts_left} attempt(s) left")]
    WrongCode { attempts_left: u32 },
    #[error("too many wrong codes for {0}; start a new verification")]
    TooManyAttempts(String),
    #[error("{0} is revoked; register it again")]
    Revoked(String),
    #[error("delivery through the trunk failed: {0}")]
    Delivery(Failure),
    #[error("missed-call verification is not configured (no verification number)")]
    NoMissedCallNumber,
    #[error("random source: {0}")]
    Random(String),
    #[error("registry worker: {0}")]
    Worker(String),
}

/// What the enrolling user is told after starting a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub number: String,
    pub method: Method,
    pub expires_at: i64,
    /// For `call`: the code to type on the phone's keypad when it rings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// For `missed_call`: the number to call from the number being registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_number: Option<String>,
}

/// A committed change, as the cache sync receives it.
#[derive(Debug, Clone)]
pub struct Change {
    pub record: NumberRecord,
    /// When the commit returned: the sync times commit → map from here.
    pub committed: Instant,
}

struct Inner<S, C> {
    store: Mutex<S>,
    channel: C,
    settings: Settings,
    clock: Clock,
    changes: broadcast::Sender<Change>,
    verifications: VerificationCounters,
    starts_per_number: RateLimiter,
    starts_per_account: RateLimiter,
    submits_per_account: RateLimiter,
}

/// Cheap to clone; all clones share one store.
pub struct Registry<S, C> {
    inner: Arc<Inner<S, C>>,
}

impl<S, C> Clone for Registry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// Enough for a burst of a full reconcile's worth of admin changes; a subscriber that
/// still falls behind is told (`Lagged`) and must reconcile.
const CHANGE_BUFFER: usize = 1 << 16;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<S: Store, C: Channel> Registry<S, C> {
    pub fn new(store: S, channel: C, settings: Settings) -> Self {
        Self::with_clock(store, channel, settings, Arc::new(super::now_ms))
    }

    pub fn with_clock(store: S, channel: C, settings: Settings, clock: Clock) -> Self {
        let window = ms(settings.rate_window);
        let inner = Inner {
            store: Mutex::new(store),
            channel,
            starts_per_number: RateLimiter::new(settings.starts_per_number, window),
            starts_per_account: RateLimiter::new(settings.starts_per_account, window),
            submits_per_account: RateLimiter::new(settings.submits_per_account, window),
            settings,
            clock,
            changes: broadcast::channel(CHANGE_BUFFER).0,
            verifications: VerificationCounters::default(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn now(&self) -> i64 {
        (self.inner.clock)()
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Every committed change, in commit order.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Verifications started and their outcomes, by method.
    pub fn verifications(&self) -> &VerificationCounters {
        &self.inner.verifications
    }

    /// How many numbers are in each state. Blocking (call it off the async threads): the
    /// store is locked only to open a snapshot, and the count runs on the snapshot's own
    /// connection, so the writer is held up for the open alone, never for the scan.
    pub fn state_counts(&self) -> Result<StateCounts, RegistryError> {
        let mut snapshot = {
            let store = self.inner.store.lock().unwrap_or_else(|p| p.into_inner());
            store.snapshot(self.now())?
        };
        Ok(snapshot.state_counts()?)
    }

    /// Counts the outcome `result` stands for, if it stands for one.
    fn count<T>(&self, method: Method, result: &Result<T, RegistryError>) {
        let outcome = match result {
            Ok(_) => Some(Outcome::Verified),
            Err(error) => Outcome::of_error(error),
        };
        if let Some(outcome) = outcome {
            self.inner.verifications.outcome(method, outcome);
        }
    }

    /// Runs `f` on the store off the async runtime; the records it returns are published
    /// as changes before the store is unlocked.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S, i64) -> Result<(T, Vec<NumberRecord>), StoreError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let inner = self.inner.clone();
        let now = self.now();
        tokio::task::spawn_blocking(move || {
            let mut store = inner.store.lock().unwrap_or_else(|p| p.into_inner());
            let (out, changed) = f(&mut store, now)?;
            let committed = Instant::now();
            for record in changed {
                // No subscriber is fine (e.g. no fast path in this process).
                let _ = inner.changes.send(Change { record, committed });
            }
            Ok(out)
        })
        .await
        .map_err(|e| RegistryError::Worker(e.to_string()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&S, i64) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        self.write(move |s, now| Ok((f(s, now)?, Vec::new()))).await
    }

    pub async fn register(
        &self,
        number: &str,
        account: &str,
        peer: PeerAddress,
        opt_in: bool,
    ) -> Result<NumberRecord, RegistryError> {
        let number = parse_e164(number)?;
        let account = account.trim();
        if account.is_empty() || account.len() > 128 || account.chars().any(char::is_control) {
            return Err(RegistryError::Invalid(
                "account: 1 to 128 printable characters".into(),
            ));
        }
        check_peer(&peer)?;
        let new = NewNumber {
            number,
            account: account.to_owned(),
            peer,
            opt_in,
        };
        self.write(move |s, now| {
            let r = s.register(&new, now)?;
            Ok((r.clone(), vec![r]))
        })
        .await
    }

    pub async fn get(&self, number: &str) -> Result<NumberRecord, RegistryError> {
        let number = parse_e164(number)?;
        self.read(move |s, _| s.get(&number)?.ok_or(StoreError::NotFound(number)))
            .await
    }

    pub async fn list(&self, account: Option<String>) -> Result<Vec<NumberRecord>, RegistryError> {
        self.read(move |s, _| s.list(account.as_deref())).await
    }

    pub async fn audit(&self, number: &str) -> Result<Vec<AuditEntry>, RegistryError> {
        let number = parse_e164(number)?;
        self.read(move |s, _| s.audit(&number)).await
    }

    /// Every number that takes the fast path now: the cache sync's full load.
    pub async fn routable(&self) -> Result<Vec<RoutableNumber>, RegistryError> {
        self.read(|s, now| s.routable(now)).await
    }

    /// Streams every routable number in chunks into `chunks` (the cache sync's full
    /// load), stopping early if the receiver goes away. The store is locked only to open
    /// a snapshot, so registry writes go on during the read.
    pub async fn stream_routable(
        &self,
        chunk: usize,
        chunks: std::sync::mpsc::SyncSender<Vec<RoutableNumber>>,
    ) -> Result<(), RegistryError> {
        let inner = self.inner.clone();
        let now = self.now();
        let complete = tokio::task::spawn_blocking(move || {
            let mut snapshot = {
                let store = inner.store.lock().unwrap_or_else(|p| p.into_inner());
                store.snapshot(now)?
            };
            let mut complete = true;
            snapshot.routable_chunks(chunk, &mut |c| {
                complete = chunks.send(c).is_ok();
                complete
            })?;
            Ok::<_, StoreError>(complete)
        })
        .await
        .map_err(|e| RegistryError::Worker(e.to_string()))??;
        if complete {
            Ok(())
        } else {
            Err(RegistryError::Worker(
                "the reader of the routes went away".into(),
            ))
        }
    }

    pub async fn revoke(&self, number: &str, reason: &str) -> Result<NumberRecord, RegistryError> {
        let number = parse_e164(number)?;
        self.transition(
            &number,
            Transition::Revoke {
                reason: reason.to_owned(),
            },
        )
        .await
    }

    async fn transition(
        &self,
        number: &str,
        transition: Transition,
    ) -> Result<NumberRecord, RegistryError> {
        let number = number.to_owned();
        self.write(move |s, now| {
            let r = s.transition(&number, &transition, now)?;
            Ok((r.clone(), vec![r]))
        })
        .await
    }

    /// Verified numbers past their expiry become expired (and leave the fast path).
    pub async fn expire_due(&self) -> Result<Vec<NumberRecord>, RegistryError> {
        self.write(|s, now| {
            let expired = s.expire_due(now)?;
            Ok((expired.clone(), expired))
        })
        .await
    }

    /// Starts proving `number`: sends the code by message, calls with a code for the
    /// keypad (the call runs in the background), or waits for a missed call.
    pub async fn start_verification(
        &self,
        number: &str,
        method: Method,
    ) -> Result<Started, RegistryError> {
        let record = self.get(number).await?;
        if record.state == State::Revoked {
            return Err(RegistryError::Revoked(record.number));
        }
        let call_number = match method {
            Method::MissedCall => Some(
                self.inner
                    .settings
                    .missed_call_number
                    .clone()
                    .ok_or(RegistryError::NoMissedCallNumber)?,
            ),
            _ => None,
        };
        let now = self.now();
        let limited = |scope, retry_ms: i64| RegistryError::RateLimited {
            scope,
            retry_after_s: (retry_ms + 999) / 1000,
        };
        let allowed = self
            .inner
            .starts_per_number
            .check(&record.number, now)
            .map_err(|r| limited("this number", r))
            .and_then(|()| {
                self.inner
                    .starts_per_account
                    .check(&record.account, now)
                    .map_err(|r| limited("this account", r))
            });
        if allowed.is_err() {
            self.count(method, &allowed);
        }
        allowed?;

        let code = match method {
            Method::MissedCall => None,
            _ => Some(
                code::generate(self.inner.settings.code_digits)
                    .map_err(|e| RegistryError::Random(e.to_string()))?,
            ),
        };
        let challenge = Challenge {
            number: record.number.clone(),
            method,
            code: code.clone(),
            expires_at: now.saturating_add(ms(self.inner.settings.code_ttl)),
            attempts: 0,
        };
        let expires_at = challenge.expires_at;
        self.write(move |s, _| Ok((s.put_challenge(&challenge)?, Vec::new())))
            .await?;
        self.inner.verifications.started(method);
        info!(number = %record.number, ?method, "verification started");

        let number = record.number;
        match (method, code) {
            (Method::Message, Some(code)) => {
                let text = format!("Your fastpath verification code is {code}");
                if let Err(failure) = self.inner.channel.send_message(&number, &text).await {
                    self.delivery_failed(&number, method, failure.clone())
                        .await?;
                    return Err(RegistryError::Delivery(failure));
                }
                Ok(Started {
                    number,
                    method,
                    expires_at,
                    code: None,
                    call_number: None,
                })
            }
            (Method::Call, Some(code)) => {
                let registry = self.clone();
                let (n, c) = (number.clone(), code.clone());
                tokio::spawn(async move {
                    if let Err(error) = registry.verify_by_call(&n, &c).await {
                        warn!(number = %n, %error, "verification call failed");
                    }
                });
                Ok(Started {
                    number,
                    method,
                    expires_at,
                    code: Some(code),
                    call_number: None,
                })
            }
            _ => Ok(Started {
                number,
                method,
                expires_at,
                code: None,
                call_number,
            }),
        }
    }

    /// The verification call: the digits typed on the phone must be the code.
    async fn verify_by_call(&self, number: &str, code: &str) -> Result<(), RegistryError> {
        let digits = self
            .inner
            .channel
            .collect_dtmf(number, code.len(), self.inner.settings.dtmf_timeout)
            .await;
        match digits {
            Err(failure) => self.delivery_failed(number, Method::Call, failure).await,
            Ok(digits) => match self.check_code(number, &digits, Method::Call).await {
                Ok(_) => Ok(()),
                Err(error) => {
                    let reason = format!("keypad: {error}");
                    let n = number.to_owned();
                    self.write(move |s, now| {
                        let r = s.record_failure(&n, &reason, now)?;
                        Ok(((), vec![r]))
                    })
                    .await?;
                    Err(error)
                }
            },
        }
    }

    /// A code submitted through the API (the message method).
    pub async fn submit_code(
        &self,
        number: &str,
        code: &str,
    ) -> Result<NumberRecord, RegistryError> {
        let record = self.get(number).await?;
        let allowed = self
            .inner
            .submits_per_account
            .check(&record.account, self.now())
            .map_err(|r| RegistryError::RateLimited {
                scope: "this account",
                retry_after_s: (r + 999) / 1000,
            });
        if allowed.is_err() {
            self.count(Method::Message, &allowed);
        }
        allowed?;
        self.check_code(&record.number, code.trim(), Method::Message)
            .await
    }

    /// Counts an attempt against the challenge and verifies the number if `given` is
    /// its code. Expired or exhausted challenges are removed. The outcome is counted by
    /// the method the code came by.
    async fn check_code(
        &self,
        number: &str,
        given: &str,
        via: Method,
    ) -> Result<NumberRecord, RegistryError> {
        let result = self.check_code_uncounted(number, given, via).await;
        self.count(via, &result);
        result
    }

    async fn check_code_uncounted(
        &self,
        number: &str,
        given: &str,
        via: Method,
    ) -> Result<NumberRecord, RegistryError> {
        let number = number.to_owned();
        let given = given.to_owned();
        let max_attempts = self.inner.settings.max_attempts;
        let ttl_ms = ms(self.inner.settings.verified_ttl);
        self.write(move |s, now| {
            let outcome = (|| {
                let Some(challenge) = s.challenge(&number)? else {
                    return Ok(Err(RegistryError::NoChallenge(number.clone())));
                };
                let Some(expected) = challenge
                    .code
                    .as_deref()
                    .filter(|_| challenge.method == via)
                else {
                    return Ok(Err(RegistryError::NotACodeMethod(
                        number.clone(),
                        challenge.method,
                    )));
                };
                if now >= challenge.expires_at {
                    s.delete_challenge(&number)?;
                    return Ok(Err(RegistryError::CodeExpired(number.clone())));
                }
                if challenge.attempts >= max_attempts {
                    s.delete_challenge(&number)?;
                    return Ok(Err(RegistryError::TooManyAttempts(number.clone())));
                }
                let attempts = s.count_attempt(&number)?;
                if code::matches(expected, &given) {
                    // One transaction (one fsync): the challenge goes with the change.
                    let r = s.transition(
                        &number,
                        &Transition::Verify {
                            method: challenge.method,
                            ttl_ms,
                        },
                        now,
                    )?;
                    return Ok(Ok(r));
                }
                if attempts >= max_attempts {
                    s.delete_challenge(&number)?;
                    return Ok(Err(RegistryError::TooManyAttempts(number.clone())));
                }
                Ok(Err(RegistryError::WrongCode {
                    attempts_left: max_attempts - attempts,
                }))
            })();
            match outcome {
                Ok(Ok(r)) => Ok((Ok(r.clone()), vec![r])),
                Ok(Err(e)) => Ok((Err(e), Vec::new())),
                Err(e) => Err(e),
            }
        })
        .await?
    }

    /// A missed call from `caller` proves the number if one is pending that method.
    /// Returns the verified record, or `None` if the call proves nothing.
    pub async fn missed_call(
        &self,
        call: MissedCall,
    ) -> Result<Option<NumberRecord>, RegistryError> {
        let counted = |outcome| {
            self.inner
                .verifications
                .outcome(Method::MissedCall, outcome)
        };
        let Ok(number) = parse_e164(&call.caller) else {
            counted(Outcome::NoChallenge);
            return Ok(None);
        };
        let ttl_ms = ms(self.inner.settings.verified_ttl);
        let result = self
            .write(move |s, now| {
                let outcome = match s.challenge(&number)? {
                    Some(c) if c.method != Method::MissedCall => Outcome::NoChallenge,
                    Some(c) if now >= c.expires_at => Outcome::Expired,
                    Some(_) => Outcome::Verified,
                    None => Outcome::NoChallenge,
                };
                if outcome != Outcome::Verified {
                    return Ok(((outcome, None), Vec::new()));
                }
                let r = s.transition(
                    &number,
                    &Transition::Verify {
                        method: Method::MissedCall,
                        ttl_ms,
                    },
                    now,
                )?;
                Ok(((outcome, Some(r.clone())), vec![r]))
            })
            .await;
        match result {
            Ok((outcome, record)) => {
                counted(outcome);
                Ok(record)
            }
            Err(error) => {
                if let Some(outcome) = Outcome::of_error(&error) {
                    counted(outcome);
                }
                Err(error)
            }
        }
    }

    /// Records why a delivery failed; a trunk that says the number is gone revokes it.
    async fn delivery_failed(
        &self,
        number: &str,
        method: Method,
        failure: Failure,
    ) -> Result<(), RegistryError> {
        warn!(number, %failure, "verification delivery failed");
        self.count(
            method,
            &Err::<(), _>(RegistryError::Delivery(failure.clone())),
        );
        let number = number.to_owned();
        self.write(move |s, now| {
            let r = match &failure {
                Failure::NumberGone(_) => s.transition(
                    &number,
                    &Transition::Revoke {
                        reason: failure.to_string(),
                    },
                    now,
                )?,
                _ => {
                    s.delete_challenge(&number)?;
                    s.record_failure(&number, &failure.to_string(), now)?
                }
            };
            Ok(((), vec![r]))
        })
        .await
    }

    /// Expires due numbers every `interval`, until the process ends.
    pub async fn run_expiry(self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.expire_due().await {
                Ok(expired) => {
                    for r in expired {
                        info!(number = %r.number, "verification expired");
                    }
                }
                Err(error) => warn!(%error, "expiry sweep failed"),
            }
        }
    }

    /// Feeds missed calls observed on the trunk into verification.
    pub async fn run_missed_calls(self, mut calls: mpsc::Receiver<MissedCall>) {
        while let Some(call) = calls.recv().await {
            match self.missed_call(call).await {
                Ok(Some(r)) => info!(number = %r.number, "verified by missed call"),
                Ok(None) => {}
                Err(error) => warn!(%error, "missed-call verification failed"),
            }
        }
    }
}

/// The fast path rewrites packets to this address, so it must be a unicast host.
fn check_peer(peer: &PeerAddress) -> Result<(), RegistryError> {
    let bad = match peer.host {
        IpAddr::V4(ip) => ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast(),
        IpAddr::V6(ip) => ip.is_unspecified() || ip.is_multicast(),
    };
    if bad {
        return Err(RegistryError::Invalid(format!(
            "peer.host: {} is not a unicast address",
            peer.host
        )));
    }
    if peer.port == 0 {
        return Err(RegistryError::Invalid(
            "peer.port: must be 1 to 65535".into(),
        ));
    }
    Ok(())
}
