//! The real `terraform init`, through `terraform-credentials-mayfly`, downloading a module
//! from a registry that accepts only tokens minted for it.

use mayfly_tests::{Stack, bin, require_tool};

/// A Terraform project using the registry's module, with the helper installed in HOME.
fn project(stack: &Stack) -> (std::path::PathBuf, std::path::PathBuf) {
    let plugins = stack.home.join(".terraform.d/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let helper = plugins.join("terraform-credentials-mayfly");
    if !helper.exists() {
        std::os::unix::fs::symlink(bin("terraform-credentials-mayfly"), helper).unwrap();
    }
    let cli_config = stack.dir.path().join("terraform.rc");
    std::fs::write(&cli_config, "credentials_helper \"mayfly\" {}\n").unwrap();
    let dir = stack.work.join("tf");
    std::fs::create_dir_all(&dir).unwrap();
    let host = stack.registry().base_url.trim_start_matches("https://");
    std::fs::write(
        dir.join("main.tf"),
        format!("module \"greeting\" {{\n  source  = \"{host}/{}\"\n  version = \"1.0.0\"\n}}\n\noutput \"greeting\" {{\n  value = module.greeting.greeting\n}}\n", mayfly_devstack::MODULE),
    )
    .unwrap();
    (dir, cli_config)
}

fn terraform_init(stack: &Stack, dir: &std::path::Path, cli_config: &std::path::Path) -> std::process::Output {
    std::process::Command::new("terraform")
        .args(["init", "-input=false", "-no-color"])
        .current_dir(dir)
        .env_clear()
        .envs(stack.env())
        .env("TF_CLI_CONFIG_FILE", cli_config)
        .env("SSL_CERT_FILE", &stack.ca.ca_cert)
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_IN_AUTOMATION", "1")
        .output()
        .unwrap()
}

#[test]
#[cfg_attr(missing = "terraform", ignore = "needs terraform, which is not installed")]
fn terraform_init_downloads_a_module_with_a_minted_token() {
    if !require_tool("terraform") {
        return;
    }
    let stack = Stack::builder().git().registry().start();
    let (dir, cli_config) = project(&stack);
    let out = terraform_init(&stack, &dir, &cli_config);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(dir.join(".terraform/modules/greeting/main.tf").is_file(), "the module was not downloaded");
    assert!(
        stack.registry().served.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "versions and download were authorised"
    );
    let audit = stack.client_audit();
    assert!(!audit.is_empty() && audit.iter().all(|l| l["tool"] == "terraform"), "{audit:?}");
    assert_eq!(stack.sts_issued(), 1);
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "terraform", ignore = "needs terraform, which is not installed")]
fn without_a_route_the_helper_has_no_credentials_and_the_registry_refuses() {
    if !require_tool("terraform") {
        return;
    }
    let stack = Stack::builder().git().registry().start();
    stack.write_config(&stack.route("org/app", &["read"], "ci"));
    let (dir, cli_config) = project(&stack);
    let out = terraform_init(&stack, &dir, &cli_config);
    assert!(!out.status.success());
    assert_eq!(stack.registry().served.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(stack.sts_issued(), 0);
}
