//! `fastpath`: the SIP edge gateway daemon and its command line.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use fastpath::{
    config::{Config, Override},
    maps,
    metrics::Metrics,
    proxy::{health::StateWriter, service as proxy_service},
    routing::RouteTable,
    stats::Counters,
    xdp,
};
use fastpath_common::maps::PIN_DIR;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

#[derive(Parser)]
#[command(version, about = "eBPF/XDP-accelerated SIP edge gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum RoutesCommand {
    /// Every registered number with its peer and the peer's state (one line each).
    List,
    /// Where one number goes: its peer's address and state, or "not registered".
    Get {
        /// As dialed or written by an operator: `+1 (555) 010-0001`.
        number: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: load the XDP fast path, fill its routes (config, registry), start the
    /// proxy, API and metrics; SIGHUP reloads peers, routes and trunks; SIGTERM stops.
    Run {
        /// Interface to attach to (repeat for several; the fast path may redirect between them).
        #[arg(long = "iface", required_unless_present = "no_xdp")]
        ifaces: Vec<String>,
        /// No XDP fast path: every call goes through the userspace proxy, with the same
        /// routing decisions.
        #[arg(long)]
        no_xdp: bool,
        /// TOML configuration file (peers, static routes, SIP ports).
        #[arg(long, env = "FASTPATH_CONFIG")]
        config: PathBuf,
        /// Set one key over the file, e.g. `--set xdp.sip_ports=[5060,5080]` (repeatable);
        /// `FASTPATH__XDP__SIP_PORTS=[5060]` in the environment does the same.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<Override>,
        /// Leave the program attached and forwarding when the daemon exits.
        #[arg(long)]
        keep_attached: bool,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: xdp::Mode,
        /// Where maps and links are pinned.
        #[arg(long, default_value = PIN_DIR, env = "FASTPATH_PIN_DIR")]
        pin_dir: PathBuf,
    },
    /// Print the XDP outcome counters of the loaded fast path.
    Stats {
        /// Where the fast path's maps and links are pinned.
        #[arg(long, default_value = PIN_DIR, env = "FASTPATH_PIN_DIR")]
        pin_dir: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Refresh every second with the rate of each counter, until interrupted.
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this many refreshes.
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
    /// What the gateway is doing: from the running daemon, its interfaces and XDP mode,
    /// peers and trunks with their health, reloads; from the pinned maps (even with the
    /// daemon down), the program, routes, peers and counters with rates.
    Status {
        /// Where the fast path's maps and links are pinned.
        #[arg(long, default_value = PIN_DIR, env = "FASTPATH_PIN_DIR")]
        pin_dir: PathBuf,
        /// The daemon's HTTP endpoint (`[metrics] listen`), which serves `/status`.
        #[arg(long, default_value = "127.0.0.1:9477", env = "FASTPATH_DAEMON")]
        daemon: String,
    },
    /// Look up registered numbers: in the loaded fast path's ROUTES map, or (without the
    /// fast path) in the running daemon's route table.
    Routes {
        /// Where the fast path's maps and links are pinned.
        #[arg(long, default_value = PIN_DIR, env = "FASTPATH_PIN_DIR")]
        pin_dir: PathBuf,
        /// The daemon's HTTP endpoint (`[metrics] listen`), asked when no maps are pinned.
        #[arg(long, default_value = "127.0.0.1:9477", env = "FASTPATH_DAEMON")]
        daemon: String,
        #[command(subcommand)]
        command: RoutesCommand,
    },
    /// Register, verify, list and revoke numbers through the running daemon's API.
    Numbers(fastpath::api::cli::NumbersArgs),
    /// Check a configuration file: print what it sets up, or the first problem (naming
    /// its key) and exit non-zero.
    CheckConfig {
        /// The TOML file `run --config` would read.
        file: PathBuf,
        /// As `run --set` (the `FASTPATH__…` environment applies too).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<Override>,
    },
    /// Detach a program left forwarding by `run --keep-attached`.
    Detach {
        /// Interface to detach from (repeat for several).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// Where the fast path's maps and links are pinned.
        #[arg(long, default_value = PIN_DIR, env = "FASTPATH_PIN_DIR")]
        pin_dir: PathBuf,
        /// Also remove the pinned maps (routes, counters): the next start begins empty.
        #[arg(long)]
        purge: bool,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = run(Cli::parse()) {
        eprintln!("fastpath: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            ifaces,
            config,
            keep_attached,
            xdp_mode,
            pin_dir,
            no_xdp,
            set,
        } => {
            let source = ConfigSource { path: config, set };
            let config = source.load()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let ifaces = if no_xdp { Vec::new() } else { ifaces };
            runtime.block_on(daemon(
                ifaces,
                source,
                config,
                keep_attached,
                xdp_mode,
                pin_dir,
            ))
        }
        Command::Stats {
            pin_dir,
            json,
            watch,
            count,
        } => {
            if watch {
                return fastpath::stats::watch(&pin_dir, Duration::from_secs(1), count);
            }
            let counters = Counters::read_pinned(&pin_dir)?;
            if json {
                println!("{}", counters.to_json());
            } else {
                print!("{counters}");
            }
            Ok(())
        }
        Command::Status { pin_dir, daemon } => {
            match fastpath::control::fetch(&daemon) {
                Ok(status) => print!("{status}"),
                Err(error) => println!("daemon: not reachable at {daemon} ({error:#})"),
            }
            if pin_dir.exists() {
                fastpath::stats::status(&pin_dir)
            } else {
                println!("fast path: not loaded (no pins in {})", pin_dir.display());
                Ok(())
            }
        }
        Command::Routes {
            pin_dir,
            daemon,
            command,
        } => match command {
            _ if !pin_dir.exists() => {
                let number = match &command {
                    RoutesCommand::List => None,
                    RoutesCommand::Get { number } => Some(number.as_str()),
                };
                print!("{}", fastpath::control::fetch_routes(&daemon, number)?);
                Ok(())
            }
            RoutesCommand::List => fastpath::stats::list_routes(&pin_dir),
            RoutesCommand::Get { number } => fastpath::stats::get_route(&pin_dir, &number),
        },
        Command::Numbers(args) => fastpath::api::cli::run(args),
        Command::CheckConfig { file, set } => {
            let config = Config::load_with(&file, &set)?;
            println!("{}: ok", file.display());
            print!("{}", config.summary());
            Ok(())
        }
        Command::Detach {
            ifaces,
            pin_dir,
            purge,
        } => {
            for iface in &ifaces {
                xdp::detach_pinned(&pin_dir, iface)?;
                println!("detached {iface}");
            }
            if purge {
                std::fs::remove_dir_all(&pin_dir)
                    .with_context(|| format!("removing {}", pin_dir.display()))?;
                println!("removed {}", pin_dir.display());
            }
            Ok(())
        }
    }
}

/// Where the configuration comes from, to read it again on SIGHUP.
struct ConfigSource {
    path: PathBuf,
    set: Vec<Override>,
}

impl ConfigSource {
    fn load(&self) -> anyhow::Result<Config> {
        Config::load_with(&self.path, &self.set)
    }
}

async fn daemon(
    ifaces: Vec<String>,
    source: ConfigSource,
    mut config: Config,
    keep_attached: bool,
    mode: xdp::Mode,
    pin_dir: PathBuf,
) -> anyhow::Result<()> {
    // The one route table: the proxy reads it, the map writer mirrors it into the kernel.
    let table = Arc::new(RouteTable::from_config(&config));
    let mut fast_path = if ifaces.is_empty() {
        info!("--no-xdp: every call goes through the userspace proxy");
        None
    } else {
        match start_fast_path(&ifaces, &config, &table, mode, &pin_dir) {
            Ok(fast_path) => Some(fast_path),
            // The product must work on any Linux box: the proxy takes every call instead.
            Err(error) => {
                warn!(
                    "XDP fast path unavailable, every call goes through the userspace proxy: {error:#}"
                );
                None
            }
        }
    };
    let writer: Option<StateWriter> = fast_path.as_ref().map(|_| {
        let pin_dir = pin_dir.clone();
        let table = Arc::clone(&table);
        // By address: with a registry, the sync numbers the PEERS slots, not the config.
        Box::new(
            move |id: u32, up: bool| match table.peers().get(id as usize) {
                Some(peer) => maps::set_peer_state(&pin_dir, peer.address, up),
                None => Ok(()),
            },
        ) as StateWriter
    });
    // With a registry, its sync owns the routes (keeping the config's as static ones):
    // in the fast path's maps when it runs, and in the table the proxy reads.
    let registry = match &config.registry {
        Some(_) => {
            let maps = fast_path.as_ref().map(|_| pin_dir.as_path());
            Some(start_registry(&config, maps, Arc::clone(&table)).await?)
        }
        None => None,
    };
    if fast_path.is_some() && config.local_only {
        tokio::spawn(refresh_local_addrs(pin_dir.clone()));
    }
    let proxy = proxy_service::start(&config, Arc::clone(&table), writer)?;
    let reloads = Arc::new(fastpath::reload::ReloadCounters::default());
    if let Some(listen) = config.metrics_listen {
        let metrics = Metrics::new(fast_path.as_ref().map(|_| pin_dir.clone()))?;
        match &registry {
            Some(registry) => {
                metrics.register_sync(registry.counters.clone())?;
                metrics.register_registry(Arc::clone(&registry.readings))?;
            }
            None if fast_path.is_some() => metrics.register_static_routes(config.routes.len())?,
            None => {}
        }
        if let Some(proxy) = &proxy {
            metrics.register_proxy(Arc::clone(&proxy.counters))?;
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("metrics: cannot listen on {listen}"))?;
        info!(addr = %listener.local_addr()?, "metrics at /metrics, status at /status");
        let status = fastpath::control::StatusSource {
            config: source.path.clone(),
            interfaces: fast_path
                .as_ref()
                .map_or_else(Vec::new, |(_, attachments)| {
                    attachments
                        .iter()
                        .map(|a| fastpath::control::Interface {
                            name: a.iface.clone(),
                            ifindex: a.ifindex,
                            mode: a.mode_name().into(),
                        })
                        .collect()
                }),
            table: Arc::clone(&table),
            trunks: proxy.as_ref().map(|p| Arc::clone(&p.trunks)),
            reloads: Arc::clone(&reloads),
        };
        let status = Arc::new(status);
        metrics.register_daemon(Arc::clone(&status))?;
        let extra = fastpath::control::router(status);
        tokio::spawn(async move {
            if let Err(error) = fastpath::metrics::serve(listener, Arc::new(metrics), extra).await {
                warn!(error = format!("{error:#}"), "metrics endpoint stopped");
            }
        });
    }
    match (&fast_path, &proxy) {
        (Some(_), _) => info!(pin_dir = %pin_dir.display(), "fast path running"),
        (None, Some(_)) => info!("proxy running without the fast path"),
        (None, None) => anyhow::bail!(
            "neither the fast path nor the proxy runs: configure [proxy] listen addresses"
        ),
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); break }
            _ = interrupt.recv() => { info!("SIGINT"); break }
            _ = hangup.recv() => {
                let targets = fastpath::reload::Targets {
                    table: &table,
                    trunks: proxy.as_ref().map(|p| p.trunks.as_ref()),
                    registry_routes: registry.as_ref().map(|r| &r.static_routes),
                };
                let ebpf = fast_path.as_mut().map(|(ebpf, _)| ebpf);
                match reload(&source, &config, &targets, ebpf) {
                    Ok(new) => {
                        config = new;
                        reloads.record(true);
                    }
                    Err(error) => {
                        warn!(error = format!("{error:#}"), "reload failed: the running configuration stays");
                        reloads.record(false);
                    }
                }
            }
        }
    }
    if let Some(proxy) = proxy {
        info!(counters = %proxy.counters.to_json(), "final proxy counters");
        proxy.stop();
    }
    if let Some((_ebpf, attachments)) = fast_path {
        if let Ok(counters) = Counters::read_pinned(&pin_dir) {
            info!(counters = %counters.to_json(), "final counters");
        }
        for attachment in attachments {
            if keep_attached {
                attachment.keep();
            } else {
                attachment.detach()?;
            }
        }
    }
    Ok(())
}

