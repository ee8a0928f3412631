//! Child processes that cannot outlive the test that started them.

use std::process::{Child, Command, ExitStatus};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long a child gets between SIGTERM and SIGKILL when its guard drops.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

const POLL: Duration = Duration::from_millis(20);

/// Owns one child process: on drop it is sent SIGTERM, then SIGKILL after a grace
/// period, and reaped. Signals go to this child's pid only, and only while it is
/// unreaped (a reaped pid may already belong to someone else).
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    grace: Duration,
}

impl ChildGuard {
    /// Spawns `cmd` under a guard; `cmd`'s program name labels errors.
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        let name = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Self::new(child, name))
    }

    /// Takes ownership of an already spawned child.
    pub fn new(child: Child, name: impl Into<String>) -> Self {
        Self {
            child,
            name: name.into(),
            grace: DEFAULT_GRACE,
        }
    }

    /// Changes the SIGTERM→SIGKILL grace period used by [`ChildGuard::stop`] and drop.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child, e.g. to take its piped stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Exit status if the child has ended (reaping it), without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("waiting for {} (pid {})", self.name, self.pid()))
    }

    /// Waits up to `timeout` for the child to end; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        wait_timeout(&mut self.child, timeout)
            .with_context(|| format!("waiting for {} (pid {})", self.name, self.pid()))
    }

    /// Sends `signal` to the child if it has not been reaped yet.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: kill(2) has no memory effects; the pid is our own unreaped child,
        // so it cannot have been recycled for another process.
        if unsafe { libc::kill(pid, signal) } != 0 {
            let err = std::io::Error::last_os_error();
            // ESRCH: it exited between try_wait and kill; the caller's wait sees that.
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(err).with_context(|| format!("signalling {} (pid {pid})", self.name));
            }
        }
        Ok(())
    }

    /// SIGTERM, wait out the grace period, then SIGKILL; reaps the child.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal(libc::SIGTERM)?;
        if let Some(status) = self.wait_timeout(self.grace)? {
            return Ok(status);
        }
        // Child::kill is SIGKILL to this child's pid, and a no-op once reaped.
        self.child
            .kill()
            .with_context(|| format!("killing {} (pid {})", self.name, self.pid()))?;
        self.child
            .wait()
            .with_context(|| format!("reaping {} (pid {})", self.name, self.pid()))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("fastpath-tests: could not stop {}: {e:#}", self.name);
        }
    }
}

/// Waits up to `timeout` for `child` to end; `None` if it is still running.
/// Polls, because std has no timed wait and a helper thread could not be cancelled.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        sleep(POLL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_timeout_sees_exit() -> Result<()> {
        let mut g = ChildGuard::spawn(&mut Command::new("true"))?;
        let status = g.wait_timeout(Duration::from_secs(5))?;
        assert!(status.is_some_and(|s| s.success()));
        Ok(())
    }

    #[test]
    fn stop_terminates_a_sleeper() -> Result<()> {
        let mut g = ChildGuard::spawn(Command::new("sleep").arg("30"))?;
        assert!(g.wait_timeout(Duration::from_millis(50))?.is_none());
        let start = Instant::now();
        let status = g.stop()?;
        assert!(!status.success());
        assert!(start.elapsed() < DEFAULT_GRACE, "SIGTERM should suffice");
        Ok(())
    }

    #[test]
    fn stop_escalates_to_sigkill() -> Result<()> {
        // SIG_IGN survives exec, so this sleep ignores SIGTERM and forces the SIGKILL path.
        let mut g =
            ChildGuard::spawn(Command::new("sh").args(["-c", "trap '' TERM; exec sleep 30"]))?
                .with_grace(Duration::from_millis(200));
        sleep(Duration::from_millis(100)); // let the trap be installed
        let status = g.stop()?;
        assert!(!status.success());
        Ok(())
    }
}
