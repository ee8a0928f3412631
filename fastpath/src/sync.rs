//! Cache sync: makes the pinned `ROUTES` / `PEERS` maps say what the registry says.
//!
//! - A full load at start (and on every periodic reconcile) reads every routable number,
//!   compares with what the map holds, and writes only the difference with batched map
//!   operations. It adopts what a previous daemon left pinned instead of clearing it, so
//!   forwarding never stops across a restart.
//! - Between reconciles, each committed registry change is applied as it arrives.
//! - The periodic reconcile repairs drift (entries added or removed behind our back) and
//!   counts the repairs.
//!
//! Every route it writes to the maps it also writes to the daemon's [`RouteTable`], which
//! the userspace proxy reads: the two paths decide alike, and with no XDP program at all
//! (`run --no-xdp`, or a box that cannot load it) the sync keeps only the table.
//!
//! `PEERS` slots are shared by every number with the same peer address. A slot is filled
//! before any route points at it and cleared only after no route does, so a packet never
//! meets a route whose peer slot is empty or, worse, holds another peer's address. The
//! sync owns the slots' addresses; a slot's up/down state belongs to peer health checks
//! and is left as found (new slots start up).

pub mod batch;

use std::{
    net::SocketAddr,
    os::fd::AsFd,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{Array, HashMap, IterableMap, Map, MapData, MapError};
use fastpath_common::{
    RouteKey,
    maps::{self as names, MAX_PEERS, PeerValue, RouteValue},
    route_index::{Bucket, bucket_bits, buckets},
};
use rustc_hash::FxHashMap as StdHashMap;
use tokio::sync::{
    broadcast::{self, error::RecvError},
    watch,
};
use tracing::{info, warn};

use crate::{
    maps::peer_address,
    registry::{NumberRecord, Registry, RoutableNumber, Store, number::route_key, service::Change},
    route_index::RouteIndex,
    routing::RouteTable,
    verify::Channel,
};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("batched {op} on ROUTES: {source}")]
    Batch {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("all {MAX_PEERS} PEERS slots are in use; cannot add peer {0}")]
    PeersFull(SocketAddr),
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> SyncError {
    move |source| SyncError::Map { name, source }
}

/// The maps the sync writes.
pub struct RouteMaps {
    pub routes: HashMap<MapData, RouteKey, RouteValue>,
    pub peers: Array<MapData, PeerValue>,
    /// `ROUTE_INDEX`, mapped: kept with `ROUTES` (see `route_index`).
    pub index: RouteIndex,
}

impl RouteMaps {
    /// The maps the loaded program uses, by their pins.
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, SyncError> {
        let open = |name: &'static str| {
            MapData::from_pin(pin_dir.join(name))
                .and_then(Map::from_map_data)
                .map_err(map_err(name))
        };
        let index = MapData::from_pin(pin_dir.join(names::ROUTE_INDEX))
            .map_err(map_err(names::ROUTE_INDEX))?;
        Ok(Self {
            routes: HashMap::try_from(open(names::ROUTES)?).map_err(map_err(names::ROUTES))?,
            peers: Array::try_from(open(names::PEERS)?).map_err(map_err(names::PEERS))?,
            index: RouteIndex::map(&index).map_err(index_err)?,
        })
    }

    /// Fresh maps of the program's layout, not attached to anything (tests, benchmarks).
    pub fn standalone(max_routes: u32) -> Result<Self, SyncError> {
        let index: Array<MapData, Bucket> = Array::create(
            buckets(bucket_bits(max_routes)),
            fastpath_common::route_index::MAP_FLAGS,
        )
        .map_err(map_err(names::ROUTE_INDEX))?;
        Ok(Self {
            routes: HashMap::create(max_routes, 0).map_err(map_err(names::ROUTES))?,
            peers: Array::create(MAX_PEERS, 0).map_err(map_err(names::PEERS))?,
            index: RouteIndex::map(index.map()).map_err(index_err)?,
        })
    }
}

fn index_err(source: std::io::Error) -> SyncError {
    SyncError::Batch {
        op: "mapping ROUTE_INDEX",
        source,
    }
}

/// Published for `/health` and logs.
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// Routes in the map now.
    pub routes: AtomicU64,
    /// Distinct peers in use now.
    pub peers: AtomicU64,
    /// Their addresses (peer health pings them).
    pub peer_addresses: std::sync::Mutex<Vec<SocketAddr>>,
    /// Incremental changes applied.
    pub updates: AtomicU64,
    /// Periodic reconciles run.
    pub reconciles: AtomicU64,
    /// Entries a reconcile found wrong (missing, pointing elsewhere, or extra) and fixed.
    pub repairs: AtomicU64,
    /// How long changes and reconciles take (timed in [`Syncer::run`]).
    pub latency: crate::metrics::SyncLatency,
}

/// What one reconcile changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    pub routes: usize,
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub peers: usize,
}

impl ReconcileReport {
    pub fn repairs(&self) -> usize {
        self.added + self.changed + self.removed
    }
}

/// Registry rows per chunk of a streamed reconcile.
const CHUNK: usize = 16 * 1024;

/// A reconcile in progress (see [`Syncer::begin`]).
pub struct Pass {
    existing: StdHashMap<RouteKey, RouteValue>,
    desired: StdHashMap<RouteKey, u32>,
    report: ReconcileReport,
}

