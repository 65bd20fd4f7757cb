//! `docker-credential-mayfly`: the credential helper of docker, skopeo, podman and crane.
//!
//! In the docker config or containers' `auth.json`: `"credHelpers": {"REGISTRY": "mayfly"}`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = mayfly_core::Env::from_os();
    let code = mayfly_core::protocol::docker::serve(
        &args,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        env,
        &mayfly_core::ancestry,
    );
    std::process::exit(code);
}
