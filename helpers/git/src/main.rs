//! `git-credential-mayfly`: git's credential helper, answering with just-in-time tokens.
//!
//! Wire it per host: `credential.https://HOST.helper` = `` then `mayfly`, and
//! `credential.https://HOST.useHttpPath` = `true`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = mayfly_core::Env::from_os();
    let code = mayfly_core::protocol::git::serve(
        &args,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        env,
        &mayfly_core::ancestry,
    );
    std::process::exit(code);
}