/// Which `PEERS` slot holds which address, and how many routes use each.
struct PeerTable {
    slots: Vec<Option<SocketAddr>>,
    refs: Vec<u32>,
    ids: StdHashMap<SocketAddr, u32>,
}

impl PeerTable {
    fn empty() -> Self {
        Self {
            slots: vec![None; MAX_PEERS as usize],
            refs: vec![0; MAX_PEERS as usize],
            ids: StdHashMap::default(),
        }
    }
}

pub struct Syncer {
    /// `None` without the fast path: only the route table is kept.
    maps: Option<RouteMaps>,
    /// The proxy's view of the same routes.
    table: Arc<RouteTable>,
    generation: u32,
    /// Routes from the config file; they win over the registry for the same number.
    static_routes: StdHashMap<RouteKey, SocketAddr>,
    /// What the map must say: key → peer slot (12 bytes an entry, for 1M-entry tables).
    desired: StdHashMap<RouteKey, u32>,
    peers: PeerTable,
    counters: Arc<SyncCounters>,
}

impl Syncer {
    pub fn new(
        maps: RouteMaps,
        generation: u32,
        static_routes: impl IntoIterator<Item = (RouteKey, SocketAddr)>,
    ) -> Self {
        Self::with_maps(Some(maps), generation, static_routes)
    }

    /// A sync that keeps only the route table (no fast path).
    pub fn without_maps(
        generation: u32,
        static_routes: impl IntoIterator<Item = (RouteKey, SocketAddr)>,
    ) -> Self {
        Self::with_maps(None, generation, static_routes)
    }

    fn with_maps(
        maps: Option<RouteMaps>,
        generation: u32,
        static_routes: impl IntoIterator<Item = (RouteKey, SocketAddr)>,
    ) -> Self {
        Self {
            maps,
            table: Arc::default(),
            generation,
            static_routes: static_routes.into_iter().collect(),
            desired: StdHashMap::default(),
            peers: PeerTable::empty(),
            counters: Arc::default(),
        }
    }

    /// Writes the routes into `table` too (the daemon's, which the proxy reads).
    pub fn mirror_to(mut self, table: Arc<RouteTable>) -> Self {
        self.table = table;
        self
    }

    pub fn counters(&self) -> Arc<SyncCounters> {
        self.counters.clone()
    }

    pub fn maps(&self) -> Option<&RouteMaps> {
        self.maps.as_ref()
    }

    /// Gives the maps back (a restarting daemon hands them to its successor).
    pub fn into_maps(self) -> Option<RouteMaps> {
        self.maps
    }

    /// The static routes from the config (a reload changes them); the next reconcile
    /// writes them.
    pub fn set_static_routes(&mut self, routes: impl IntoIterator<Item = (RouteKey, SocketAddr)>) {
        self.static_routes = routes.into_iter().collect();
    }

    fn write_peer(&mut self, id: u32, value: PeerValue) -> Result<(), SyncError> {
        match &mut self.maps {
            Some(maps) => maps.peers.set(id, value, 0).map_err(map_err(names::PEERS)),
            None => Ok(()),
        }
    }

    fn read_peer(&self, id: u32) -> Result<PeerValue, SyncError> {
        match &self.maps {
            Some(maps) => maps.peers.get(&id, 0).map_err(map_err(names::PEERS)),
            None => Ok(crate::maps::EMPTY_PEER),
        }
    }

    fn delete_routes(&mut self, keys: &[RouteKey]) -> Result<usize, SyncError> {
        let Some(maps) = &mut self.maps else {
            return Ok(keys.len());
        };
        // Out of the index before `ROUTES` (see `route_index`).
        for &key in keys {
            maps.index.remove(key);
        }
        batch::delete(maps.routes.map().fd().as_fd(), keys).map_err(|source| SyncError::Batch {
            op: "delete",
            source,
        })
    }

    /// The slot for `addr`, filling a free one (in the map too) if it has none.
    fn peer_id(&mut self, addr: SocketAddr) -> Result<u32, SyncError> {
        if let Some(&id) = self.peers.ids.get(&addr) {
            return Ok(id);
        }
        let id = self
            .peers
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(SyncError::PeersFull(addr))? as u32;
        let mut value = crate::maps::peer_value_for(addr);
        // Health checks may already know the peer is down (another route's slot once).
        if self.table.is_down(addr) {
            value.state = names::PEER_DOWN;
        }
        self.write_peer(id, value)?;
        self.peers.slots[id as usize] = Some(addr);
        self.peers.ids.insert(addr, id);
        Ok(id)
    }

    /// Drops one route's use of slot `id`; the last user clears it.
    fn release_peer(&mut self, id: u32) -> Result<(), SyncError> {
        let Some(refs) = self.peers.refs.get_mut(id as usize) else {
            return Ok(());
        };
        *refs = refs.saturating_sub(1);
        if *refs == 0
            && let Some(addr) = self.peers.slots[id as usize].take()
        {
            self.write_peer(id, crate::maps::EMPTY_PEER)?;
            self.peers.ids.remove(&addr);
        }
        Ok(())
    }

