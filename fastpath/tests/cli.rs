//! The command line on its own: `check-config` and the help of every subcommand.

use std::{path::Path, process::Command};

use anyhow::{Result, ensure};

fn fastpath(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_fastpath"))
        .args(args)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

#[test]
fn check_config_prints_the_setup_or_names_the_bad_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = write(
        dir.path(),
        "good.toml",
        "[[peers]]\nname = \"alice-pbx\"\naddress = \"198.51.100.2:5060\"\n\
         [[routes]]\nnumber = \"+1 555 010 0001\"\npeer = \"alice-pbx\"\n\
         [metrics]\nlisten = \"off\"\n",
    )?;
    let (ok, text) = fastpath(&["check-config", &good])?;
    ensure!(ok, "good config refused: {text}");
    for want in [
        "ok",
        "static routes: 1 to 1 peers",
        "alice-pbx at 198.51.100.2:5060",
        "metrics: off",
    ] {
        ensure!(text.contains(want), "no {want:?} in {text}");
    }

    for (body, key) in [
        ("[xdp]\nsip_ports = [0]\n", "xdp.sip_ports"),
        ("[metrics]\nlisten = \"everywhere\"\n", "metrics.listen"),
        (
            "[[routes]]\nnumber = \"1\"\npeer = \"nobody\"\n",
            "routes[0].peer",
        ),
        ("nonsense = [", "TOML"),
    ] {
        let bad = write(dir.path(), "bad.toml", body)?;
        let (ok, text) = fastpath(&["check-config", &bad])?;
        ensure!(!ok, "{body:?} accepted: {text}");
        ensure!(
            text.to_lowercase().contains(&key.to_lowercase()),
            "{body:?}: the error does not name {key}: {text}"
        );
        ensure!(text.lines().count() <= 10, "not a short error: {text}");
    }
    let (ok, text) = fastpath(&["check-config", "/nonexistent/fastpath.toml"])?;
    ensure!(!ok && text.contains("cannot read"), "{text}");
    Ok(())
}

/// The documented example in `deploy/` is a valid configuration with every section.
#[test]
fn the_example_config_checks() -> Result<()> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/fastpath.toml");
    let (ok, text) = fastpath(&["check-config", &example.to_string_lossy()])?;
    ensure!(ok, "{text}");
    for part in [
        "proxy: on",
        "carrier-a",
        "registry:",
        "api:",
        "verification:",
        "metrics:",
    ] {
        ensure!(text.contains(part), "no {part:?} in {text}");
    }
    Ok(())
}

/// Any key can be set over the file, by `--set` or by `FASTPATH__SECTION__KEY`.
#[test]
fn keys_are_set_by_flag_and_environment() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = write(dir.path(), "c.toml", "[metrics]\nlisten = \"off\"\n")?;
    let (ok, text) = fastpath(&["check-config", &file, "--set", "xdp.sip_ports=[5070, 5080]"])?;
    ensure!(ok && text.contains("SIP ports [5070, 5080]"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_fastpath"))
        .args(["check-config", &file])
        .env("FASTPATH__XDP__LOCAL_ONLY", "false")
        .env("FASTPATH__METRICS__LISTEN", "127.0.0.1:9999")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{text}");
    ensure!(text.contains("transit requests too"), "{text}");
    ensure!(text.contains("127.0.0.1:9999/metrics"), "{text}");
    let (ok, text) = fastpath(&["check-config", &file, "--set", "xdp.max_routes=0"])?;
    ensure!(!ok && text.contains("xdp.max_routes"), "{text}");
    Ok(())
}

#[test]
fn every_subcommand_has_help() -> Result<()> {
    let (ok, top) = fastpath(&["--help"])?;
    ensure!(ok, "{top}");
    for sub in [
        "run",
        "stats",
        "routes",
        "numbers",
        "check-config",
        "detach",
    ] {
        ensure!(top.contains(sub), "`fastpath --help` does not list {sub}");
        let (ok, text) = fastpath(&[sub, "--help"])?;
        ensure!(
            ok && text.contains("Usage:"),
            "`fastpath {sub} --help`: {text}"
        );
    }
    Ok(())
}
