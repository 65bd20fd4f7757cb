//! `mayfly-kubelet-credential`: the kubelet's image credential provider.
//!
//! Named in the kubelet's `CredentialProviderConfig`, in the directory given by
//! `--image-credential-provider-bin-dir`.

fn main() {
    mayfly_core::protocol::main(&mayfly_core::protocol::kubelet::HOOK);
}
