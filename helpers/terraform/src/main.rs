//! `terraform-credentials-mayfly`: Terraform's credentials helper.
//!
//! In the CLI config: `credentials_helper "mayfly" {}`, with this binary in
//! `~/.terraform.d/plugins`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = mayfly_core::Env::from_os();
    let code = mayfly_core::protocol::terraform::serve(
        &args,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        env,
        &mayfly_core::ancestry,
    );
    std::process::exit(code);
}
