//! `mayfly-kube-credential`: kubectl's exec credential plugin.
//!
//! In a kubeconfig user: `exec: {apiVersion: client.authentication.k8s.io/v1, command:
//! mayfly-kube-credential, interactiveMode: Never, provideClusterInfo: true}`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = mayfly_core::Env::from_os();
    let code = mayfly_core::protocol::kube::serve(&args, &mut std::io::stdout().lock(), env, &mayfly_core::ancestry);
    std::process::exit(code);
}
