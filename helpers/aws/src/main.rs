//! `mayfly-aws-credential`: the AWS CLI's and SDKs' `credential_process`.
//!
//! In `~/.aws/config`: `credential_process = mayfly-aws-credential ROUTE`.

fn main() {
    mayfly_core::protocol::main(&mayfly_core::protocol::aws::HOOK);
}