/// SIGHUP: reads the configuration again and applies what can change while running (see
/// `fastpath::reload`); an invalid file changes nothing.
fn reload(
    source: &ConfigSource,
    old: &Config,
    targets: &fastpath::reload::Targets,
    ebpf: Option<&mut aya::Ebpf>,
) -> anyhow::Result<Config> {
    info!(config = %source.path.display(), "SIGHUP: reloading the configuration");
    let (new, applied) = fastpath::reload::apply(old, source.load()?, targets);
    // Without a registry the table owns the routes: the kernel's maps follow it.
    if let (Some(ebpf), None) = (ebpf, targets.registry_routes) {
        let report = maps::sync_table(ebpf, targets.table, now_generation())
            .context("writing the reloaded routes into the fast path's maps")?;
        info!(
            routes = report.routes,
            removed = report.removed,
            peers = report.peers,
            "fast path routes reloaded"
        );
    }
    if !applied.needs_restart.is_empty() {
        warn!(
            keys = ?applied.needs_restart,
            "changed keys take effect only after a restart; their old values stay"
        );
    }
    info!(
        added = applied.routes.added,
        changed = applied.routes.changed,
        removed = applied.routes.removed,
        peers = new.peers.len(),
        trunks = new.proxy.trunks.len(),
        "configuration reloaded"
    );
    Ok(new)
}