    /// Makes the maps hold exactly `numbers` (plus the static routes), writing only the
    /// difference. The first call adopts whatever an earlier daemon left in the maps.
    pub fn reconcile(&mut self, numbers: &[RoutableNumber]) -> Result<ReconcileReport, SyncError> {
        let mut pass = self.begin()?;
        self.feed(&mut pass, numbers)?;
        self.finish(pass)
    }

    /// Starts a reconcile: adopts the `PEERS` slots and reads `ROUTES` as they are.
    /// Feed it the registry's numbers in chunks (written as they come, so reading the
    /// registry and writing the map overlap), then [`Syncer::finish`] it.
    pub fn begin(&mut self) -> Result<Pass, SyncError> {
        let Some(maps) = &mut self.maps else {
            // Only the table: it holds what the last pass wrote, slots included.
            let existing = self
                .desired
                .iter()
                .map(|(&key, &peer_id)| {
                    let generation = self.generation;
                    (
                        key,
                        RouteValue {
                            peer_id,
                            generation,
                        },
                    )
                })
                .collect();
            self.peers.refs.fill(0);
            return Ok(self.pass(existing));
        };
        // Adopt the slots as the map has them: routes that point at a slot keep working.
        let mut table = PeerTable::empty();
        for id in 0..MAX_PEERS {
            let value = maps.peers.get(&id, 0).map_err(map_err(names::PEERS))?;
            // Whatever its state: the sync owns addresses, peer health owns the state.
            if let Some(addr) = peer_address(&value)
                && !table.ids.contains_key(&addr)
            {
                table.ids.insert(addr, id);
                table.slots[id as usize] = Some(addr);
            }
        }
        let fd = maps.routes.map().fd().as_fd();
        let existing: StdHashMap<RouteKey, RouteValue> = batch::lookup_all(fd)
            .map_err(|source| SyncError::Batch {
                op: "lookup",
                source,
            })?
            .into_iter()
            .collect();
        // The index as `ROUTES` is now: an earlier daemon's index, an empty one after a
        // resize, or one a crash left a change behind `ROUTES` is repaired before anything
        // is written.
        maps.index
            .rebuild(existing.iter().map(|(&key, value)| (key, value.peer_id)));
        self.peers = table;
        Ok(self.pass(existing))
    }

    fn pass(&self, existing: StdHashMap<RouteKey, RouteValue>) -> Pass {
        // Sized for the last pass (or the map as found): no rehashing while feeding.
        let capacity = existing.len().max(self.desired.len());
        Pass {
            desired: StdHashMap::with_capacity_and_hasher(capacity, Default::default()),
            existing,
            report: ReconcileReport::default(),
        }
    }

    /// Writes the routes of `numbers` that the map does not already hold as wanted.
    pub fn feed(&mut self, pass: &mut Pass, numbers: &[RoutableNumber]) -> Result<(), SyncError> {
        let mut keys = Vec::with_capacity(numbers.len());
        let mut values = Vec::with_capacity(numbers.len());
        for n in numbers {
            // Static routes win; they are written by `finish`.
            if !self.static_routes.contains_key(&n.key) {
                self.want(pass, n.key, n.peer, &mut keys, &mut values)?;
            }
        }
        self.write_routes(&keys, &values)
    }

    fn want(
        &mut self,
        pass: &mut Pass,
        key: RouteKey,
        addr: SocketAddr,
        keys: &mut Vec<RouteKey>,
        values: &mut Vec<RouteValue>,
    ) -> Result<(), SyncError> {
        let peer_id = self.peer_id(addr)?;
        self.peers.refs[peer_id as usize] += 1;
        if let Some(previous) = pass.desired.insert(key, peer_id) {
            // Fed twice: the earlier route no longer uses its slot (cleared in `finish`).
            let refs = &mut self.peers.refs[previous as usize];
            *refs = refs.saturating_sub(1);
        }
        match pass.existing.get(&key) {
            Some(v) if v.peer_id == peer_id => return Ok(()),
            Some(_) => pass.report.changed += 1,
            None => pass.report.added += 1,
        }
        keys.push(key);
        values.push(RouteValue {
            peer_id,
            generation: self.generation,
        });
        Ok(())
    }

    fn write_routes(&mut self, keys: &[RouteKey], values: &[RouteValue]) -> Result<(), SyncError> {
        let Some(maps) = &mut self.maps else {
            return Ok(());
        };
        let fd = maps.routes.map().fd().as_fd();
        batch::update(fd, keys, values).map_err(|source| SyncError::Batch {
            op: "update",
            source,
        })?;
        // The index after `ROUTES` (see `route_index`).
        for (&key, value) in keys.iter().zip(values) {
            maps.index.insert(key, value.peer_id);
        }
        Ok(())
    }

