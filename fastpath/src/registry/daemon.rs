//! The registry's part of `fastpath run`: open the database, load the fast path (and the
//! proxy's route table) from it, keep them in step, expire verifications, and serve the
//! API.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration, time::Instant};

use anyhow::Context;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::info;

use super::{Registry, Settings, SqliteStore, counts::RegistryReadings};
use crate::{
    api::{self, ApiState},
    config::Config,
    routing::RouteTable,
    sync::{self, RouteMaps, StaticRoutes, SyncCounters, Syncer},
    verify::{Channel, Failure, MissedCall},
};

/// How often verified numbers are checked for expiry: well inside the one second in
/// which an expired number must leave the fast path.
pub const EXPIRY_SWEEP: Duration = Duration::from_millis(200);

/// Stands in for the SIP trunk until one is configured: every delivery fails, with a
/// reason, and the number stays unverified.
pub struct NoTrunk;

impl Channel for NoTrunk {
    async fn send_message(&self, _number: &str, _text: &str) -> Result<(), Failure> {
        Err(Failure::Unreachable("no SIP trunk configured".into()))
    }

    async fn collect_dtmf(
        &self,
        _number: &str,
        _digits: usize,
        _timeout: Duration,
    ) -> Result<String, Failure> {
        Err(Failure::Unreachable("no SIP trunk configured".into()))
    }
}

/// The registry's background tasks; dropping this stops them.
pub struct Running {
    /// Where the SIP side reports missed calls to the verification number.
    pub missed_calls: mpsc::Sender<MissedCall>,
    pub counters: Arc<SyncCounters>,
    /// Numbers by state and verification outcomes, for `/metrics`.
    pub readings: Arc<dyn RegistryReadings>,
    pub api_addr: Option<SocketAddr>,
    /// A config reload sends its static routes here.
    pub static_routes: watch::Sender<StaticRoutes>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The config's static routes by peer address, as the sync takes them.
pub fn static_routes(config: &Config) -> StaticRoutes {
    let routes = config.routes.iter().filter_map(|r| {
        let peer = config.peers.get(r.peer_id as usize)?;
        Some((r.key, peer.address))
    });
    Arc::new(routes.collect())
}

/// Starts everything, delivering verification codes through `channel` (the SIP trunk,
/// or [`NoTrunk`]); returns once the maps (the fast path's pinned ones under `pin_dir`,
/// if it runs) and `table` hold what the registry says, and the API (if configured) is
/// listening.
pub async fn start<C: Channel>(
    config: &Config,
    pin_dir: Option<&Path>,
    table: Arc<RouteTable>,
    generation: u32,
    channel: C,
) -> anyhow::Result<Running> {
    let rc = config
        .registry
        .as_ref()
        .context("no [registry] section in the config")?;
    let path = rc.path.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await?
        .with_context(|| format!("opening the registry {}", rc.path.display()))?;
    let settings = Settings {
        verified_ttl: rc.verified_ttl,
        // The number the verification listener answers for, unless one is set here.
        missed_call_number: rc
            .missed_call_number
            .clone()
            .or_else(|| config.verification.as_ref().map(|v| v.number.to_string())),
        ..Settings::default()
    };
    let registry = Registry::new(store, channel, settings);
    // Subscribe before the load so that no change falls between the two.
    let changes = registry.subscribe();

    let statics = static_routes(config);
    let syncer = match pin_dir {
        Some(pin_dir) => Syncer::new(
            RouteMaps::open_pinned(pin_dir)?,
            generation,
            statics.iter().copied(),
        ),
        None => Syncer::without_maps(generation, statics.iter().copied()),
    }
    .mirror_to(table);
    let (static_routes, static_changes) = watch::channel(statics);
    let started = Instant::now();
    let (syncer, report) = syncer.reconcile_from(&registry).await;
    let report = report
        .map_err(anyhow::Error::msg)
        .context("loading routes from the registry")?;
    sync::log_load(&report, started.elapsed());
    let counters = syncer.counters();

    let mut tasks = vec![
        tokio::spawn(syncer.run(
            registry.clone(),
            changes,
            static_changes,
            rc.reconcile_interval,
        )),
        tokio::spawn(registry.clone().run_expiry(EXPIRY_SWEEP)),
    ];
    let (missed_calls, calls) = mpsc::channel(1024);
    tasks.push(tokio::spawn(registry.clone().run_missed_calls(calls)));

    let mut api_addr = None;
    if let Some(ac) = &config.api {
        let token = api::resolve_token(
            ac.listen,
            ac.token.as_deref(),
            std::env::var(api::TOKEN_ENV).ok(),
        )?;
        let listener = tokio::net::TcpListener::bind(ac.listen)
            .await
            .with_context(|| format!("API: cannot listen on {}", ac.listen))?;
        let addr = listener.local_addr()?;
        info!(%addr, auth = token.is_some(), "API listening");
        let state = ApiState {
            registry: registry.clone(),
            token: token.map(Arc::from),
            sync: Some(counters.clone()),
        };
        tasks.push(tokio::spawn(async move {
            if let Err(error) = api::serve(listener, state, std::future::pending()).await {
                tracing::error!(%error, "API stopped");
            }
        }));
        api_addr = Some(addr);
    }
    Ok(Running {
        missed_calls,
        counters,
        readings: Arc::new(registry),
        api_addr,
        static_routes,
        tasks,
    })
}
