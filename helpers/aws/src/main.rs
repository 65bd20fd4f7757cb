//! `mayfly-aws-credential`: the AWS CLI's and SDKs' `credential_process`.
//!
//! In `~/.aws/config`: `credential_process = mayfly-aws-credential ROUTE`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = mayfly_core::Env::from_os();
    let code = mayfly_core::protocol::aws::serve(&args, &mut std::io::stdout().lock(), env, &mayfly_core::ancestry);
    std::process::exit(code);
}
