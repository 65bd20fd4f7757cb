//! A real PostgreSQL server on a private data directory and a loopback port, for the
//! replicated exchange's tests. PostgreSQL refuses to run as root, so under root it runs as
//! the `postgres` user the Debian package creates, in a directory that user owns.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) PostgreSQL; stopped and its directory removed on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Settings given to `postgres` on each start (`-c name=value`).
    settings: Vec<String>,
    child: Option<Child>,
}

impl Postgres {
    /// Creates a cluster (trust authentication, loopback only) and starts it.
    pub fn start() -> Self {
        Self::create(None)
    }

    /// Like [`Postgres::start`], also accepting TLS with this certificate and key (PEM).
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        Self::create(Some((cert, key)))
    }

    fn create(tls: Option<(&Path, &Path)>) -> Self {
        let bin = bin_dir().expect("PostgreSQL's `initdb` and `postgres` are installed");
        let dir = tempfile::Builder::new().prefix("mayfly-pg").tempdir().expect("temp dir");
        if is_root() {
            let status = Command::new("chown").arg("-R").arg("postgres:").arg(dir.path()).status().expect("chown");
            assert!(status.success(), "chown the data directory to `postgres`");
        }
        let output = as_owner(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.path().join("data"))
            .output()
            .expect("initdb runs");
        assert!(output.status.success(), "initdb: {}", String::from_utf8_lossy(&output.stderr));
        let mut settings = vec!["fsync=off".to_owned()];
        if let Some((cert, key)) = tls {
            // PostgreSQL reads its key only if its owner alone may.
            let (cert_copy, key_copy) = (dir.path().join("server.pem"), dir.path().join("server-key.pem"));
            std::fs::copy(cert, &cert_copy).expect("copy the certificate");
            std::fs::copy(key, &key_copy).expect("copy the key");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_copy, std::fs::Permissions::from_mode(0o600)).expect("chmod the key");
            if is_root() {
                let status =
                    Command::new("chown").arg("postgres:").arg(&cert_copy).arg(&key_copy).status().expect("chown");
                assert!(status.success(), "chown the key to `postgres`");
            }
            settings.push("ssl=on".to_owned());
            settings.push(format!("ssl_cert_file={}", cert_copy.display()));
            settings.push(format!("ssl_key_file={}", key_copy.display()));
        }
        let mut postgres = Self { dir, bin, port: crate::free_port(), settings, child: None };
        postgres.resume();
        postgres
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`, without TLS.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    /// The URL over TLS only, trusting the CA certificate `ca`.
    pub fn tls_url(&self, ca: &Path) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=require&sslrootcert={}", self.port, ca.display())
    }

    /// Stops the server (fast shutdown: connections are cut) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = as_owner(&self.bin.join("pg_ctl"))
                .args(["stop", "-m", "fast", "-w", "-D"])
                .arg(self.dir.path().join("data"))
                .stdout(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }

    /// What `psql` prints for `query` (unaligned, tuples only), run as the superuser.
    pub fn psql(&self, query: &str) -> String {
        // `psql` may be elsewhere than `postgres` (then on `PATH`).
        let beside = self.bin.join("psql");
        let psql = if beside.is_file() { beside } else { PathBuf::from("psql") };
        let output = Command::new(psql)
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-p"])
            .arg(self.port.to_string())
            .args(["-c", query])
            .output()
            .expect("psql runs");
        assert!(output.status.success(), "psql: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Starts the server again on the same port and data, and waits until it accepts
    /// connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is already running");
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).expect("log");
        let child = as_owner(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(self.settings.iter().flat_map(|setting| ["-c", setting]))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
            if log.contains("ready to accept connections") {
                return;
            }
            let exited = self.child.as_mut().is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_some()));
            assert!(!exited && Instant::now() < deadline, "PostgreSQL did not start: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether PostgreSQL is installed; like [`crate::require_tool`], a failure under CI.
pub fn require() -> bool {
    let found = bin_dir().is_some();
    if !found {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "PostgreSQL is required in CI but is not installed");
        eprintln!("\n!!!!! SKIPPED: PostgreSQL is not installed; this test needs it !!!!!\n");
    }
    found
}

/// Where `initdb` and `postgres` are: on `PATH`, else Debian's newest
/// `/usr/lib/postgresql/VERSION/bin`.
pub fn bin_dir() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The command, run as `postgres` when this process is root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}
