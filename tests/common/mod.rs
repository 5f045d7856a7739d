//! Helpers shared by the integration tests: running the `prescale` binary
//! and finding the shared traces.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.
#![allow(dead_code)]

pub mod broker;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `prescale` binary built for these tests.
pub fn prescale() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prescale"))
}

/// Runs `prescale` with `args`; panics with its stderr when it fails.
pub fn run_ok(args: &[&str]) -> Output {
    let out = prescale().args(args).output().expect("prescale runs");
    assert!(out.status.success(), "prescale {args:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// A trace from `../shared/traces`. Panics (never skips) when the traces
/// are not there: the tests that need them must say so loudly.
pub fn trace(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces").join(name).join("series.csv");
    assert!(
        path.exists(),
        "trace {} is missing: these tests replay the real traces in ../shared/traces (see its README)",
        path.display()
    );
    path
}

/// The lines of a file, sorted.
pub fn sorted_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Reads a summary JSON file.
pub fn summary(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("summary is JSON")
}
