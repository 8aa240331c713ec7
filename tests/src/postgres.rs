//! A real PostgreSQL server (Debian's `postgresql`) in a temporary directory on a free
//! 127.0.0.1 port, for the fleet's PostgreSQL store. `initdb` refuses to run as root, so as
//! root the server runs as the `postgres` user the package creates.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{ServiceProcess, free_port};

/// A PostgreSQL server with a trusted user `edgefleet` and a database `fleet`; stopped by
/// PID when dropped.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    process: Option<ServiceProcess>,
}

/// The directory of PostgreSQL's programs: where `initdb` on PATH is, or Debian's
/// `/usr/lib/postgresql/<version>/bin` (the newest).
fn server_bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
            .find_map(|initdb| initdb.parent().map(Path::to_owned))
    });
    if let Some(found) = on_path {
        return found;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's server (initdb, postgres) is not installed: run `apt-get install -y postgresql` (the tests need the real service)"
        ),
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// `program` run as the `postgres` user when the tests run as root.
fn server_command(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Self {
        let bin = server_bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "the temp dir cannot be given to the `postgres` user"
            );
        }
        // The temp dir's parent must be reachable for the server's user.
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700));
        let data = dir.path().join("data");
        let out = server_command(&bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=edgefleet",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg("-D")
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut postgres = Self {
            port: free_port(),
            dir,
            process: None,
        };
        postgres.launch(&bin);
        postgres.wait_until_ready(&bin);
        postgres.psql("postgres", "CREATE DATABASE fleet");
        postgres
    }

    fn launch(&mut self, bin: &Path) {
        let mut command = server_command(&bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            // Test data need not survive a power cut; every test's does survive a kill.
            .args(["-c", "fsync=off", "-c", "max_connections=200"]);
        let log = self.dir.path().join("postgres.log");
        self.process = Some(ServiceProcess::spawn("postgres", command, &log, self.port));
    }

    /// Waits until the server accepts queries (it listens before it has started up).
    fn wait_until_ready(&self, bin: &Path) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL did not accept queries within 30 s; its log:\n{}",
                std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// `postgres://edgefleet@127.0.0.1:<port>/fleet`.
    pub fn url(&self) -> String {
        format!("postgres://edgefleet@127.0.0.1:{}/fleet", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `sql` in the fleet's database and returns what it printed (unaligned, tuples
    /// only).
    pub fn query(&self, sql: &str) -> String {
        self.psql("fleet", sql)
    }

    /// Runs `sql` in a transaction left open: the rows it locks (`SELECT … FOR UPDATE`) stay
    /// locked until [`OpenTransaction::commit`].
    pub fn open_transaction(&self, sql: &str) -> OpenTransaction {
        use std::io::Write as _;
        let mut child = Command::new(server_bin_dir().join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "edgefleet",
                "-d",
                "fleet",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run psql");
        let mut input = child.stdin.take().expect("psql's stdin");
        writeln!(input, "BEGIN;\n{sql};").expect("write to psql");
        let open = OpenTransaction {
            child,
            input: Some(input),
        };
        crate::wait_for(
            "the transaction holds its locks",
            std::time::Duration::from_secs(30),
            || {
                (self.query(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'",
                ) != "0")
                    .then_some(())
            },
        );
        open
    }

    fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(server_bin_dir().join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "edgefleet", "-d", database, "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// A psql session with a transaction open (see [`Postgres::open_transaction`]); killed when
/// dropped, which rolls it back.
#[derive(Debug)]
pub struct OpenTransaction {
    child: std::process::Child,
    input: Option<std::process::ChildStdin>,
}

impl OpenTransaction {
    pub fn commit(mut self) {
        use std::io::Write as _;
        if let Some(mut input) = self.input.take() {
            writeln!(input, "COMMIT;").expect("write to psql");
        }
        let status = self.child.wait().expect("psql");
        assert!(status.success(), "psql: {status}");
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if self.input.is_some() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for clients to leave);
        // `stop` then waits for it, killing it after 5 s.
        if let Some(mut process) = self.process.take() {
            if let Some(pid) = process.pid() {
                let _ = Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status();
            }
            process.stop();
        }
    }
}
