//! `bazel-credential-mayfly`: Bazel's credential helper.
//!
//! In `.bazelrc`: `common --credential_helper=HOST=/path/to/bazel-credential-mayfly`.

fn main() {
    mayfly_core::protocol::main(&mayfly_core::protocol::bazel::HOOK);
}
