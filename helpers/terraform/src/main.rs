//! `terraform-credentials-mayfly`: Terraform's credentials helper.
//!
//! In the CLI config: `credentials_helper "mayfly" {}`, with this binary in
//! `~/.terraform.d/plugins`.

fn main() {
    mayfly_core::protocol::main(&mayfly_core::protocol::terraform::HOOK);
}