    /// Ends a reconcile whose feed saw every routable number: writes the static routes,
    /// removes routes nobody wants, then clears the peer slots no route uses.
    pub fn finish(&mut self, mut pass: Pass) -> Result<ReconcileReport, SyncError> {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        let statics: Vec<(RouteKey, SocketAddr)> =
            self.static_routes.iter().map(|(k, a)| (*k, *a)).collect();
        for (key, addr) in statics {
            self.want(&mut pass, key, addr, &mut keys, &mut values)?;
        }
        self.write_routes(&keys, &values)?;
        let stale: Vec<RouteKey> = pass
            .existing
            .keys()
            .filter(|k| !pass.desired.contains_key(k))
            .copied()
            .collect();
        pass.report.removed = self.delete_routes(&stale)?;
        // `ROUTES` now holds exactly the desired routes: the index again, so that numbers
        // of a bucket that overflowed move into slots the removed numbers freed.
        if let Some(maps) = &mut self.maps {
            maps.index
                .rebuild(pass.desired.iter().map(|(&key, &id)| (key, id)));
        }
        // The table after the map: a new route reaches the kernel no later than the proxy.
        let table_ids: Vec<Option<u32>> = self
            .peers
            .slots
            .iter()
            .map(|slot| slot.map(|addr| self.table.peer_id(addr)))
            .collect();
        self.table.replace_routes(
            pass.desired
                .iter()
                .filter_map(|(&key, &slot)| Some((key, table_ids[slot as usize]?))),
        );
        // Only now that no route points at them may unused slots be cleared.
        for id in 0..MAX_PEERS as usize {
            if let Some(addr) = self.peers.slots[id]
                && self.peers.refs[id] == 0
            {
                self.write_peer(id as u32, crate::maps::EMPTY_PEER)?;
                self.peers.slots[id] = None;
                self.peers.ids.remove(&addr);
            }
        }
        // A duplicate slot for an address already held elsewhere is unused: clear it.
        for id in 0..MAX_PEERS {
            if self.peers.slots[id as usize].is_none() {
                let value = self.read_peer(id)?;
                if value.family != 0 {
                    self.write_peer(id, crate::maps::EMPTY_PEER)?;
                }
            }
        }
        let mut report = pass.report;
        report.routes = pass.desired.len();
        report.peers = self.peers.ids.len();
        self.desired = pass.desired;
        self.publish();
        Ok(report)
    }

    /// Applies one committed registry change. Returns whether the map changed.
    pub fn apply(&mut self, record: &NumberRecord, now: i64) -> Result<bool, SyncError> {
        let Some(key) = route_key(&record.number) else {
            warn!(number = %record.number, "registry number has no route key; ignored");
            return Ok(false);
        };
        // Static routes from the config win, as in `reconcile`.
        let want = self
            .static_routes
            .get(&key)
            .copied()
            .or_else(|| record.is_routable(now).then(|| record.peer.socket_addr()));
        let old = self.desired.get(&key).copied();
        let unchanged = match (want, old) {
            (None, None) => true,
            (Some(addr), Some(id)) => self.peers.slots.get(id as usize) == Some(&Some(addr)),
            _ => false,
        };
        if unchanged {
            return Ok(false);
        }
        match want {
            Some(addr) => {
                let peer_id = self.peer_id(addr)?;
                self.peers.refs[peer_id as usize] += 1;
                let value = RouteValue {
                    peer_id,
                    generation: self.generation,
                };
                if let Some(maps) = &mut self.maps {
                    maps.routes
                        .insert(key, value, 0)
                        .map_err(map_err(names::ROUTES))?;
                    maps.index.insert(key, peer_id);
                }
                self.table.set_route(key, self.table.peer_id(addr));
                self.desired.insert(key, peer_id);
            }
            None => {
                self.delete_routes(&[key])?;
                self.table.remove_route(&key);
                self.desired.remove(&key);
            }
        }
        if let Some(id) = old {
            self.release_peer(id)?;
        }
        self.counters.updates.fetch_add(1, Ordering::Relaxed);
        self.publish();
        Ok(true)
    }

    /// Tells the rest of the daemon what the maps now hold.
    fn publish(&self) {
        self.counters
            .routes
            .store(self.desired.len() as u64, Ordering::Relaxed);
        self.counters
            .peers
            .store(self.peers.ids.len() as u64, Ordering::Relaxed);
        let mut addresses = self
            .counters
            .peer_addresses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        addresses.clear();
        addresses.extend(self.peers.ids.keys().copied());
        // Health checks ping exactly the peers in use.
        self.table.set_registered_peers(&addresses);
    }

    /// Reads the registry and reconciles, on the blocking pool: the registry is read in
    /// chunks on one thread while another writes them to the map. Routes are removed only
    /// once the whole registry has been read, so a failed read never empties the map.
    pub async fn reconcile_from<S: Store, C: Channel>(
        self,
        registry: &Registry<S, C>,
    ) -> (Self, Result<ReconcileReport, String>) {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<RoutableNumber>>(4);
        let read = registry.stream_routable(CHUNK, tx);
        let write = self.consume(rx);
        let (read, (mut syncer, pass)) = tokio::join!(read, write);
        let pass = match (read, pass) {
            (_, Err(e)) => return (syncer, Err(e)),
            (Err(e), _) => return (syncer, Err(format!("reading the registry: {e}"))),
            (Ok(()), Ok(pass)) => pass,
        };
        let finished = tokio::task::spawn_blocking(move || {
            let result = syncer.finish(pass).map_err(|e| e.to_string());
            (syncer, result)
        });
        match finished.await {
            Ok(out) => out,
            Err(e) => panic!("sync worker panicked: {e}"),
        }
    }

