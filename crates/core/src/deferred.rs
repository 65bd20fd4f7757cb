//! Revoking a replaced token after the tool has its answer: the tool waits for the helper
//! to exit, so the helper hands the revocation to a detached copy of itself, the token on
//! its stdin (never argv or environment). A helper `main` that serves that copy enables it;
//! elsewhere (tests calling a protocol in-process) the revocation stays synchronous. A
//! `main` that answers and then exits (the credential hooks) also holds the copy back
//! until its answer is out, so the copy's start competes with nothing the tool waits on.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::cache::{CacheEntry, StoredEntry};
use crate::{Broker, Env, Process};

/// The hidden first argument of the detached copy.
pub const REVOKE_ARG: &str = "--mayfly-revoke-handed-over";

/// Set when this process's `main` serves [`REVOKE_ARG`].
static ENABLED: OnceLock<()> = OnceLock::new();

/// Set when this process's `main` calls [`start_held`] once its answer is out: hand-overs
/// wait here until then.
static HOLDING: OnceLock<Mutex<Vec<Vec<u8>>>> = OnceLock::new();

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
    if std::io::stdin().read_to_end(&mut input).is_ok() {
        end_here(&input);
    }
    std::process::exit(0);
}

/// Ends a handed-over entry in this process (its audit line says how that went).
fn end_here(payload: &[u8]) {
    let handover = serde_json::from_slice::<Handover>(payload).ok();
    if let (Some(h), Ok(broker)) = (handover, Broker::from_env(Env::from_os())) {
        let chain: Vec<Process> = h.chain.into_iter().map(|(pid, argv)| Process { pid, argv }).collect();
        let _ = broker.end_entry(h.entry.into(), &chain);
    }
}

/// Called by a `main` that answers and then exits: hand-overs from here on are held until
/// [`start_held`], which the same `main` must call once its answer is flushed.
pub fn hold_until_answered() {
    let _ = HOLDING.set(Mutex::new(Vec::new()));
}

/// Starts the detached copies held back while answering; one that cannot be started is
/// ended here, before the exit.
pub fn start_held() {
    let Some(held) = HOLDING.get() else { return };
    let held = std::mem::take(&mut *held.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    for payload in held {
        if !spawn(&payload) {
            end_here(&payload);
        }
    }
}

/// Hands the entry to a detached copy of this binary; false when handing over is not
/// enabled here or the copy could not be started, for the caller to end it itself.
pub(crate) fn hand_over(entry: &CacheEntry, chain: &[Process]) -> bool {
    if ENABLED.get().is_none() {
        return false;
    }
    let handover =
        Handover { entry: StoredEntry::from(entry), chain: chain.iter().map(|p| (p.pid, p.argv.clone())).collect() };
    let Ok(payload) = serde_json::to_vec(&handover) else { return false };
    drop(handover);
    if let Some(held) = HOLDING.get() {
        held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(payload);
        return true;
    }
    spawn(&payload)
}

/// Starts the detached copy with `payload` on its stdin; false when it could not be.
fn spawn(payload: &[u8]) -> bool {
    let Ok(exe) = std::env::current_exe() else { return false };
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
    child.stdin.take().is_some_and(|mut stdin| stdin.write_all(payload).is_ok())
}
