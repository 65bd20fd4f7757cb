//! Releases: the archive, packages, SBOM and checksums `release/build.sh` makes, installing
//! from an archive with `install.sh --from`, static-pie binaries, the systemd units and the
//! container image, all from the debug build.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use mayfly_tests::{bin, free_port, require_tool};
use sha2::Digest;

const TARGET: &str = "x86_64-unknown-linux-gnu";
const EPOCH: &str = "1700000000";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn version() -> String {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml")).unwrap().parse().unwrap();
    manifest["workspace"]["package"]["version"].as_str().unwrap().to_owned()
}

fn ok(out: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stdout).unwrap()
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// `release/build.sh` over the debug binaries, into `out`.
fn build_release(out: &Path) -> String {
    let bin_dir = bin("mayfly").parent().unwrap().to_owned();
    let out = Command::new(root().join("release/build.sh"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .unwrap();
    ok(out, "release/build.sh")
}

#[test]
#[cfg_attr(
    any(missing = "cargo-cyclonedx", missing = "dpkg-deb"),
    ignore = "needs cargo-cyclonedx and dpkg-deb, which are not both installed"
)]
fn release_script_makes_a_reproducible_archive_debs_sbom_and_sums() {
    if !require_tool("cargo-cyclonedx") || !require_tool("dpkg-deb") {
        return;
    }
    let version = version();
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let printed = build_release(&one);
    let archive = format!("mayfly-{version}-{TARGET}.tar.gz");
    let bins = [
        "mayfly",
        "mayfly-demo",
        "mayfly-sts",
        "git-credential-mayfly",
        "mayfly-kube-credential",
        "terraform-credentials-mayfly",
        "mayfly-aws-credential",
        "cargo-credential-mayfly",
        "docker-credential-mayfly",
        "bazel-credential-mayfly",
        "vault-token-helper-mayfly",
        "mayfly-kubelet-credential",
        "mayfly-shim",
    ];
    let sboms: Vec<String> = bins.iter().map(|b| format!("mayfly-{version}-{b}.cdx.json")).collect();
    let debs = [format!("mayfly_{version}_amd64.deb"), format!("mayfly-sts_{version}_amd64.deb")];

    // SHA256SUMS names every artefact, with its real digest, and is what the script printed.
    let sums = std::fs::read_to_string(one.join("SHA256SUMS")).unwrap();
    assert_eq!(printed, sums);
    let mut named: Vec<&str> = Vec::new();
    for line in sums.lines() {
        let (digest, name) = line.split_once("  ").unwrap();
        assert_eq!(digest, sha256_hex(&one.join(name)), "{name}");
        named.push(name);
    }
    let mut expected = vec![archive.as_str(), debs[0].as_str(), debs[1].as_str()];
    expected.extend(sboms.iter().map(String::as_str));
    expected.sort();
    assert_eq!(named, expected);

    // The archive: sorted, owned by 0:0, every entry dated SOURCE_DATE_EPOCH.
    let listing = ok(
        Command::new("tar")
            .args(["--list", "--verbose", "--numeric-owner", "--full-time", "-zf"])
            .arg(one.join(&archive))
            .env("TZ", "UTC")
            .output()
            .unwrap(),
        "tar --list",
    );
    let top = format!("mayfly-{version}-{TARGET}");
    let mut paths = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1], "0/0", "{line}");
        assert_eq!(format!("{} {}", fields[3], fields[4]), "2023-11-14 22:13:20", "{line}");
        paths.push(fields[5].trim_end_matches('/').to_owned());
    }
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "archive entries are not sorted");
    for wanted in [
        "bin/mayfly",
        "bin/mayfly-sts",
        "bin/git-credential-mayfly",
        "bin/mayfly-shim",
        "man/man1/mayfly.1",
        "man/man1/mayfly-exec.1",
        "completions/mayfly.bash",
        "completions/_mayfly",
        "completions/mayfly.fish",
        "systemd/mayfly-sts.service",
        "systemd/mayfly-sts.socket",
        "README.md",
    ] {
        assert!(paths.contains(&format!("{top}/{wanted}")), "{wanted} missing from the archive:\n{listing}");
    }

    // The packages: the client binaries in one, the exchange and its units in the other.
    for (deb, package, files, absent) in [
        (
            &debs[0],
            "mayfly",
            &["./usr/bin/mayfly", "./usr/bin/git-credential-mayfly", "./usr/share/man/man1/mayfly.1.gz"][..],
            "mayfly-sts",
        ),
        (
            &debs[1],
            "mayfly-sts",
            &[
                "./usr/bin/mayfly-sts",
                "./lib/systemd/system/mayfly-sts.service",
                "./lib/systemd/system/mayfly-sts.socket",
            ][..],
            "git-credential",
        ),
    ] {
        let path = one.join(deb);
        let field = |name: &str| {
            ok(Command::new("dpkg-deb").arg("--field").arg(&path).arg(name).output().unwrap(), "dpkg-deb --field")
                .trim()
                .to_owned()
        };
        assert_eq!(field("Package"), package);
        assert_eq!(field("Version"), version);
        assert_eq!(field("Architecture"), "amd64");
        let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&path).output().unwrap(), "dpkg-deb -c");
        for file in files {
            assert!(contents.lines().any(|l| l.ends_with(file)), "{file} missing from {deb}:\n{contents}");
        }
        assert!(!contents.contains(absent), "{deb} holds {absent}:\n{contents}");
        assert!(contents.lines().all(|l| l.contains(" root/root ")), "{deb} owners:\n{contents}");
    }

    // The SBOMs: CycloneDX, one per binary, naming the crates it is built from, dated
    // SOURCE_DATE_EPOCH, with no path of the machine that built them.
    for (bin, sbom) in bins.iter().zip(&sboms) {
        let text = std::fs::read_to_string(one.join(sbom)).unwrap();
        let bom: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(bom["bomFormat"], "CycloneDX");
        assert_eq!(bom["metadata"]["component"]["name"], *bin);
        assert_eq!(bom["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
        let components: Vec<&str> =
            bom["components"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
        assert!(components.contains(&"mayfly-core") || *bin == "mayfly-core", "{bin}: {components:?}");
        assert!(!text.contains(&root().display().to_string()), "{sbom} names the checkout's path");
    }
    let sts: serde_json::Value = serde_json::from_slice(&std::fs::read(one.join(&sboms[2])).unwrap()).unwrap();
    let components: Vec<&str> =
        sts["components"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    for name in ["cedar-policy", "redb", "tokio", "rustls"] {
        assert!(components.contains(&name), "{name} missing from mayfly-sts's SBOM");
    }

    // The same binaries and SOURCE_DATE_EPOCH give the same bytes.
    build_release(&two);
    assert_eq!(sums, std::fs::read_to_string(two.join("SHA256SUMS")).unwrap());
    // Nothing is left behind in the source tree.
    let status = ok(
        Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=all"])
            .current_dir(root())
            .output()
            .unwrap(),
        "git status",
    );
    assert!(!status.contains("sbom"), "release/build.sh left files in the tree:\n{status}");
}

/// A release archive in the layout `release/build.sh` writes, holding the debug `mayfly`.
fn small_archive(dir: &Path) -> PathBuf {
    let top = format!("mayfly-{}-{TARGET}", version());
    std::fs::create_dir_all(dir.join("tree").join(&top).join("bin")).unwrap();
    std::fs::copy(bin("mayfly"), dir.join("tree").join(&top).join("bin/mayfly")).unwrap();
    let archive = dir.join(format!("{top}.tar.gz"));
    let out = Command::new("tar").arg("-czf").arg(&archive).arg("-C").arg(dir.join("tree")).arg(&top).output().unwrap();
    ok(out, "tar -czf");
    archive
}

fn install_from(archive: &Path, prefix: &Path, sha256: Option<&str>) -> Output {
    let mut command = Command::new(root().join("install.sh"));
    command.arg("--from").arg(archive).arg("--prefix").arg(prefix);
    if let Some(sha256) = sha256 {
        command.args(["--sha256", sha256]);
    }
    command.output().unwrap()
}

#[test]
fn install_sh_installs_a_release_archive_only_when_its_checksum_matches() {
    let dir = tempfile::tempdir().unwrap();
    let archive = small_archive(dir.path());
    let digest = sha256_hex(&archive);

    // --sha256 given: installed, and it runs.
    let prefix = dir.path().join("pinned");
    ok(install_from(&archive, &prefix, Some(&digest.to_uppercase())), "install.sh --from --sha256");
    let version = ok(Command::new(prefix.join("mayfly")).arg("--version").output().unwrap(), "mayfly --version");
    assert!(version.contains(&self::version()), "{version}");

    // A wrong --sha256: one line naming the mismatch, nothing installed.
    let prefix = dir.path().join("wrong");
    let out = install_from(&archive, &prefix, Some(&"0".repeat(64)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("checksum mismatch") && stderr.contains(&digest), "{stderr}");
    assert!(!prefix.exists(), "something was installed");

    // No --sha256: the SHA256SUMS beside it, which a changed archive no longer matches.
    std::fs::write(
        dir.path().join("SHA256SUMS"),
        format!("{digest}  {}\n", archive.file_name().unwrap().to_string_lossy()),
    )
    .unwrap();
    let prefix = dir.path().join("sums");
    ok(install_from(&archive, &prefix, None), "install.sh --from with SHA256SUMS");
    assert!(prefix.join("mayfly").is_file());
    let mut bytes = std::fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&archive, bytes).unwrap();
    let prefix = dir.path().join("tampered");
    let out = install_from(&archive, &prefix, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("checksum mismatch"), "{stderr}");
    assert!(!prefix.exists(), "something was installed");

    // No checksum at all: refused.
    std::fs::remove_file(dir.path().join("SHA256SUMS")).unwrap();
    let out = install_from(&archive, &dir.path().join("none"), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no checksum"), "{stderr}");
}

/// `mayfly-sts` built in the dev profile with the flags every release and `install.sh`
/// build uses (`release/rustflags.sh`), in a target directory of its own; built once.
fn static_sts() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = root();
        let flags =
            ok(Command::new("sh").arg(root.join("release/rustflags.sh")).arg(TARGET).output().unwrap(), "rustflags.sh");
        let target_dir = root.join("target/static-pie");
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--locked", "-p", "mayfly-sts", "--target", TARGET, "--target-dir"])
            .arg(&target_dir)
            .env("RUSTFLAGS", flags.trim())
            .current_dir(&root)
            .output()
            .unwrap();
        ok(out, "cargo build (static-pie mayfly-sts)");
        target_dir.join(TARGET).join("debug/mayfly-sts")
    })
}

/// The ELF type (2 executable, 3 shared object / PIE) and whether a program header asks
/// for an interpreter (a dynamic loader).
fn elf_type_and_interpreter(path: &Path) -> (u16, bool) {
    let elf = std::fs::read(path).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36) as usize, u16_at(0x38) as usize);
    const PT_INTERP: u32 = 3;
    let interp = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == PT_INTERP
    });
    (u16_at(0x10), interp)
}