    async fn consume(
        mut self,
        chunks: std::sync::mpsc::Receiver<Vec<RoutableNumber>>,
    ) -> (Self, Result<Pass, String>) {
        let worker = tokio::task::spawn_blocking(move || {
            let result = (|| {
                let mut pass = self.begin()?;
                let mut progress = Progress::new();
                for chunk in chunks {
                    self.feed(&mut pass, &chunk)?;
                    progress.fed(chunk.len());
                }
                Ok::<_, SyncError>(pass)
            })();
            (self, result.map_err(|e| e.to_string()))
        });
        match worker.await {
            Ok(out) => out,
            // Nothing in the closure panics on any input; if it did, the maps are left
            // as they were and syncing cannot go on.
            Err(e) => panic!("sync worker panicked: {e}"),
        }
    }

    /// [`Syncer::reconcile`] on the blocking pool.
    pub async fn reconcile_from_numbers(
        mut self,
        numbers: Vec<RoutableNumber>,
    ) -> (Self, Result<ReconcileReport, String>) {
        match tokio::task::spawn_blocking(move || {
            let result = self.reconcile(&numbers).map_err(|e| e.to_string());
            (self, result)
        })
        .await
        {
            Ok(out) => out,
            Err(e) => panic!("sync worker panicked: {e}"),
        }
    }

    /// Applies changes as they come and reconciles every `every`, until the registry's
    /// change stream closes.
    pub async fn run<S: Store, C: Channel>(
        mut self,
        registry: Registry<S, C>,
        mut changes: broadcast::Receiver<Change>,
        mut static_routes: watch::Receiver<StaticRoutes>,
        every: Duration,
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut statics_open = true;
        loop {
            let reconcile = tokio::select! {
                change = changes.recv() => match change {
                    Ok(Change { record, committed }) => {
                        match self.apply(&record, registry.now()) {
                            Ok(true) => self.counters.latency.update.observe(committed.elapsed().as_secs_f64()),
                            Ok(false) => {}
                            Err(error) => warn!(number = %record.number, %error, "route update failed; the next reconcile retries"),
                        }
                        None
                    }
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "sync fell behind the registry; reconciling");
                        Some(Reason::Drift)
                    }
                    Err(RecvError::Closed) => return,
                },
                changed = static_routes.changed(), if statics_open => match changed {
                    Ok(()) => {
                        let routes = static_routes.borrow_and_update().clone();
                        self.set_static_routes(routes.iter().copied());
                        Some(Reason::Reload)
                    }
                    // The daemon no longer reloads (it is stopping): keep syncing.
                    Err(_) => {
                        statics_open = false;
                        None
                    }
                },
                _ = tick.tick() => Some(Reason::Drift),
            };
            let Some(reason) = reconcile else {
                continue;
            };
            let started = std::time::Instant::now();
            let (syncer, result) = self.reconcile_from(&registry).await;
            self = syncer;
            let took = started.elapsed().as_secs_f64();
            self.counters.latency.reconcile.observe(took);
            self.counters.reconciles.fetch_add(1, Ordering::Relaxed);
            match (result, reason) {
                (Ok(report), Reason::Reload) => info!(?report, "static routes reloaded"),
                (Ok(report), Reason::Drift) if report.repairs() > 0 => {
                    self.counters
                        .repairs
                        .fetch_add(report.repairs() as u64, Ordering::Relaxed);
                    warn!(?report, "reconcile repaired drift in ROUTES");
                }
                (Ok(_), Reason::Drift) => {}
                (Err(error), _) => warn!(%error, "reconcile failed"),
            }
        }
    }
}

/// The config file's routes, as the sync receives them (again on each reload).
pub type StaticRoutes = Arc<Vec<(RouteKey, SocketAddr)>>;

/// Logs a long load's progress (a million numbers at start take a second or more):
/// nothing for a pass that ends within [`Progress::EVERY`], then a line per interval.
struct Progress {
    started: std::time::Instant,
    last: std::time::Instant,
    numbers: usize,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(1);

    fn new() -> Self {
        let now = std::time::Instant::now();
        Self {
            started: now,
            last: now,
            numbers: 0,
        }
    }

    fn fed(&mut self, numbers: usize) {
        self.numbers += numbers;
        if self.last.elapsed() >= Self::EVERY {
            self.last = std::time::Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            info!(
                numbers = self.numbers,
                per_second = (self.numbers as f64 / secs) as u64,
                "loading routes from the registry"
            );
        }
    }
}

/// Why a reconcile runs: what it changes is drift to repair, or an intended reload.
#[derive(Clone, Copy)]
enum Reason {
    Drift,
    Reload,
}

