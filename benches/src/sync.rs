//! The registry → `ROUTES` cache sync, on standalone maps of the program's layout (no
//! traffic, no namespace needed):
//!
//! - `sync_full_1m_s`: 1M verified numbers read from a SQLite registry and written to an
//!   empty map (what a cold start does), beside the raw cost of writing the same 1M
//!   entries with batched (`raw_batch_write_1m_s`) and one-by-one
//!   (`raw_single_write_1m_s`) map updates, measured in the same run;
//! - `sync_adopt_1m_s`: the same load onto a map that already holds it (a restart);
//! - `sync_update_p99_ms` (and `_p50_`): a registry change (revocation, or a missed-call
//!   verification) from the start of the registry call until the map shows it, beside
//!   `registry_write_p99_ms`, the same registry writes with nobody syncing, and
//!   `sync_propagate_p99_ms`, from the moment the registry call returned (committed and
//!   published) until the map shows it.

use std::{
    os::fd::AsFd,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use aya::maps::{HashMap, IterableMap, Map, MapData};
use fastpath::{
    registry::{
        Method, NumberRecord, PeerAddress, Registry, Settings, SqliteStore, State, Transport,
        daemon::NoTrunk, number::route_key,
    },
    sync::{RouteMaps, Syncer, batch},
    verify::MissedCall,
};
use fastpath_common::{RouteKey, maps::RouteValue};
use serde_json::{Value, json};

const ENTRIES: u32 = 1_000_000;
const MAX_ROUTES: u32 = 1 << 20;
/// Distinct peer addresses among the numbers (they share `PEERS` slots).
const PEERS: u32 = 1_000;
/// Updates timed for the p99 (half removals, half additions).
const UPDATES: usize = 1_000;
/// Rounds of the 1M load measurements; medians are reported.
const ROUNDS: usize = 5;

fn number(i: u32) -> String {
    format!("1{:010}", 2_000_000_000u64 + u64::from(i))
}

fn peer(i: u32) -> PeerAddress {
    PeerAddress {
        host: std::net::Ipv4Addr::new(198, 51, 100, 2 + (i % PEERS / 250) as u8).into(),
        port: 5060 + (i % 250) as u16,
        transport: Transport::Udp,
    }
}

fn record(i: u32, now: i64) -> NumberRecord {
    NumberRecord {
        number: number(i),
        account: format!("acct-{}", i % 10_000),
        peer: peer(i),
        state: State::Verified,
        opt_in: true,
        verification_method: Some(Method::Message),
        verified_at: Some(now),
        expires_at: Some(now + 86_400_000),
        last_failure: None,
        created_at: now,
        updated_at: now,
    }
}

fn second_handle(maps: &RouteMaps) -> anyhow::Result<HashMap<MapData, RouteKey, RouteValue>> {
    let fd = maps.routes.map().fd().as_fd().try_clone_to_owned()?;
    Ok(HashMap::try_from(Map::from_map_data(MapData::from_fd(
        fd,
    )?)?)?)
}

fn median(samples: &mut [f64]) -> f64 {
    percentile(samples, 0.5)
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

pub fn run() -> anyhow::Result<Vec<Value>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("registry.db");
    let now = fastpath::registry::now_ms();
    eprintln!(
        "sync: writing {ENTRIES} verified numbers to {}...",
        db.display()
    );
    let t = Instant::now();
    {
        let mut store = SqliteStore::open(&db)?;
        let records: Vec<NumberRecord> = (0..ENTRIES).map(|i| record(i, now)).collect();
        store.import(&records, "benchmark")?;
    }
    eprintln!(
        "sync: registry written in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Baselines: the same entries written straight into an empty map.
    let keys: Vec<RouteKey> = (0..ENTRIES)
        .map(|i| route_key(&number(i)).context("route key"))
        .collect::<anyhow::Result<_>>()?;
    let values: Vec<RouteValue> = (0..ENTRIES)
        .map(|i| RouteValue {
            peer_id: i % PEERS,
            generation: 1,
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let settings = Settings {
        missed_call_number: Some("15550199999".into()),
        ..Settings::default()
    };
    let registry = Registry::new(SqliteStore::open(&db)?, NoTrunk, settings);

    // Interleaved rounds (the box is shared and noisy): raw batched writes, registry
    // read alone, full sync onto an empty map, the same sync again onto the full map.
    let (mut raw_batch, mut read, mut full, mut adopt) = (vec![], vec![], vec![], vec![]);
    let mut write_only = vec![];
    let mut last = None;
    for round in 0..ROUNDS {
        {
            let maps = RouteMaps::standalone(MAX_ROUTES)?;
            let t = Instant::now();
            batch::update(maps.routes.map().fd().as_fd(), &keys, &values)?;
            raw_batch.push(t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        let numbers = runtime.block_on(registry.routable())?;
        read.push(t.elapsed().as_secs_f64());
        // The sync's map side alone, from numbers already in memory.
        {
            let mut syncer = Syncer::new(RouteMaps::standalone(MAX_ROUTES)?, 1, []);
            let t = Instant::now();
            syncer.reconcile(&numbers)?;
            write_only.push(t.elapsed().as_secs_f64());
        }
        drop(numbers);

        let syncer = Syncer::new(RouteMaps::standalone(MAX_ROUTES)?, 1, []);
        let t = Instant::now();
        let (syncer, report) = runtime.block_on(syncer.reconcile_from(&registry));
        full.push(t.elapsed().as_secs_f64());
        let report = report.map_err(anyhow::Error::msg)?;
        if report.added != ENTRIES as usize {
            bail!("full sync added {} of {ENTRIES}", report.added);
        }
        // Restart: the same load onto the map as it is.
        let maps = syncer.into_maps().context("the sync has maps")?;
        let syncer = Syncer::new(maps, 2, []);
        let t = Instant::now();
        let (syncer, report) = runtime.block_on(syncer.reconcile_from(&registry));
        adopt.push(t.elapsed().as_secs_f64());
        let report = report.map_err(anyhow::Error::msg)?;
        if report.repairs() != 0 {
            bail!(
                "adopting an up-to-date map rewrote {} entries",
                report.repairs()
            );
        }
        eprintln!(
            "sync: round {round}: raw {:.3} s, read {:.3} s, write-only {:.3} s, full {:.3} s, adopt {:.3} s",
            raw_batch[round], read[round], write_only[round], full[round], adopt[round]
        );
        last = Some(syncer);
    }
    let syncer = last.context("no rounds")?;
    let raw_single = {
        let mut maps = RouteMaps::standalone(MAX_ROUTES)?;
        let t = Instant::now();
        for (k, v) in keys.iter().zip(&values) {
            maps.routes.insert(k, v, 0)?;
        }
        t.elapsed().as_secs_f64()
    };

    // Updates: the syncer runs as in the daemon; we time registry call → map.
    let map = second_handle(syncer.maps().context("the sync has maps")?)?;
    let changes = registry.subscribe();
    // No config reloads here: the sender stays unused (and alive) for the run.
    let (_statics, static_changes) = tokio::sync::watch::channel(Default::default());
    let task = runtime.spawn(syncer.run(
        registry.clone(),
        changes,
        static_changes,
        Duration::from_secs(3600),
    ));
    // From the start of the registry call (durable commit included), and from the
    // moment the call returned (the change committed and published).
    let mut latencies = Vec::with_capacity(UPDATES);
    let mut propagation = Vec::with_capacity(UPDATES);
    let added_base = ENTRIES + 10;
    for u in 0..UPDATES / 2 {
        // A removal: revoke a loaded number.
        let n = number(u as u32);
        let k = route_key(&n).context("key")?;
        let t = Instant::now();
        runtime.block_on(registry.revoke(&n, "benchmark"))?;
        let committed = Instant::now();
        while map.get(&k, 0).is_ok() {
            if t.elapsed() > Duration::from_secs(5) {
                bail!("revocation of {n} not visible after 5 s");
            }
            std::hint::spin_loop();
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        propagation.push(committed.elapsed().as_secs_f64() * 1e3);

        // An addition: a missed call verifies a pending number.
        let i = added_base + u as u32;
        let n = number(i);
        let k = route_key(&n).context("key")?;
        runtime.block_on(async {
            registry
                .register(&n, &format!("new-{u}"), peer(i), true)
                .await?;
            registry.start_verification(&n, Method::MissedCall).await
        })?;
        let t = Instant::now();
        let verified = runtime.block_on(registry.missed_call(MissedCall { caller: n.clone() }))?;
        let committed = Instant::now();
        if verified.is_none() {
            bail!("missed call did not verify {n}");
        }
        while map.get(&k, 0).is_err() {
            if t.elapsed() > Duration::from_secs(5) {
                bail!("verification of {n} not visible after 5 s");
            }
            std::hint::spin_loop();
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        propagation.push(committed.elapsed().as_secs_f64() * 1e3);
    }
    task.abort();

    // The same kinds of writes with no syncer: what the registry's commit alone costs.
    let quiet = Registry::new(SqliteStore::open(&db)?, NoTrunk, Settings::default());
    let mut writes = Vec::with_capacity(UPDATES / 2);
    for u in UPDATES / 2..UPDATES {
        let n = number(u as u32);
        let t = Instant::now();
        runtime.block_on(quiet.revoke(&n, "benchmark"))?;
        writes.push(t.elapsed().as_secs_f64() * 1e3);
    }

    let p50 = percentile(&mut latencies, 0.50);
    let p99 = percentile(&mut latencies, 0.99);
    let q50 = percentile(&mut propagation, 0.50);
    let q99 = percentile(&mut propagation, 0.99);
    let w50 = percentile(&mut writes, 0.50);
    let w99 = percentile(&mut writes, 0.99);
    let wo = median(&mut write_only);
    let (raw_b, rd, fl, ad) = (
        median(&mut raw_batch),
        median(&mut read),
        median(&mut full),
        median(&mut adopt),
    );
    println!();
    println!(
        "cache sync, {ENTRIES} numbers over {PEERS} peers; medians of {ROUNDS} interleaved rounds"
    );
    println!("  raw batched map writes, 1M    {raw_b:>8.3} s   (baseline)");
    println!("  raw one-by-one map writes, 1M {raw_single:>8.3} s   (baseline, 1 round)");
    println!("  registry read alone (SQLite)  {rd:>8.3} s");
    println!("  sync map side alone           {wo:>8.3} s   (numbers already in memory)");
    println!(
        "  sync_full_1m (read + write)   {fl:>8.3} s   = {:.2} x raw batched (target <= 2 s)",
        fl / raw_b
    );
    println!("  sync_adopt_1m (restart)       {ad:>8.3} s");
    println!(
        "  update visible p50 / p99      {p50:>8.3} / {p99:.3} ms   (from the registry call; target p99 <= 5 ms)"
    );
    println!(
        "  commit -> map p50 / p99       {q50:>8.3} / {q99:.3} ms   (from the committed change)"
    );
    println!("  registry write alone p50/p99  {w50:>8.3} / {w99:.3} ms   (baseline)");
    Ok(vec![
        json!({"name": "sync_full_1m_s", "value": fl, "unit": "s"}),
        json!({"name": "sync_registry_read_1m_s", "value": rd, "unit": "s"}),
        json!({"name": "sync_write_only_1m_s", "value": wo, "unit": "s"}),
        json!({"name": "raw_batch_write_1m_s", "value": raw_b, "unit": "s"}),
        json!({"name": "raw_single_write_1m_s", "value": raw_single, "unit": "s"}),
        json!({"name": "sync_adopt_1m_s", "value": ad, "unit": "s"}),
        json!({"name": "sync_update_p50_ms", "value": p50, "unit": "ms"}),
        json!({"name": "sync_update_p99_ms", "value": p99, "unit": "ms"}),
        json!({"name": "sync_propagate_p50_ms", "value": q50, "unit": "ms"}),
        json!({"name": "sync_propagate_p99_ms", "value": q99, "unit": "ms"}),
        json!({"name": "registry_write_p50_ms", "value": w50, "unit": "ms"}),
        json!({"name": "registry_write_p99_ms", "value": w99, "unit": "ms"}),
    ])
}
