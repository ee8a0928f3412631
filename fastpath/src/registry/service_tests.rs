//! The verification lifecycle against an in-process double of the trunk.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use super::{
    Method, PeerAddress, Registry, Settings, SqliteStore, State, Transport, service::RegistryError,
};
use crate::verify::{Failure, MissedCall};

use super::fake_trunk::FakeTrunk;

const NUMBER: &str = "+1 555 010 0001";
const DIGITS: &str = "15550100001";

struct Fixture {
    registry: Registry<SqliteStore, FakeTrunk>,
    trunk: FakeTrunk,
    clock: Arc<AtomicI64>,
}

fn fixture(settings: Settings) -> Fixture {
    let trunk = FakeTrunk::default();
    let clock = Arc::new(AtomicI64::new(1_000_000));
    let c = clock.clone();
    let registry = Registry::with_clock(
        SqliteStore::in_memory().unwrap(),
        trunk.clone(),
        settings,
        Arc::new(move || c.load(Ordering::SeqCst)),
    );
    Fixture {
        registry,
        trunk,
        clock,
    }
}

fn peer() -> PeerAddress {
    PeerAddress {
        host: "198.51.100.2".parse().unwrap(),
        port: 5060,
        transport: Transport::Udp,
    }
}

async fn registered(settings: Settings) -> Fixture {
    let f = fixture(settings);
    f.registry
        .register(NUMBER, "acme", peer(), true)
        .await
        .unwrap();
    f
}

#[tokio::test]
async fn message_code_verifies_and_publishes_the_change() {
    let f = registered(Settings::default()).await;
    let mut changes = f.registry.subscribe();
    let started = f
        .registry
        .start_verification(DIGITS, Method::Message)
        .await
        .unwrap();
    assert_eq!(
        started.code, None,
        "the message code is never shown to the API caller"
    );
    let code = f.trunk.last_code();
    assert_eq!(code.len(), 6);
    let r = f.registry.submit_code(DIGITS, &code).await.unwrap();
    assert_eq!(r.state, State::Verified);
    assert!(r.is_routable(f.registry.now()));
    assert_eq!(changes.recv().await.unwrap().record.state, State::Verified);
    // The code is single use.
    assert!(matches!(
        f.registry.submit_code(DIGITS, &code).await,
        Err(RegistryError::NoChallenge(_))
    ));
}

#[tokio::test]
async fn wrong_codes_are_bounded() {
    let f = registered(Settings::default()).await;
    f.registry
        .start_verification(DIGITS, Method::Message)
        .await
        .unwrap();
    let code = f.trunk.last_code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for left in (1..5).rev() {
        match f.registry.submit_code(DIGITS, wrong).await {
            Err(RegistryError::WrongCode { attempts_left }) => assert_eq!(attempts_left, left),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        f.registry.submit_code(DIGITS, wrong).await,
        Err(RegistryError::TooManyAttempts(_))
    ));
    // Even the right code is refused now: the challenge is gone.
    assert!(f.registry.submit_code(DIGITS, &code).await.is_err());
    assert_eq!(f.registry.get(DIGITS).await.unwrap().state, State::Pending);
}

#[tokio::test]
async fn codes_expire() {
    let f = registered(Settings::default()).await;
    f.registry
        .start_verification(DIGITS, Method::Message)
        .await
        .unwrap();
    let code = f.trunk.last_code();
    f.clock.fetch_add(600_000, Ordering::SeqCst);
    assert!(matches!(
        f.registry.submit_code(DIGITS, &code).await,
        Err(RegistryError::CodeExpired(_))
    ));
    assert_eq!(f.registry.get(DIGITS).await.unwrap().state, State::Pending);
}

