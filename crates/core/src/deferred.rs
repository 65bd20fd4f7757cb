//! Revoking a replaced token after the tool has its answer: the tool waits for the helper
//! to exit, so the helper hands the revocation to a detached copy of itself, the token on
//! its stdin (never argv or environment). A helper `main` that serves that copy enables it;
//! elsewhere (tests calling a protocol in-process) the revocation stays synchronous.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::cache::{CacheEntry, StoredEntry};
use crate::{Broker, Env, Process};

/// The hidden first argument of the detached copy.
pub const REVOKE_ARG: &str = "--mayfly-revoke-handed-over";

/// Set when this process's `main` serves [`REVOKE_ARG`].
static ENABLED: OnceLock<()> = OnceLock::new();

/// What the detached copy is told: the entry and the chain for its audit line.
#[derive(Serialize, Deserialize)]
struct Handover {
    #[serde(flatten)]
    entry: StoredEntry,
    chain: Vec<(u32, Vec<String>)>,
}

/// Called first in a helper's `main`: when this process is a detached copy, revokes the
/// handed-over token (its audit line says how that went) and exits; else enables handing
/// over for this process.
pub fn serve_if_asked() {
    if std::env::args_os().nth(1).is_none_or(|a| a != REVOKE_ARG) {
        let _ = ENABLED.set(());
        return;
    }
    let mut input = Vec::new();
    let handover =
        std::io::stdin().read_to_end(&mut input).ok().and_then(|_| serde_json::from_slice::<Handover>(&input).ok());
    if let (Some(h), Ok(broker)) = (handover, Broker::from_env(Env::from_os())) {
        let chain: Vec<Process> = h.chain.into_iter().map(|(pid, argv)| Process { pid, argv }).collect();
        let _ = broker.end_entry(h.entry.into(), &chain);
    }
    std::process::exit(0);
}

/// Hands the entry to a detached copy of this binary; false when handing over is not
/// enabled here or the copy could not be started, for the caller to end it itself.
pub(crate) fn hand_over(entry: &CacheEntry, chain: &[Process]) -> bool {
    if ENABLED.get().is_none() {
        return false;
    }
    let Ok(exe) = std::env::current_exe() else { return false };
    let handover =
        Handover { entry: StoredEntry::from(entry), chain: chain.iter().map(|p| (p.pid, p.argv.clone())).collect() };
    let Ok(payload) = serde_json::to_vec(&handover) else { return false };
    drop(handover);
    // Its own process group: the terminal's Ctrl-C for the tool does not reach it; no
    // stdout or stderr, so the tool reading ours sees the end when we exit.
    let spawned = {
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .arg(REVOKE_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
    };
    let Ok(mut child) = spawned else { return false };
    child.stdin.take().is_some_and(|mut stdin| stdin.write_all(&payload).is_ok())
}