#[test]
fn release_flags_build_static_pie() {
    let sts = static_sts();
    let (kind, interpreter) = elf_type_and_interpreter(sts);
    assert_eq!(kind, 3, "not position-independent (ET_DYN): no ASLR");
    assert!(!interpreter, "asks for a dynamic loader: not static");
    let version = ok(Command::new(sts).arg("--version").output().unwrap(), "mayfly-sts --version");
    assert!(version.starts_with("mayfly-sts "), "{version}");
    // The debug build the other tests run is dynamic: the check tells the two apart.
    let (_, dynamic) = elf_type_and_interpreter(&bin("mayfly-sts"));
    assert!(dynamic, "the plain debug build has no interpreter; the check proves nothing");
}

/// Keys of a unit file, in order, with their values (comments and sections left out).
fn unit_keys(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
#[cfg_attr(missing = "systemd-analyze", ignore = "needs systemd-analyze, which is not installed")]
fn systemd_units_are_sandboxed_and_verify() {
    if !require_tool("systemd-analyze") {
        return;
    }
    let service = std::fs::read_to_string(root().join("release/systemd/mayfly-sts.service")).unwrap();
    let keys = unit_keys(&service);
    let value = |key: &str| keys.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    for (key, wanted) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "mayfly-sts"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert_eq!(value(key), [wanted], "{key}");
    }
    assert!(value("SystemCallFilter").contains(&"@system-service"));
    assert_eq!(value("ExecStart"), ["/usr/bin/mayfly-sts --config /etc/mayfly/sts.toml"]);
    let socket = std::fs::read_to_string(root().join("release/systemd/mayfly-sts.socket")).unwrap();
    assert!(unit_keys(&socket).contains(&("ListenStream".into(), "127.0.0.1:8443".into())));

    // systemd's own check, with ExecStart pointing at a binary that exists here. It warns
    // about unknown keys and bad values on stderr and still exits 0: both must be clean.
    let dir = tempfile::tempdir().unwrap();
    let sts = bin("mayfly-sts");
    std::fs::write(
        dir.path().join("mayfly-sts.service"),
        service.replace("/usr/bin/mayfly-sts", &sts.display().to_string()),
    )
    .unwrap();
    std::fs::write(dir.path().join("mayfly-sts.socket"), &socket).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("mayfly-sts.service"))
        .arg(dir.path().join("mayfly-sts.socket"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("mayfly-sts")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify:\n{stderr}");
}

/// podman with storage of its own (vfs, private graph and run roots), as TESTBED.md says.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("storage.conf"), conf).unwrap();
        Self { dir }
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("CONTAINERS_STORAGE_CONF", self.dir.path().join("storage.conf"));
        command
    }

    fn run(&self, args: &[&str]) -> String {
        ok(self.command("podman").args(args).output().unwrap(), &format!("podman {}", args.join(" ")))
    }
}