#[tokio::test]
async fn starts_are_rate_limited_per_number_and_account() {
    let f = registered(Settings {
        starts_per_account: 4,
        ..Settings::default()
    })
    .await;
    for _ in 0..3 {
        f.registry
            .start_verification(DIGITS, Method::Message)
            .await
            .unwrap();
    }
    assert!(matches!(
        f.registry.start_verification(DIGITS, Method::Message).await,
        Err(RegistryError::RateLimited {
            scope: "this number",
            ..
        })
    ));
    f.registry
        .register("15550100002", "acme", peer(), true)
        .await
        .unwrap();
    f.registry
        .start_verification("15550100002", Method::Message)
        .await
        .unwrap();
    assert!(matches!(
        f.registry
            .start_verification("15550100002", Method::Message)
            .await,
        Err(RegistryError::RateLimited {
            scope: "this account",
            ..
        })
    ));
    // The window passes.
    f.clock.fetch_add(600_000, Ordering::SeqCst);
    f.registry
        .start_verification(DIGITS, Method::Message)
        .await
        .unwrap();
}

async fn wait_for(f: &Fixture, pred: impl Fn(&super::NumberRecord) -> bool) -> super::NumberRecord {
    for _ in 0..200 {
        let r = f.registry.get(DIGITS).await.unwrap();
        if pred(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached: {:?}", f.registry.get(DIGITS).await);
}

#[tokio::test]
async fn call_with_the_right_digits_verifies() {
    let f = registered(Settings::default()).await;
    // The user types the code the API showed. On this single-threaded runtime the
    // spawned call cannot run before the next await, so scripting it now is in time.
    let started = f
        .registry
        .start_verification(DIGITS, Method::Call)
        .await
        .unwrap();
    let code = started.code.clone().expect("a call shows the code");
    f.trunk.calls.lock().unwrap().push_back(Ok(code));
    let r = wait_for(&f, |r| r.state == State::Verified).await;
    assert_eq!(r.verification_method, Some(Method::Call));
}

#[tokio::test]
async fn call_with_wrong_digits_or_no_answer_stays_unverified_with_reason() {
    let f = registered(Settings::default()).await;
    f.trunk
        .calls
        .lock()
        .unwrap()
        .push_back(Ok("999999x".into()));
    f.registry
        .start_verification(DIGITS, Method::Call)
        .await
        .unwrap();
    let r = wait_for(&f, |r| r.last_failure.is_some()).await;
    assert_eq!(r.state, State::Pending);
    assert!(r.last_failure.unwrap().contains("keypad"));

    f.trunk.calls.lock().unwrap().push_back(Err(Failure::Busy));
    f.registry
        .start_verification(DIGITS, Method::Call)
        .await
        .unwrap();
    let r = wait_for(&f, |r| r.last_failure.as_deref() == Some("busy")).await;
    assert_eq!(r.state, State::Pending);
    let audit = f.registry.audit(DIGITS).await.unwrap();
    assert!(audit.iter().any(|a| a.reason.contains("busy")), "{audit:?}");
}

#[tokio::test]
async fn number_gone_revokes() {
    let f = registered(Settings::default()).await;
    *f.trunk.message_result.lock().unwrap() = Some(Failure::from_status(404));
    let err = f
        .registry
        .start_verification(DIGITS, Method::Message)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        RegistryError::Delivery(Failure::NumberGone(404))
    ));
    assert_eq!(f.registry.get(DIGITS).await.unwrap().state, State::Revoked);
    assert!(matches!(
        f.registry.start_verification(DIGITS, Method::Message).await,
        Err(RegistryError::Revoked(_))
    ));
}

