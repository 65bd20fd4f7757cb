//! `vault-token-helper-mayfly`: Vault's and OpenBao's token helper.
//!
//! In `~/.vault` (vault) or `~/.bao` (bao): `token_helper = "/abs/path/vault-token-helper-mayfly"`.

fn main() {
    mayfly_core::protocol::main(&mayfly_core::protocol::vault::HOOK);
}
