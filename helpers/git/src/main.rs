//! `git-credential-mayfly`: git's credential helper, answering with just-in-time tokens.
//!
//! Wire it per host: `credential.https://HOST.helper` = `` then `mayfly`, and
//! `credential.https://HOST.useHttpPath` = `true`.

fn main() {
    mayfly_core::protocol::main(&mayfly_core::protocol::git::HOOK);
}
