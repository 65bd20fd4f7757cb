//! `cargo-credential-mayfly`: cargo's credential provider.
//!
//! In `.cargo/config.toml`: `[registries.NAME] credential-provider = ["cargo-credential-mayfly"]`.

fn main() {
    mayfly_core::protocol::main(&mayfly_core::protocol::cargo::HOOK);
}
