//! `fastpath`: the SIP edge gateway daemon and its command line.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use fastpath::{config::Config, maps, stats::Counters, xdp};
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
enum Command {
    /// Load the XDP fast path, fill its routes from the config, and run until SIGTERM.
    Run {
        /// Interface to attach to (repeat for several; the fast path may redirect between them).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// TOML configuration file (peers, static routes, SIP ports).
        #[arg(long, env = "FASTPATH_CONFIG")]
        config: PathBuf,
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
        #[arg(long, default_value = PIN_DIR, env = "FASTPATH_PIN_DIR")]
        pin_dir: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Register, verify, list and revoke numbers through the running daemon's API.
    Numbers(fastpath::api::cli::NumbersArgs),
    /// Detach a program left forwarding by `run --keep-attached`.
    Detach {
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
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
        } => {
            let config = Config::load(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(daemon(ifaces, config, keep_attached, xdp_mode, pin_dir))
        }
        Command::Stats { pin_dir, json } => {
            let counters = Counters::read_pinned(&pin_dir)?;
            if json {
                println!("{}", counters.to_json());
            } else {
                print!("{counters}");
            }
            Ok(())
        }
        Command::Numbers(args) => fastpath::api::cli::run(args),
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

async fn daemon(
    ifaces: Vec<String>,
    config: Config,
    keep_attached: bool,
    mode: xdp::Mode,
    pin_dir: PathBuf,
) -> anyhow::Result<()> {
    let mut ebpf = xdp::load(&pin_dir, config.max_routes)?;
    match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => {
            tokio::spawn(forward_ebpf_logs(logger));
        }
        Err(error) => warn!(%error, "eBPF logs unavailable"),
    }
    let generation = now_generation();
    // With a registry, `sync` owns the routes (and keeps the config's as static ones).
    let _registry = if config.registry.is_some() {
        maps::write_settings(&mut ebpf, &config)?;
        Some(start_registry(&config, &pin_dir, generation).await?)
    } else {
        let report = maps::apply_config(&mut ebpf, &config, generation)?;
        info!(
            routes = report.routes,
            removed = report.removed,
            peers = report.peers,
            "routes synced"
        );
        None
    };
    if config.local_only {
        maps::set_local_addrs(&pin_dir, &maps::local_addresses()?)?;
        tokio::spawn(refresh_local_addrs(pin_dir.clone()));
    }
    if let Some(listen) = config.metrics_listen {
        let metrics = fastpath::metrics::Metrics::new(pin_dir.clone())?;
        if let Some(registry) = &_registry {
            metrics.register_sync(registry.counters.clone())?;
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("metrics: cannot listen on {listen}"))?;
        info!(addr = %listener.local_addr()?, "metrics at /metrics");
        let metrics = std::sync::Arc::new(metrics);
        tokio::spawn(async move {
            if let Err(error) = fastpath::metrics::serve(listener, metrics).await {
                warn!(error = format!("{error:#}"), "metrics endpoint stopped");
            }
        });
    }

    let mut attachments = Vec::new();
    for iface in &ifaces {
        let attachment = xdp::attach(&mut ebpf, iface, mode, &pin_dir)?;
        info!(iface, ifindex = attachment.ifindex, mode = ?attachment.mode, "attached");
        attachments.push(attachment);
    }
    let ifindexes: Vec<u32> = attachments.iter().map(|a| a.ifindex).collect();
    maps::set_egress(&mut ebpf, &ifindexes)?;
    info!(pin_dir = %pin_dir.display(), "fast path running");

    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = interrupt.recv() => info!("SIGINT"),
    }
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
    Ok(())
}

/// The registry, delivering codes through the carrier trunk of `[verification]` (or, without
/// one, failing each delivery with that reason).
async fn start_registry(
    config: &Config,
    pin_dir: &std::path::Path,
    generation: u32,
) -> anyhow::Result<fastpath::registry::daemon::Running> {
    use fastpath::{registry::daemon, verify::SipTrunkChannel};
    match &config.verification {
        Some(v) => {
            let trunk = SipTrunkChannel::bind(v.local, v.trunk)
                .await
                .with_context(|| format!("verification: cannot bind {}", v.local))?;
            info!(trunk = %v.trunk, local = %v.local, "verification through the carrier trunk");
            daemon::start(config, pin_dir, generation, trunk).await
        }
        None => {
            warn!("no [verification] section: codes cannot be delivered");
            daemon::start(config, pin_dir, generation, daemon::NoTrunk).await
        }
    }
}

/// Keeps `LOCAL_ADDRS` in step with the interfaces' addresses; a polled list is simple and
/// an address added to the box is taken within the interval.
async fn refresh_local_addrs(pin_dir: PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
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