#[tokio::test]
async fn missed_call_verifies_only_a_pending_missed_call_challenge() {
    let f = registered(Settings {
        missed_call_number: Some("15550199999".into()),
        ..Settings::default()
    })
    .await;
    let call = MissedCall {
        caller: "+15550100001".into(),
    };
    // No challenge yet: the call proves nothing.
    assert_eq!(f.registry.missed_call(call.clone()).await.unwrap(), None);
    let started = f
        .registry
        .start_verification(DIGITS, Method::MissedCall)
        .await
        .unwrap();
    assert_eq!(started.call_number.as_deref(), Some("15550199999"));
    // Garbage and other callers are ignored.
    let junk = MissedCall {
        caller: "anonymous".into(),
    };
    assert_eq!(f.registry.missed_call(junk).await.unwrap(), None);
    let r = f.registry.missed_call(call).await.unwrap().unwrap();
    assert_eq!(r.state, State::Verified);
    assert_eq!(r.verification_method, Some(Method::MissedCall));
}

#[tokio::test]
async fn verified_numbers_expire_and_can_be_reverified() {
    let f = registered(Settings {
        verified_ttl: Duration::from_secs(60),
        ..Settings::default()
    })
    .await;
    f.registry
        .start_verification(DIGITS, Method::Message)
        .await
        .unwrap();
    f.registry
        .submit_code(DIGITS, &f.trunk.last_code())
        .await
        .unwrap();
    assert_eq!(f.registry.routable().await.unwrap().len(), 1);
    f.clock.fetch_add(60_000, Ordering::SeqCst);
    let expired = f.registry.expire_due().await.unwrap();
    assert_eq!(expired.len(), 1);
    assert!(f.registry.routable().await.unwrap().is_empty());
    f.registry
        .start_verification(DIGITS, Method::Message)
        .await
        .unwrap();
    let r = f
        .registry
        .submit_code(DIGITS, &f.trunk.last_code())
        .await
        .unwrap();
    assert_eq!(r.state, State::Verified);
}

