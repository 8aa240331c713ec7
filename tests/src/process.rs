//! Child processes of real services: started, awaited until they accept connections, stopped
//! by PID.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails the test with the Debian package to install when `program` is not on PATH.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => path,
        None => panic!(
            "`{program}` is not installed: run `apt-get install -y {package}` (the tests need the real service)"
        ),
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface must accept a listener")
}

/// A running service process. Dropping it stops the process (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ServiceProcess {
    /// Spawns `command` with stdout and stderr appended to `log`, then waits until `port`
    /// accepts TCP connections.
    pub fn spawn(name: &str, command: Command, log: &Path, port: u16) -> Self {
        let mut service = Self::spawn_unchecked(name, command, log);
        service.wait_for_port(port);
        service
    }

    /// Spawns `command` with output appended to `log`, without waiting for a port.
    pub fn spawn_unchecked(name: &str, mut command: Command, log: &Path) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("service log file must be writable");
        let err = out.try_clone().expect("log file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        }
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_for_port(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited with {status} before listening on port {port}; its log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "{} did not listen on port {port} within 20 s; its log:\n{}",
            self.name,
            self.log_text()
        );
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the process: SIGTERM, and SIGKILL if it has not exited after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
