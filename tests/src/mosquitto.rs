//! A real mosquitto broker with password authentication on a free 127.0.0.1 port.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{ServiceProcess, free_port, require_program};

/// A mosquitto broker. Users are created with [`Mosquitto::add_user`] before [`Mosquitto::start`];
/// persistence is on, so a broker stopped and started again keeps retained messages and
/// queued QoS 1 messages of persistent sessions.
#[derive(Debug)]
pub struct Mosquitto {
    dir: tempfile::TempDir,
    port: u16,
    users: Vec<(String, String)>,
    acl: Option<String>,
    process: Option<ServiceProcess>,
}

impl Mosquitto {
    /// A broker configuration in a new temp dir; nothing runs until [`Mosquitto::start`].
    pub fn new() -> Self {
        require_program("mosquitto", "mosquitto");
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            users: Vec::new(),
            acl: None,
            process: None,
        }
    }

    pub fn add_user(mut self, username: &str, password: &str) -> Self {
        self.users.push((username.to_owned(), password.to_owned()));
        self
    }

    /// Restricts topics with a mosquitto ACL file (see mosquitto.conf(5), `acl_file`).
    pub fn with_acl(mut self, acl: &str) -> Self {
        self.acl = Some(acl.to_owned());
        self
    }

    /// Writes the configuration and starts the broker; returns once it accepts connections.
    pub fn start(mut self) -> Self {
        self.write_config();
        self.restart();
        self
    }

    fn write_config(&self) {
        let dir = self.dir.path();
        let passwd = dir.join("passwd");
        std::fs::write(&passwd, "").expect("write passwd");
        for (user, password) in &self.users {
            let status = Command::new(require_program("mosquitto_passwd", "mosquitto"))
                .arg("-b")
                .arg(&passwd)
                .args([user, password])
                .status()
                .expect("run mosquitto_passwd");
            assert!(status.success(), "mosquitto_passwd failed for {user}");
        }
        let mut conf = format!(
            "# Written by the Edgefleet test harness.\n\
             user root\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous false\n\
             password_file {passwd}\n\
             persistence true\n\
             persistence_location {dir}/\n\
             autosave_interval 1\n\
             max_queued_messages 0\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n",
            port = self.port,
            passwd = passwd.display(),
            dir = dir.display()
        );
        if let Some(acl) = &self.acl {
            let path = dir.join("acl");
            std::fs::write(&path, acl).expect("write acl");
            conf.push_str(&format!("acl_file {}\n", path.display()));
        }
        std::fs::write(self.config_path(), conf).expect("write mosquitto.conf");
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    /// Starts the broker again after [`Mosquitto::stop`], on the same port with the same data.
    pub fn restart(&mut self) {
        let mut command = Command::new(require_program("mosquitto", "mosquitto"));
        command.arg("-c").arg(self.config_path());
        self.process = Some(ServiceProcess::spawn(
            "mosquitto",
            command,
            &self.dir.path().join("mosquitto.log"),
            self.port,
        ));
    }

    /// Stops the broker (SIGTERM, so it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `mosquitto_pub` as `user` (an independent client to check what crosses the wire).
    pub fn publish(
        &self,
        user: &str,
        password: &str,
        topic: &str,
        payload: &str,
        retain: bool,
    ) -> bool {
        let mut cmd = Command::new(require_program("mosquitto_pub", "mosquitto-clients"));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-u",
            user,
            "-P",
            password,
        ])
        .args(["-q", "1", "-t", topic, "-m", payload]);
        if retain {
            cmd.arg("-r");
        }
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    /// Runs `mosquitto_sub` as `user` and returns up to `count` messages (`topic payload`
    /// lines) received within `timeout_secs`.
    pub fn subscribe(
        &self,
        user: &str,
        password: &str,
        topic: &str,
        count: usize,
        timeout_secs: u32,
    ) -> Vec<String> {
        let out = Command::new(require_program("mosquitto_sub", "mosquitto-clients"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-u",
                user,
                "-P",
                password,
            ])
            .args([
                "-t",
                topic,
                "-v",
                "-C",
                &count.to_string(),
                "-W",
                &timeout_secs.to_string(),
            ])
            .output()
            .expect("run mosquitto_sub");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Mosquitto {
    /// Runs `mosquitto_sub` with a persistent session (`client_id`, clean session off, QoS 1):
    /// messages published while it is away are queued by the broker (across broker restarts,
    /// persistence is on) and delivered on the next call with the same `client_id`.
    pub fn subscribe_session(
        &self,
        user: &str,
        password: &str,
        client_id: &str,
        topic: &str,
        count: usize,
        timeout_secs: u32,
    ) -> Vec<String> {
        let out = Command::new(require_program("mosquitto_sub", "mosquitto-clients"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-u",
                user,
                "-P",
                password,
            ])
            .args(["-c", "-i", client_id, "-q", "1", "-t", topic, "-v"])
            .args(["-C", &count.to_string(), "-W", &timeout_secs.to_string()])
            .output()
            .expect("run mosquitto_sub");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Default for Mosquitto {
    fn default() -> Self {
        Self::new()
    }
}