/// Loads the XDP program, fills its maps from the config and attaches it everywhere; on
/// any failure, whatever was attached is detached again.
fn start_fast_path(
    ifaces: &[String],
    config: &Config,
    table: &RouteTable,
    mode: xdp::Mode,
    pin_dir: &std::path::Path,
) -> anyhow::Result<(aya::Ebpf, Vec<xdp::Attachment>)> {
    let mut ebpf = xdp::load(pin_dir, config.max_routes)?;
    match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => {
            tokio::spawn(forward_ebpf_logs(logger));
        }
        Err(error) => warn!(%error, "eBPF logs unavailable"),
    }
    maps::write_settings(&mut ebpf, config)?;
    if config.local_only {
        // Before attaching: with the flag set and no addresses, every hit would pass.
        maps::set_local_addrs(pin_dir, &maps::local_addresses()?)?;
    }
    // With a registry, its sync fills the routes (see `start_registry`): writing the
    // config's alone first would drop adopted routes for a moment.
    if config.registry.is_none() {
        let report = maps::sync_table(&mut ebpf, table, now_generation())?;
        info!(
            routes = report.routes,
            removed = report.removed,
            peers = report.peers,
            "routes synced"
        );
    }

    let mut attachments = Vec::new();
    for iface in ifaces {
        match xdp::attach(&mut ebpf, iface, mode, pin_dir) {
            Ok(attachment) => {
                info!(iface, ifindex = attachment.ifindex, mode = ?attachment.mode, "attached");
                attachments.push(attachment);
            }
            Err(error) => {
                for attachment in attachments {
                    let _ = attachment.detach();
                }
                return Err(error);
            }
        }
    }
    let ifindexes: Vec<u32> = attachments.iter().map(|a| a.ifindex).collect();
    maps::set_egress(&mut ebpf, &ifindexes)?;
    Ok((ebpf, attachments))
}