#[test]
#[cfg_attr(missing = "podman", ignore = "needs podman, which is not installed")]
fn container_image_holds_only_static_mayfly_sts_and_serves() {
    if !require_tool("podman") {
        return;
    }
    let sts = static_sts();
    let podman = Podman::new();
    let tag = "localhost/mayfly-sts:test";
    let out = podman
        .command(root().join("release/image.sh"))
        .arg(sts.parent().unwrap())
        .arg(tag)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .unwrap();
    ok(out, "release/image.sh");

    // A dynamically linked binary is refused with one line.
    let out =
        podman.command(root().join("release/image.sh")).arg(bin("mayfly-sts").parent().unwrap()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("not a statically linked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // Its configuration: not root, the exchange as entrypoint.
    let inspect: serde_json::Value = serde_json::from_str(&podman.run(&["image", "inspect", tag])).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/bin/mayfly-sts"]));
    assert_eq!(config["Cmd"], serde_json::json!(["--config", "/etc/mayfly/sts.toml"]));

    // Its files: the binary and the CA certificates, nothing else.
    let container = podman.run(&["create", tag]).trim().to_owned();
    let export = podman.dir.path().join("export.tar");
    podman.run(&["export", "--output", &export.display().to_string(), &container]);
    podman.run(&["rm", &container]);
    let listing = ok(Command::new("tar").arg("-tf").arg(&export).output().unwrap(), "tar -tf");
    let mut files: Vec<&str> = listing.lines().filter(|l| !l.ends_with('/')).collect();
    files.sort();
    assert_eq!(files, ["etc/ssl/certs/ca-certificates.crt", "usr/bin/mayfly-sts"], "{listing}");

    // It runs with nothing else around it: this machine's podman cannot start containers
    // (its crun refuses the sandbox's cgroups and rlimits), so the image's own file system
    // runs under chroot, as the image's user, with a config added and /readyz answering 200.
    let rootfs = podman.dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc/mayfly")).unwrap();
    ok(Command::new("tar").arg("-xf").arg(&export).arg("-C").arg(&rootfs).output().unwrap(), "tar -xf");
    let port = free_port();
    std::fs::write(
        rootfs.join("etc/mayfly/sts.toml"),
        format!("issuer = \"http://127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let user = config["User"].as_str().unwrap();
    let mut argv: Vec<String> =
        config["Entrypoint"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    argv.extend(config["Cmd"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()));
    // Found on this PATH: the child's environment is empty, as in the image.
    let chroot = ok(Command::new("sh").args(["-c", "command -v chroot"]).output().unwrap(), "command -v chroot");
    let mut child = Command::new(chroot.trim())
        .arg(format!("--userspec={user}"))
        .arg(&rootfs)
        .args(&argv)
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let mut answer = None;
    for _ in 0..300 {
        if let Ok(response) = client.get(&url).send() {
            answer = Some((response.status().as_u16(), response.text().unwrap_or_default()));
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().ok();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (status, body) = answer.unwrap_or_else(|| panic!("mayfly-sts from the image never answered:\n{stderr}"));
    assert_eq!(status, 200, "{body}\n{stderr}");
    assert!(body.starts_with("ready"), "{body}");
}
