//! Loading the XDP program, pinning its maps and links, attaching it to interfaces.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use fastpath_common::{maps, route_index};
use tracing::{info, warn};

/// The program's name in the object (the `#[xdp]` function).
pub const PROGRAM: &str = "fastpath";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Native (driver) mode, falling back to generic with a warning.
    Auto,
    /// Native (driver) mode only: fail if the driver cannot run XDP.
    Native,
    /// Generic (skb) mode: works on any interface, slower.
    Generic,
}

/// Loads the program with its maps pinned in `pin_dir`: maps already pinned there (by an
/// earlier run) are adopted, so their contents survive restarts and upgrades.
pub fn load(pin_dir: &Path, max_routes: u32) -> anyhow::Result<Ebpf> {
    load_object(pin_dir, max_routes, crate::EBPF_OBJECT)
}

/// [`load`] for another build of the program (the benchmark's ablation variants), which
/// must declare the same pinned maps.
pub fn load_object(pin_dir: &Path, max_routes: u32, object: &[u8]) -> anyhow::Result<Ebpf> {
    ensure_bpffs(pin_dir)?;
    std::fs::create_dir_all(pin_dir)
        .with_context(|| format!("cannot create pin directory {}", pin_dir.display()))?;
    let index_bits = route_index::bucket_bits(max_routes);
    drop_resized_index(pin_dir, route_index::buckets(index_bits))?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .map_max_entries(maps::ROUTES, max_routes)
        .map_max_entries(maps::ROUTE_INDEX, route_index::buckets(index_bits))
        .override_global(maps::INDEX_BITS, &index_bits, true)
        .load(object)
        .context("loading the XDP object (a ROUTES map pinned with another size? see `fastpath detach --purge`)")?;
    // The verifier gives up with EAGAIN when a signal arrives while it works (it checks
    // `signal_pending` as it goes, and this program takes it most of a second): a SIGHUP
    // during start-up, or a child exiting beside a test. That is no verdict: try again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match program(&mut ebpf)?.load() {
            Ok(()) => return Ok(ebpf),
            Err(error) if attempts < LOAD_ATTEMPTS && interrupted(&error) => {
                warn!(attempts, "the verifier was interrupted; loading again");
            }
            Err(error) => {
                let why = rejection(&error.to_string());
                return Err(error).context(why);
            }
        }
    }
}

/// `ROUTE_INDEX`'s size follows the route capacity, and the program is told that size
/// when it is loaded; aya adopts a pinned map whatever its size, so one pinned by a run
/// with another capacity is unpinned here and a new one created. Nothing is lost: the
/// index is derived from `ROUTES`, and the daemon rebuilds it from there before it routes.
fn drop_resized_index(pin_dir: &Path, buckets: u32) -> anyhow::Result<()> {
    let path = pin_dir.join(maps::ROUTE_INDEX);
    if !path.exists() {
        return Ok(());
    }
    let pinned = aya::maps::MapData::from_pin(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let pinned_buckets = pinned.info()?.max_entries();
    if pinned_buckets != buckets {
        info!(
            pinned_buckets,
            buckets, "the route capacity changed: a new ROUTE_INDEX of the new size"
        );
        // A program left attached by the earlier run (`--keep-attached`) reads this index
        // until the new program replaces it, while this run changes `ROUTES`: emptied, it
        // sends every number to the proxy, which routes by this run's table.
        crate::route_index::RouteIndex::map(&pinned)
            .context("mapping the old ROUTE_INDEX")?
            .rebuild([]);
        std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
    }
    Ok(())
}

/// What to tell the operator about a rejected program, from the verifier's output.
fn rejection(verifier_output: &str) -> &'static str {
    // The classifier reads unaligned words from the packet and a map value
    // (`fastpath_common::unaligned`), which the verifier only allows on architectures with
    // efficient unaligned access. (A misaligned *stack* access is refused everywhere: that
    // would be a bug in the build, not the machine.)
    if verifier_output.contains("misaligned packet access")
        || verifier_output.contains("misaligned value access")
    {
        "the verifier rejected the XDP program: this kernel allows only aligned memory \
         access, and the program reads unaligned words (it needs an architecture with \
         efficient unaligned access, such as x86-64 or arm64); `--no-xdp` runs the \
         proxy alone"
    } else {
        "the verifier rejected the XDP program"
    }
}

/// How often a load interrupted by a signal is tried before giving up.
const LOAD_ATTEMPTS: u32 = 10;

/// Whether a program load failed with EAGAIN (interrupted), not a verdict.
fn interrupted(error: &aya::programs::ProgramError) -> bool {
    match error {
        aya::programs::ProgramError::LoadError { io_error, .. } => {
            io_error.raw_os_error() == Some(libc::EAGAIN)
        }
        _ => false,
    }
}

pub fn program(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    let program = ebpf
        .program_mut(PROGRAM)
        .context("XDP program missing from the object")?;
    Ok(program.try_into()?)
}

/// The program attached to one interface through a pinned bpf_link: it keeps forwarding if
/// the daemon dies, and the next daemon adopts it without a gap.
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    pub mode: XdpMode,
    link: PinnedLink,
    pin_path: PathBuf,
}

impl Attachment {
    /// How `fastpath status` names the mode.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            // Only an adopted link is recorded so: a new attach names the mode it got.
            XdpMode::Default => "adopted",
            XdpMode::Skb => "generic",
            XdpMode::Driver => "native",
            XdpMode::Hardware => "offload",
        }
    }
}

