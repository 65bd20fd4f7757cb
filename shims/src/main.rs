//! `mayfly-shim`: installed (linked) as `npm`, `pnpm`, `yarn`, `twine`, `gem` or `hf` ahead of the real
//! tool on PATH; `mayfly exec` does this for its session. Also runs as
//! `mayfly-shim TOOL ARGS...`.

use mayfly_core::protocol::shim::{Family, Processes, refuse, run};

fn main() {
    mayfly_core::deferred::serve_if_asked();
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked =
        args.first().and_then(|a| std::path::Path::new(a).file_name()).map(|n| n.to_string_lossy().into_owned());
    let mut family = invoked.as_deref().and_then(Family::from_name);
    args.remove(0);
    if family.is_none() && !args.is_empty() {
        family = Family::from_name(&args.remove(0).to_string_lossy());
    }
    let Some(family) = family else {
        mayfly_core::protocol::warn(
            "usage: mayfly-shim npm|pnpm|yarn|twine|gem|hf ARGS... (or link it as one of them)",
        );
        std::process::exit(2);
    };
    let shim = std::env::current_exe().unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_default();
    let env = mayfly_core::Env::from_os();
    // Returns only when the real tool did not take over this process.
    match run(family, &args, env, &cwd, &shim, &mayfly_core::ancestry, &mut Processes) {
        Ok(code) => std::process::exit(code),
        Err(refusal) => std::process::exit(refuse(&refusal)),
    }
}