/// The registry, delivering codes through the carrier trunk of `[verification]` (or, without
/// one, failing each delivery with that reason).
async fn start_registry(
    config: &Config,
    pin_dir: Option<&std::path::Path>,
    table: Arc<RouteTable>,
) -> anyhow::Result<fastpath::registry::daemon::Running> {
    use fastpath::{registry::daemon, verify::SipTrunkChannel};
    let generation = now_generation();
    match &config.verification {
        Some(v) => {
            let trunk = SipTrunkChannel::bind(v.local, v.trunk)
                .await
                .with_context(|| format!("verification: cannot bind {}", v.local))?;
            info!(trunk = %v.trunk, local = %v.local, "verification through the carrier trunk");
            let running = daemon::start(config, pin_dir, table, generation, trunk).await?;
            if let Some(listen) = v.missed_call_listen {
                let socket = tokio::net::UdpSocket::bind(listen)
                    .await
                    .with_context(|| format!("verification: cannot bind {listen}"))?;
                info!(%listen, "missed-call verification");
                tokio::spawn(fastpath::verify::missed_call::listen(
                    socket,
                    v.trunk,
                    v.number,
                    running.missed_calls.clone(),
                ));
            }
            Ok(running)
        }
        None => {
            warn!("no [verification] section: codes cannot be delivered");
            daemon::start(config, pin_dir, table, generation, daemon::NoTrunk).await
        }
    }
}

/// Keeps `LOCAL_ADDRS` in step with the interfaces' addresses; a polled list is simple and
/// an address added to the box is taken within the interval.
async fn refresh_local_addrs(pin_dir: PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await; // the first tick is now: the addresses were just written
    loop {
        tick.tick().await;
        let result = maps::local_addresses().and_then(|a| maps::set_local_addrs(&pin_dir, &a));
        if let Err(error) = result {
            warn!(
                error = format!("{error:#}"),
                "refreshing the local addresses"
            );
        }
    }
}

/// Generations only need to differ between daemon runs.
fn now_generation() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
}

/// Drains the eBPF log ring buffer into `tracing`; logs are rare (failures only), so a
/// short poll is simpler than readiness plumbing and costs nothing measurable.
async fn forward_ebpf_logs<T: log::Log>(mut logger: aya_log::EbpfLogger<T>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        logger.flush();
    }
}
