//! `mayfly-kube-credential`: kubectl's exec credential plugin.
//!
//! In a kubeconfig user: `exec: {apiVersion: client.authentication.k8s.io/v1, command:
//! mayfly-kube-credential, interactiveMode: Never, provideClusterInfo: true}`.

fn main() {
    mayfly_core::protocol::main(&mayfly_core::protocol::kube::HOOK);
}