#[tokio::test]
async fn bad_input_is_refused_with_a_reason() {
    let f = fixture(Settings::default());
    let err = f
        .registry
        .register("alice", "acme", peer(), true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("E.164"), "{err}");
    let mut p = peer();
    p.host = "0.0.0.0".parse().unwrap();
    assert!(f.registry.register(NUMBER, "acme", p, true).await.is_err());
    assert!(
        f.registry
            .register(NUMBER, " ", peer(), true)
            .await
            .is_err()
    );
    assert!(matches!(
        f.registry.get("15550100009").await,
        Err(RegistryError::Store(super::StoreError::NotFound(_)))
    ));
    assert!(matches!(
        f.registry
            .start_verification(DIGITS, Method::MissedCall)
            .await,
        Err(RegistryError::Store(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_the_sync_reads_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("r.db")).unwrap();
    let records: Vec<super::NumberRecord> = (0..100)
        .map(|i| super::NumberRecord {
            number: format!("1555{i:07}"),
            account: "a".into(),
            peer: peer(),
            state: State::Verified,
            opt_in: true,
            verification_method: Some(Method::Call),
            verified_at: Some(0),
            expires_at: Some(i64::MAX),
            last_failure: None,
            created_at: 0,
            updated_at: 0,
        })
        .collect();
    store.import(&records, "fixture").unwrap();
    let registry = Registry::new(store, FakeTrunk::default(), Settings::default());
    // A reader that takes one chunk of 10 and then stalls: the stream is stuck mid-read.
    let (tx, rx) = std::sync::mpsc::sync_channel(0);
    let stream = tokio::spawn({
        let registry = registry.clone();
        async move { registry.stream_routable(10, tx).await }
    });
    let first = tokio::task::spawn_blocking(move || {
        let first = rx.recv().unwrap();
        (first, rx)
    })
    .await
    .unwrap();
    assert_eq!(first.0.len(), 10);
    // Meanwhile a write completes.
    let write = tokio::time::timeout(
        Duration::from_secs(5),
        registry.revoke("15550000001", "during a stream"),
    )
    .await
    .expect("a write waited for the stream");
    assert_eq!(write.unwrap().state, State::Revoked);
    // The stream reads its own snapshot: all 100, including the one revoked since.
    let rest: usize = tokio::task::spawn_blocking(move || first.1.iter().map(|c| c.len()).sum())
        .await
        .unwrap();
    stream.await.unwrap().unwrap();
    assert_eq!(10 + rest, 100);
}

/// Every verification path counts its start and its outcome under its own method, and
/// the state counts follow the registry.
#[tokio::test]
async fn verifications_are_counted_by_method_and_outcome() {
    use super::counts::Outcome;
    let f = registered(Settings {
        missed_call_number: Some("15550199999".into()),
        starts_per_number: 10,
        ..Settings::default()
    })
    .await;
    let v = || f.registry.verifications();
    let states = f.registry.state_counts().unwrap();
    assert_eq!(
        (states.get(State::Pending), states.get(State::Verified)),
        (1, 0)
    );

    // Message: a wrong code, then the right one; a code after that has no challenge.
    f.registry
        .start_verification(DIGITS, Method::Message)
        .await
        .unwrap();
    let code = f.trunk.last_code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert!(f.registry.submit_code(DIGITS, wrong).await.is_err());
    f.registry.submit_code(DIGITS, &code).await.unwrap();
    assert!(f.registry.submit_code(DIGITS, &code).await.is_err());
    assert_eq!(v().get_started(Method::Message), 1);
    for (outcome, n) in [
        (Outcome::WrongCode, 1),
        (Outcome::Verified, 1),
        (Outcome::NoChallenge, 1),
        (Outcome::DeliveryFailed, 0),
    ] {
        assert_eq!(v().get_outcome(Method::Message, outcome), n, "{outcome:?}");
    }
    let states = f.registry.state_counts().unwrap();
    assert_eq!(
        (states.get(State::Pending), states.get(State::Verified)),
        (0, 1)
    );

    // Call: the phone is busy (a failed delivery, counted once).
    f.trunk.calls.lock().unwrap().push_back(Err(Failure::Busy));
    f.registry
        .start_verification(DIGITS, Method::Call)
        .await
        .unwrap();
    wait_for(&f, |r| r.last_failure.as_deref() == Some("busy")).await;
    assert_eq!(v().get_started(Method::Call), 1);
    assert_eq!(v().get_outcome(Method::Call, Outcome::DeliveryFailed), 1);
    assert_eq!(v().get_outcome(Method::Message, Outcome::DeliveryFailed), 0);

    // Missed call: unsolicited, then expired, then in time.
    let call = MissedCall {
        caller: "+15550100001".into(),
    };
    assert_eq!(f.registry.missed_call(call.clone()).await.unwrap(), None);
    f.registry
        .start_verification(DIGITS, Method::MissedCall)
        .await
        .unwrap();
    f.clock.fetch_add(600_000, Ordering::SeqCst);
    assert_eq!(f.registry.missed_call(call.clone()).await.unwrap(), None);
    f.registry
        .start_verification(DIGITS, Method::MissedCall)
        .await
        .unwrap();
    assert!(f.registry.missed_call(call).await.unwrap().is_some());
    assert_eq!(v().get_started(Method::MissedCall), 2);
    for (outcome, n) in [
        (Outcome::NoChallenge, 1),
        (Outcome::Expired, 1),
        (Outcome::Verified, 1),
    ] {
        assert_eq!(
            v().get_outcome(Method::MissedCall, outcome),
            n,
            "{outcome:?}"
        );
    }

    // Rate limits: a refused start counts as rate_limited, not as a start.
    let limited = registered(Settings {
        starts_per_number: 1,
        ..Settings::default()
    })
    .await;
    limited
        .registry
        .start_verification(DIGITS, Method::Message)
        .await
        .unwrap();
    assert!(
        limited
            .registry
            .start_verification(DIGITS, Method::Message)
            .await
            .is_err()
    );
    let lv = limited.registry.verifications();
    assert_eq!(lv.get_started(Method::Message), 1);
    assert_eq!(lv.get_outcome(Method::Message, Outcome::RateLimited), 1);
}
