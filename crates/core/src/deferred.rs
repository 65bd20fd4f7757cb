//! Revoking a replaced token after the tool has its answer: the tool waits for the helper
//! to exit, so the helper hands the revocation to a detached copy of itself, the entry on
//! its stdin still sealed (never argv or environment): the copy, not the helper, decrypts
//! it. A helper `main` that serves that copy enables it;
//! elsewhere (tests calling a protocol in-process) the revocation stays synchronous. A
//! `main` that answers and then exits (the credential hooks) also holds the copy back
//! until its answer is out, so the copy does not compete for the CPU with the answer
//! (the tool still waits for the copy to be started); while one is held, the signals that
//! would end the helper wait, and a panic starts it first. A refresh starts its copy
//! early, on a thread while its exchange runs ([`start_early`]): the copy waits on its
//! stdin, and the hand-over after the answer is a write.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use base64::Engine;

use crate::cache::Origin;
use crate::{Broker, Env, Process};

/// The hidden first argument of the detached copy.
pub const REVOKE_ARG: &str = "--mayfly-revoke-handed-over";

/// Set when this process's `main` serves [`REVOKE_ARG`].
static ENABLED: OnceLock<()> = OnceLock::new();

/// Set when this process's `main` calls [`start_held`] once its answer is out: hand-overs
/// wait here until then.
static HOLDING: OnceLock<Mutex<Vec<Vec<u8>>>> = OnceLock::new();

/// What the detached copy is told: the sealed entry (base64), where the token replacing it
/// came from (for a line when the entry does not open) and the chain for its audit line.
#[derive(Serialize, Deserialize)]
struct Handover {
    sealed: String,
    replacing: Option<Origin>,
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
    // A copy started early and handed nothing reads an empty stdin: nothing to load.
    let Ok(h) = serde_json::from_slice::<Handover>(payload) else { return };
    let Ok(sealed) = base64::engine::general_purpose::STANDARD.decode(&h.sealed) else { return };
    if let Ok(broker) = Broker::from_env(Env::from_os()) {
        let chain: Vec<Process> = h.chain.into_iter().map(|(pid, argv)| Process { pid, argv }).collect();
        broker.end_sealed(None, &sealed, h.replacing.as_ref(), &chain);
    }
}

/// Called by a `main` that answers and then exits: hand-overs from here on are held until
/// [`start_held`], which the same `main` must call once its answer is flushed.
pub fn hold_until_answered() {
    let _ = HOLDING.set(Mutex::new(Vec::new()));
    // A held entry is out of the cache and only in this process: a panic (which aborts in
    // release builds) starts its copy first.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        start_held();
        previous(info);
    }));
}

/// The signals that would end this process while a token is held (the tool's Ctrl-C
/// reaches its helpers too). From the first hold to [`start_held`] they are caught, not
/// obeyed; then the first one caught ends the process as it would have.
const ENDING: [i32; 4] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGQUIT,
];

/// The signal caught while holding (0: none).
static CAUGHT: OnceLock<std::sync::Arc<std::sync::atomic::AtomicUsize>> = OnceLock::new();

fn catch_ending_signals() {
    CAUGHT.get_or_init(|| {
        let caught = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for signal in ENDING {
            let _ = signal_hook::flag::register_usize(signal, caught.clone(), signal as usize);
        }
        caught
    });
}

/// Starts the detached copies held back while answering; one that cannot be started is
/// ended here, before the exit.
pub fn start_held() {
    let Some(held) = HOLDING.get() else { return };
    // `try_lock`: a panic while the list was being written must not wait on itself.
    let mut guard = match held.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    let held = std::mem::take(&mut *guard);
    drop(guard);
    if held.is_empty() {
        return;
    }
    for payload in &held {
        if !spawn(payload) {
            end_here(payload);
        }
    }
    let caught = CAUGHT.get().map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed));
    if let Ok(signal) = i32::try_from(caught)
        && signal != 0
    {
        let _ = signal_hook::low_level::emulate_default_handler(signal);
    }
}

/// Hands a sealed entry ([`crate::Cache::take`]) to a detached copy of this binary; false
/// when handing over is not enabled here or the copy could not be started, for the caller
/// to end it itself.
pub(crate) fn hand_over(sealed: &[u8], replacing: Option<&Origin>, chain: &[Process]) -> bool {
    if ENABLED.get().is_none() {
        return false;
    }
    let handover = Handover {
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        replacing: replacing.cloned(),
        chain: chain.iter().map(|p| (p.pid, p.argv.clone())).collect(),
    };
    let Ok(payload) = serde_json::to_vec(&handover) else { return false };
    if let Some(held) = HOLDING.get() {
        catch_ending_signals();
        held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(payload);
        return true;
    }
    spawn(&payload)
}

/// A copy being started ahead of its hand-over, on a thread of its own (starting a process
/// waits for its `exec`).
static EARLY: Mutex<Option<std::thread::JoinHandle<Option<Child>>>> = Mutex::new(None);

/// Starts a detached copy now, on another thread, for a hand-over expected later in this
/// process (a refresh, while its exchange runs): the copy waits on its stdin, and the
/// hand-over only writes there. A copy that is handed nothing reads the end of its stdin
/// when this process exits, and exits too.
pub(crate) fn start_early() {
    if ENABLED.get().is_none() {
        return;
    }
    let mut early = EARLY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if early.is_none() {
        // No thread to be had (a process limit): the hand-over starts its copy itself.
        *early = std::thread::Builder::new().spawn(start_copy).ok();
    }
}

/// Starts the detached copy with `payload` on its stdin (the one started early, if any);
/// false when it could not be.
fn spawn(payload: &[u8]) -> bool {
    let early = EARLY.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let child = match early {
        Some(started) => started.join().ok().flatten(),
        // On a thread of its own too: see `start_copy`.
        None => std::thread::Builder::new().spawn(start_copy).ok().and_then(|t| t.join().ok().flatten()),
    };
    let Some(mut child) = child else { return false };
    child.stdin.take().is_some_and(|mut stdin| stdin.write_all(payload).is_ok())
}

/// The copy's niceness: its revocation can wait, and on a busy machine (two cores, the
/// exchange on loopback) its start must not take CPU from the helper answering its tool.
/// 19 and not `SCHED_IDLE`: a loaded machine slows the copy down, it never starves it.
const COPY_NICENESS: i32 = 19;

/// Starts a detached copy of this binary that reads its hand-over from stdin. Called on a
/// thread of its own, which it makes nice first: on Linux niceness belongs to a thread
/// and a child inherits its spawning thread's, so the copy starts nice from its `exec`
/// on while the helper's own threads keep theirs.
fn start_copy() -> Option<Child> {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), COPY_NICENESS);
    let exe = std::env::current_exe().ok()?;
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
    spawned.ok()
}