/// Logs what a start-up load did.
pub fn log_load(report: &ReconcileReport, took: Duration) {
    info!(
        routes = report.routes,
        added = report.added,
        changed = report.changed,
        removed = report.removed,
        peers = report.peers,
        ms = took.as_millis() as u64,
        "routes loaded from the registry"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{PeerAddress, State, Transport};
    use fastpath_common::route_index::{Found, Place};

    fn key(n: &str) -> RouteKey {
        route_key(n).unwrap()
    }

    fn routable(n: &str, peer: &str) -> RoutableNumber {
        RoutableNumber {
            key: key(n),
            peer: peer.parse().unwrap(),
        }
    }

    fn record(n: &str, peer: &str, state: State) -> NumberRecord {
        let peer: SocketAddr = peer.parse().unwrap();
        NumberRecord {
            number: n.into(),
            account: "a".into(),
            peer: PeerAddress {
                host: peer.ip(),
                port: peer.port(),
                transport: Transport::Udp,
            },
            state,
            opt_in: true,
            verification_method: None,
            verified_at: Some(0),
            expires_at: Some(i64::MAX),
            last_failure: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn peer_of(s: &Syncer, n: &str) -> Option<SocketAddr> {
        let maps = s.maps.as_ref()?;
        let v = maps.routes.get(&key(n), 0).ok()?;
        peer_address(&maps.peers.get(&v.peer_id, 0).ok()?)
    }

    const A: &str = "198.51.100.2:5060";
    const B: &str = "[2001:db8:e::2]:5062";

    #[test]
    fn reconcile_loads_dedupes_peers_and_repairs_drift() {
        let mut s = Syncer::new(RouteMaps::standalone(1024).unwrap(), 7, []);
        let numbers = [
            routable("15550100001", A),
            routable("15550100002", A),
            routable("15550100003", B),
        ];
        let r = s.reconcile(&numbers).unwrap();
        assert_eq!((r.routes, r.added, r.removed, r.peers), (3, 3, 0, 2));
        assert_eq!(peer_of(&s, "15550100002"), Some(A.parse().unwrap()));
        assert_eq!(peer_of(&s, "15550100003"), Some(B.parse().unwrap()));
        assert_eq!(s.reconcile(&numbers).unwrap().repairs(), 0);

        // Drift behind the daemon's back: one route removed, one added, one redirected.
        s.maps
            .as_mut()
            .unwrap()
            .routes
            .remove(&key("15550100001"))
            .unwrap();
        let rogue = RouteValue {
            peer_id: 0,
            generation: 1,
        };
        s.maps
            .as_mut()
            .unwrap()
            .routes
            .insert(key("15550109999"), rogue, 0)
            .unwrap();
        let b_id = s
            .maps
            .as_mut()
            .unwrap()
            .routes
            .get(&key("15550100003"), 0)
            .unwrap()
            .peer_id;
        let a_id = s
            .maps
            .as_mut()
            .unwrap()
            .routes
            .get(&key("15550100002"), 0)
            .unwrap()
            .peer_id;
        s.maps
            .as_mut()
            .unwrap()
            .routes
            .insert(
                key("15550100002"),
                RouteValue {
                    peer_id: b_id,
                    generation: 1,
                },
                0,
            )
            .unwrap();
        let r = s.reconcile(&numbers).unwrap();
        assert_eq!((r.added, r.changed, r.removed), (1, 1, 1));
        assert!(
            s.maps
                .as_mut()
                .unwrap()
                .routes
                .get(&key("15550109999"), 0)
                .is_err()
        );
        assert_eq!(
            s.maps
                .as_mut()
                .unwrap()
                .routes
                .get(&key("15550100002"), 0)
                .unwrap()
                .peer_id,
            a_id
        );
        assert_eq!(peer_of(&s, "15550100001"), Some(A.parse().unwrap()));
    }

    /// What the XDP program concludes for `key`: the index, and `ROUTES` only where the
    /// index sends it there.
    fn program_view(maps: &RouteMaps, key: RouteKey) -> Option<u32> {
        match maps.index.find(key) {
            Found::Peer(id) => Some(id),
            Found::Absent => None,
            Found::AskRoutes => maps.routes.get(&key, 0).ok().map(|v| v.peer_id),
        }
    }

    /// The program routes every number in `ROUTES` to its peer, and none of `gone`.
    fn assert_program_sees_routes(s: &Syncer, gone: &[RoutableNumber]) {
        let maps = s.maps.as_ref().unwrap();
        let routes = maps.routes.map().fd().as_fd();
        let all = batch::lookup_all::<RouteKey, RouteValue>(routes).unwrap();
        for (key, value) in &all {
            assert_eq!(program_view(maps, *key), Some(value.peer_id), "{key}");
        }
        for n in gone {
            assert_eq!(program_view(maps, n.key), None, "{} was removed", n.key);
        }
    }

    /// The XDP program reads `ROUTE_INDEX` before (and mostly instead of) `ROUTES`: after a
    /// load, incremental changes and a shrinking reconcile, it must route exactly what
    /// `ROUTES` routes, numbers of an overflowed bucket included.
    #[test]
    fn the_route_index_routes_what_routes_holds() {
        let mut s = Syncer::new(RouteMaps::standalone(4096).unwrap(), 7, []);
        let bits = fastpath_common::route_index::bucket_bits(4096);
        let place = |n: &str| Place::of(route_key(n).unwrap(), bits).bucket;
        // Ten numbers of one bucket (it holds seven), then two thousand others.
        let crowded = place("15550000000");
        let mut names: Vec<String> = (0..)
            .map(|n| format!("1555{n:07}"))
            .filter(|n| place(n) == crowded)
            .take(10)
            .collect();
        names.extend((0..2000).map(|n| format!("1666{n:07}")));
        let numbers: Vec<_> = names.iter().map(|n| routable(n, A)).collect();
        s.reconcile(&numbers).unwrap();
        assert_program_sees_routes(&s, &[]);
        assert_eq!(s.maps.as_ref().unwrap().index.occupancy().overflowed, 1);
        // Of the crowded bucket, numbers in the slots and numbers in `ROUTES` only: one of
        // each moves to peer B, then one of each is revoked.
        let index = &s.maps.as_ref().unwrap().index;
        let (slotted, routes_only): (Vec<usize>, Vec<usize>) =
            (0..10).partition(|&i| matches!(index.find(numbers[i].key), Found::Peer(_)));
        // (Some of the other numbers may share the bucket and hold slots too.)
        assert!(
            slotted.len() >= 2 && routes_only.len() >= 3,
            "{slotted:?} {routes_only:?}"
        );
        for i in [slotted[0], routes_only[0]] {
            s.apply(&record(&names[i], B, State::Verified), 0).unwrap();
            assert_program_sees_routes(&s, &[]);
        }
        let revoked = [slotted[1], routes_only[1]];
        for i in revoked {
            s.apply(&record(&names[i], A, State::Revoked), 0).unwrap();
        }
        let gone: Vec<_> = revoked.iter().map(|&i| numbers[i]).collect();
        assert_program_sees_routes(&s, &gone);
        s.reconcile(&numbers[..5]).unwrap();
        assert_program_sees_routes(&s, &numbers[5..]);
        let occupancy = s.maps.as_ref().unwrap().index.occupancy();
        assert_eq!((occupancy.numbers, occupancy.overflowed), (5, 0));
    }

    #[test]
    fn changes_apply_incrementally_and_free_unused_peers() {
        let mut s = Syncer::new(RouteMaps::standalone(1024).unwrap(), 7, []);
        s.reconcile(&[]).unwrap();
        assert!(
            s.apply(&record("15550100001", A, State::Verified), 0)
                .unwrap()
        );
        assert_eq!(peer_of(&s, "15550100001"), Some(A.parse().unwrap()));
        // The same change again is a no-op.
        assert!(
            !s.apply(&record("15550100001", A, State::Verified), 0)
                .unwrap()
        );
        // The owner moves their PBX: same key, new peer, old slot freed.
        let a_id = s
            .maps
            .as_mut()
            .unwrap()
            .routes
            .get(&key("15550100001"), 0)
            .unwrap()
            .peer_id;
        s.apply(&record("15550100001", B, State::Verified), 0)
            .unwrap();
        assert_eq!(peer_of(&s, "15550100001"), Some(B.parse().unwrap()));
        assert_eq!(
            s.maps.as_mut().unwrap().peers.get(&a_id, 0).unwrap().family,
            0
        );
        for state in [State::Revoked, State::Expired, State::Pending] {
            s.apply(&record("15550100001", B, State::Verified), 0)
                .unwrap();
            s.apply(&record("15550100001", B, state), 0).unwrap();
            assert!(
                s.maps
                    .as_mut()
                    .unwrap()
                    .routes
                    .get(&key("15550100001"), 0)
                    .is_err(),
                "{state:?}"
            );
        }
        // Expired by the clock, even if still marked verified.
        let mut late = record("15550100002", A, State::Verified);
        late.expires_at = Some(100);
        assert!(!s.apply(&late, 100).unwrap());
        // Opted out.
        let mut out = record("15550100002", A, State::Verified);
        out.opt_in = false;
        assert!(!s.apply(&out, 0).unwrap());
        assert_eq!(s.counters.routes.load(Ordering::Relaxed), 0);
        assert_eq!(s.counters.peers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_proxys_table_follows_with_or_without_maps() {
        use crate::routing::Lookup;
        for with_maps in [true, false] {
            let table = Arc::new(RouteTable::default());
            let statics = [(key("15550100009"), B.parse().unwrap())];
            let mut s = if with_maps {
                Syncer::new(RouteMaps::standalone(1024).unwrap(), 1, statics)
            } else {
                Syncer::without_maps(1, statics)
            }
            .mirror_to(Arc::clone(&table));
            let peer_at = |n: &str| match table.lookup(&key(n)) {
                Lookup::Peer { address, .. } => Some(address),
                _ => None,
            };
            let numbers = [routable("15550100001", A), routable("15550100002", A)];
            let r = s.reconcile(&numbers).unwrap();
            assert_eq!((r.routes, r.added), (3, 3), "with maps: {with_maps}");
            assert_eq!(peer_at("15550100001"), Some(A.parse().unwrap()));
            assert_eq!(peer_at("15550100009"), Some(B.parse().unwrap()));
            // Nothing changed: nothing to repair, in either mode.
            assert_eq!(s.reconcile(&numbers).unwrap().repairs(), 0);
            // A change, then a revocation.
            s.apply(&record("15550100001", B, State::Verified), 0)
                .unwrap();
            assert_eq!(peer_at("15550100001"), Some(B.parse().unwrap()));
            s.apply(&record("15550100001", B, State::Revoked), 0)
                .unwrap();
            assert_eq!(table.lookup(&key("15550100001")), Lookup::Miss);
            // A reload's static routes replace the old ones at the next reconcile.
            s.set_static_routes([(key("15550100008"), A.parse().unwrap())]);
            let r = s.reconcile(&numbers[1..]).unwrap();
            assert_eq!((r.routes, r.removed), (2, 1), "with maps: {with_maps}");
            assert_eq!(table.lookup(&key("15550100009")), Lookup::Miss);
            assert_eq!(peer_at("15550100008"), Some(A.parse().unwrap()));
            assert_eq!(table.route_count(), 2);
            // Health pings exactly the peers in use.
            let active: Vec<SocketAddr> = table
                .peers()
                .iter()
                .filter(|p| p.active())
                .map(|p| p.address)
                .collect();
            assert_eq!(active, vec![A.parse::<SocketAddr>().unwrap()]);
        }
    }

    #[test]
    fn a_new_syncer_adopts_the_maps_without_rewriting() {
        let numbers = [routable("15550100001", A), routable("15550100003", B)];
        let mut first = Syncer::new(RouteMaps::standalone(1024).unwrap(), 1, []);
        first.reconcile(&numbers).unwrap();
        let ids: Vec<u32> = ["15550100001", "15550100003"]
            .iter()
            .map(|n| {
                first
                    .maps
                    .as_mut()
                    .unwrap()
                    .routes
                    .get(&key(n), 0)
                    .unwrap()
                    .peer_id
            })
            .collect();
        let mut second = Syncer::new(first.into_maps().unwrap(), 2, []);
        let r = second.reconcile(&numbers).unwrap();
        assert_eq!(r.repairs(), 0, "a restart must not rewrite routes: {r:?}");
        for (n, id) in ["15550100001", "15550100003"].iter().zip(ids) {
            assert_eq!(
                second
                    .maps
                    .as_mut()
                    .unwrap()
                    .routes
                    .get(&key(n), 0)
                    .unwrap()
                    .peer_id,
                id
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streamed_reconcile_from_the_registry_over_many_chunks() {
        use crate::registry::{Registry, Settings, SqliteStore, fake_trunk::FakeTrunk};
        let mut store = SqliteStore::in_memory().unwrap();
        let count = 3 * CHUNK + 17;
        let records: Vec<NumberRecord> = (0..count)
            .map(|i| {
                let peer = if i % 2 == 0 { A } else { B };
                record(&format!("1555{i:07}"), peer, State::Verified)
            })
            .collect();
        store.import(&records, "fixture").unwrap();
        let registry = Registry::new(store, FakeTrunk::default(), Settings::default());
        let mut s = Syncer::new(RouteMaps::standalone(1 << 17).unwrap(), 1, []);
        // Left by an earlier daemon: gone from the registry, must go.
        s.maps
            .as_mut()
            .unwrap()
            .routes
            .insert(
                key("15559999999"),
                RouteValue {
                    peer_id: 0,
                    generation: 0,
                },
                0,
            )
            .unwrap();
        let (s, report) = s.reconcile_from(&registry).await;
        let report = report.unwrap();
        assert_eq!(
            (report.routes, report.added, report.removed, report.peers),
            (count, count, 1, 2)
        );
        assert_eq!(peer_of(&s, "15550000001"), Some(B.parse().unwrap()));
        assert_eq!(
            batch::lookup_all::<RouteKey, RouteValue>(
                s.maps.as_ref().unwrap().routes.map().fd().as_fd()
            )
            .unwrap()
            .len(),
            count
        );
        let (_, again) = s.reconcile_from(&registry).await;
        assert_eq!(again.unwrap().repairs(), 0);
    }

    #[test]
    fn reconcile_keeps_a_peer_marked_down() {
        let numbers = [routable("15550100001", A)];
        let mut s = Syncer::new(RouteMaps::standalone(1024).unwrap(), 1, []);
        s.reconcile(&numbers).unwrap();
        let id = s
            .maps
            .as_mut()
            .unwrap()
            .routes
            .get(&key("15550100001"), 0)
            .unwrap()
            .peer_id;
        let mut down = s.maps.as_mut().unwrap().peers.get(&id, 0).unwrap();
        down.state = fastpath_common::maps::PEER_DOWN;
        s.maps.as_mut().unwrap().peers.set(id, down, 0).unwrap();
        let r = s.reconcile(&numbers).unwrap();
        assert_eq!(r.repairs(), 0);
        assert_eq!(
            s.maps
                .as_mut()
                .unwrap()
                .routes
                .get(&key("15550100001"), 0)
                .unwrap()
                .peer_id,
            id
        );
        assert_eq!(
            s.maps.as_mut().unwrap().peers.get(&id, 0).unwrap(),
            down,
            "health owns the state"
        );
    }

    #[test]
    fn static_routes_win_over_the_registry() {
        let mut s = Syncer::new(
            RouteMaps::standalone(1024).unwrap(),
            1,
            [(key("15550100001"), A.parse().unwrap())],
        );
        s.reconcile(&[]).unwrap();
        assert_eq!(peer_of(&s, "15550100001"), Some(A.parse().unwrap()));
        assert!(
            !s.apply(&record("15550100001", B, State::Verified), 0)
                .unwrap()
        );
        assert_eq!(peer_of(&s, "15550100001"), Some(A.parse().unwrap()));
        s.apply(&record("15550100001", B, State::Revoked), 0)
            .unwrap();
        assert_eq!(peer_of(&s, "15550100001"), Some(A.parse().unwrap()));
    }
}