pub fn link_pin_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link-{iface}"))
}

pub fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: Mode,
    pin_dir: &Path,
) -> anyhow::Result<Attachment> {
    let ifindex = ifindex(iface)?;
    let pin_path = link_pin_path(pin_dir, iface);
    let program = program(ebpf)?;
    let (link_id, used_mode) = if pin_path.exists() {
        // Atomically swap our program into the link a previous daemon left pinned.
        let old = PinnedLink::from_pin(&pin_path)
            .with_context(|| format!("cannot open pinned link {}", pin_path.display()))?;
        let fd_link = old.unpin().context("unpinning the previous link")?;
        let xdp_link = XdpLink::try_from(fd_link).context("pinned link is not an XDP link")?;
        let id = program
            .attach_to_link(xdp_link)
            .context("replacing the program in the pinned link")?;
        info!(
            iface,
            "adopted the pinned XDP link; program replaced without a gap"
        );
        (id, XdpMode::Default)
    } else {
        attach_new(program, iface, mode)?
    };
    let fd_link: FdLink = program
        .take_link(link_id)?
        .try_into()
        .context("XDP link is not a bpf_link")?;
    let link = fd_link
        .pin(&pin_path)
        .with_context(|| format!("cannot pin link at {}", pin_path.display()))?;
    Ok(Attachment {
        iface: iface.to_owned(),
        ifindex,
        mode: used_mode,
        link,
        pin_path,
    })
}

fn attach_new(
    program: &mut Xdp,
    iface: &str,
    mode: Mode,
) -> anyhow::Result<(aya::programs::xdp::XdpLinkId, XdpMode)> {
    match mode {
        Mode::Native => Ok((
            program_attach(program, iface, XdpMode::Driver)?,
            XdpMode::Driver,
        )),
        Mode::Generic => Ok((program_attach(program, iface, XdpMode::Skb)?, XdpMode::Skb)),
        Mode::Auto => match program_attach(program, iface, XdpMode::Driver) {
            Ok(id) => Ok((id, XdpMode::Driver)),
            Err(error) => {
                warn!(iface, %error, "native XDP unavailable, falling back to generic mode (slower)");
                Ok((program_attach(program, iface, XdpMode::Skb)?, XdpMode::Skb))
            }
        },
    }
}

fn program_attach(
    program: &mut Xdp,
    iface: &str,
    mode: XdpMode,
) -> anyhow::Result<aya::programs::xdp::XdpLinkId> {
    program
        .attach(iface, mode)
        .with_context(|| format!("attaching XDP ({mode:?}) to {iface}"))
}

impl Attachment {
    /// Leaves the program forwarding after we exit (`--keep-attached`).
    pub fn keep(self) {
        info!(iface = %self.iface, pin = %self.pin_path.display(), "left attached");
        // Closing our fd leaves the pin as the link's owner: it stays attached.
        drop(self.link);
    }

    /// Detaches the program from the interface.
    pub fn detach(self) -> anyhow::Result<()> {
        let link = self.link.unpin().context("unpinning the link")?;
        drop(link); // the last reference to the bpf_link: the kernel detaches it
        info!(iface = %self.iface, "detached");
        Ok(())
    }
}

/// Removes a link left by `--keep-attached`, detaching the program from `iface`.
pub fn detach_pinned(pin_dir: &Path, iface: &str) -> anyhow::Result<()> {
    let path = link_pin_path(pin_dir, iface);
    let link = PinnedLink::from_pin(&path)
        .with_context(|| format!("no pinned fastpath link for {iface} at {}", path.display()))?;
    drop(link.unpin()?);
    Ok(())
}

pub fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let name = CString::new(iface).context("interface name contains NUL")?;
    // SAFETY: `name` is a valid C string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface named {iface}");
    }
    Ok(index)
}

/// Pinning needs a bpf filesystem; say how to get one rather than fail obscurely.
fn ensure_bpffs(pin_dir: &Path) -> anyhow::Result<()> {
    let mut probe = pin_dir;
    while !probe.exists() {
        probe = probe
            .parent()
            .context("pin directory has no existing parent")?;
    }
    let path =
        CString::new(probe.as_os_str().as_encoded_bytes()).context("pin path contains NUL")?;
    // SAFETY: zeroed statfs is a valid out-buffer; `path` is a valid C string.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
        bail!(
            "cannot stat {}: {}",
            probe.display(),
            std::io::Error::last_os_error()
        );
    }
    if fs.f_type as i64 != BPF_FS_MAGIC {
        bail!(
            "{} is not on a bpf filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf` (or run `cargo xtask setup`)",
            probe.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rejection;

    #[test]
    fn a_rejection_for_alignment_names_the_architecture_and_the_way_out() {
        let log = "Verifier output: 12: (79) r2 = *(u64 *)(r1 +3)\nmisaligned packet access off 0+3+0 size 8";
        let why = rejection(log);
        assert!(
            why.contains("unaligned") && why.contains("--no-xdp"),
            "{why}"
        );
        for other in [
            "invalid access to map value, value_size=256 off=249 size=8",
            "misaligned stack access off 0+0+-6 size 4",
        ] {
            assert_eq!(rejection(other), "the verifier rejected the XDP program");
        }
    }
}
