//! Network isolation for anything that opens DDS in tests and benchmarks: DDS multicasts on
//! every interface, so runs happen in a fresh network namespace (`unshare -n`) where only
//! `lo` exists and is brought up. Never traffic beyond loopback.

use std::path::Path;
use std::process::Command;

/// Set in the child so a re-executed process knows it is the isolated one.
pub const ISOLATED_ENV: &str = "VLA_NETNS_ISOLATED";

/// Shell prologue run inside the namespace: loopback up, and multicast routed on it so
/// DDS implementations that insist on multicast discovery still work.
pub const PROLOGUE: &str = "ip link set lo up && ip link set lo multicast on && \
     ip route add 224.0.0.0/4 dev lo 2>/dev/null; ";

/// Whether the only network interface is `lo` (a fresh namespace). Reads
/// `/proc/self/net/dev`, which follows this process's namespace (`/sys/class/net` follows
/// the namespace sysfs was mounted in, so it still lists the host's interfaces).
pub fn isolated() -> bool {
    match std::fs::read_to_string(Path::new("/proc/self/net/dev")) {
        Ok(text) => text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .all(|name| name.trim() == "lo"),
        Err(_) => false,
    }
}

/// Whether `unshare -n` works here (needs root or user namespaces).
pub fn available() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up"])
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "unshare -n failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `program args…` wrapped to run in a fresh network namespace with `lo` up.
pub fn command(program: &Path, args: &[String]) -> Command {
    let mut c = Command::new("unshare");
    c.arg("-n")
        .arg("sh")
        .arg("-c")
        .arg(format!("{PROLOGUE}exec \"$0\" \"$@\""))
        .arg(program)
        .args(args)
        .env(ISOLATED_ENV, "1");
    c
}

/// A shell script run in a fresh network namespace with `lo` up.
pub fn shell(script: &str) -> Command {
    let mut c = Command::new("unshare");
    c.arg("-n")
        .arg("sh")
        .arg("-c")
        .arg(format!("{PROLOGUE}{script}"))
        .env(ISOLATED_ENV, "1");
    c
}

/// Where a DDS test body should run.
#[derive(Debug)]
pub enum Isolation {
    /// This process is the isolated re-execution: run the test body.
    Inside,
    /// The test was re-executed in a fresh namespace and passed there.
    RanInChild,
    /// `unshare -n` is not available (the reason); the caller skips or fails.
    Unavailable(String),
}

/// For DDS tests: re-execute this test binary, filtered to `test` (its exact name), inside
/// a fresh network namespace, unless this process already is that re-execution.
/// Panics with the child's output when the child fails.
pub fn isolate_test(test: &str) -> Isolation {
    if std::env::var_os(ISOLATED_ENV).is_some() {
        // Never re-execute from inside a re-execution: that would recurse without bound.
        assert!(
            isolated(),
            "{test}: re-executed for isolation but interfaces other than lo are visible"
        );
        return Isolation::Inside;
    }
    if let Err(e) = available() {
        return Isolation::Unavailable(e);
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Isolation::Unavailable(format!("no current executable: {e}")),
    };
    let args: Vec<String> = ["--exact", test, "--nocapture", "--test-threads=1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match command(&exe, &args).output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("{text}");
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{test} failed in its network namespace ({})",
                out.status
            );
            Isolation::RanInChild
        }
        Err(e) => Isolation::Unavailable(format!("cannot run unshare: {e}")),
    }
}

/// What a DDS test does when it cannot be isolated: fail under `VLA_REQUIRE_DDS=1`
/// (as `make test` sets), otherwise print why it was skipped.
pub fn skip_or_fail(test: &str, reason: &str) {
    if std::env::var("VLA_REQUIRE_DDS").as_deref() == Ok("1") {
        panic!("{test}: DDS tests are required (VLA_REQUIRE_DDS=1) but cannot run: {reason}");
    }
    eprintln!("skipped {test}: {reason} (set VLA_REQUIRE_DDS=1 to make this a failure)");
}
