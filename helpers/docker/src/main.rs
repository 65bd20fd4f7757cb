//! `docker-credential-mayfly`: the credential helper of docker, skopeo, podman and crane.
//!
//! In the docker config or containers' `auth.json`: `"credHelpers": {"REGISTRY": "mayfly"}`.

fn main() {
    mayfly_core::protocol::main(&mayfly_core::protocol::docker::HOOK);
}
