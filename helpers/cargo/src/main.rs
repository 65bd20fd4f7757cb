//! `cargo-credential-mayfly`: cargo's credential provider.
//!
//! In `.cargo/config.toml`: `[registries.NAME] credential-provider = ["cargo-credential-mayfly"]`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = mayfly_core::Env::from_os();
    let code = mayfly_core::protocol::cargo::serve(
        &args,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        env,
        &mayfly_core::ancestry,
    );
    std::process::exit(code);
}
