//! A real mosquitto broker with password authentication on a free 127.0.0.1 port.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{ServiceProcess, free_port, require_program};
use crate::test_ca::TestCa;

/// A mosquitto broker. Users are created with [`Mosquitto::add_user`] before [`Mosquitto::start`];
/// persistence is on, so a broker stopped and started again keeps retained messages and
/// queued QoS 1 messages of persistent sessions.
#[derive(Debug)]
pub struct Mosquitto {
    dir: tempfile::TempDir,
    port: u16,
    users: Vec<(String, String)>,
    acl: Option<String>,
    tls: Option<MosquittoTls>,
    /// `max_inflight_messages` (mosquitto's default is 20).
    max_inflight: Option<u32>,
    /// The dynamic security plugin's admin login, when the plugin is loaded.
    dynsec: Option<(String, String)>,
    process: Option<ServiceProcess>,
}

/// Where Debian's mosquitto 2.0 installs the dynamic security plugin.
const DYNSEC_PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so";

/// The TLS listener's test CA and whether clients must present a certificate from it.
#[derive(Debug)]
pub struct MosquittoTls {
    pub ca: TestCa,
    pub require_client_certificate: bool,
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
            tls: None,
            max_inflight: None,
            dynsec: None,
            process: None,
        }
    }

    /// Loads mosquitto's dynamic security plugin with a configuration file of its own, made by
    /// `mosquitto_ctrl dynsec init` with the admin login `admin`/`password`. Clients and roles
    /// are then created over `$CONTROL/dynamic-security/v1` ([`Mosquitto::dynsec`]).
    pub fn with_dynamic_security(mut self, admin: &str, password: &str) -> Self {
        assert!(
            Path::new(DYNSEC_PLUGIN).exists(),
            "{DYNSEC_PLUGIN} is missing: install Debian's mosquitto (2.0 ships the plugin)"
        );
        let file = self.dir.path().join("dynamic-security.json");
        let status = Command::new(require_program("mosquitto_ctrl", "mosquitto-clients"))
            .args(["dynsec", "init"])
            .arg(&file)
            .args([admin, password])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run mosquitto_ctrl dynsec init");
        assert!(status.success(), "mosquitto_ctrl dynsec init failed");
        self.dynsec = Some((admin.to_owned(), password.to_owned()));
        self
    }

    /// The dynamic security admin login, when the plugin is loaded.
    pub fn dynsec_admin(&self) -> Option<(&str, &str)> {
        self.dynsec
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// Runs `mosquitto_ctrl ... dynsec <args>` as the admin against the running broker.
    pub fn dynsec(&self, args: &[&str]) {
        let (admin, password) = self
            .dynsec_admin()
            .expect("the broker was started with_dynamic_security");
        let out = Command::new(require_program("mosquitto_ctrl", "mosquitto-clients"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", admin, "-P", password, "dynsec"])
            .args(args)
            .output()
            .expect("run mosquitto_ctrl");
        assert!(
            out.status.success(),
            "mosquitto_ctrl dynsec {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A dynamic-security login for the fleet service of `fleet`: every topic of the fleet,
    /// as docs/operations.md tells operators to create it.
    pub fn dynsec_fleet_login(&self, fleet: &str, user: &str, password: &str) {
        let role = format!("edgefleet-fleet-{fleet}");
        let topics = format!("edgefleet/{fleet}/#");
        self.dynsec(&["createRole", &role]);
        self.dynsec(&["addRoleACL", &role, "publishClientSend", &topics, "allow"]);
        self.dynsec(&["addRoleACL", &role, "subscribePattern", &topics, "allow"]);
        self.dynsec(&["createClient", user, "-p", password]);
        self.dynsec(&["addClientRole", user, &role]);
    }

    /// How many QoS 1 messages the broker sends a client before it acknowledges them.
    pub fn with_max_inflight(mut self, messages: u32) -> Self {
        self.max_inflight = Some(messages);
        self
    }

    pub fn add_user(mut self, username: &str, password: &str) -> Self {
        self.users.push((username.to_owned(), password.to_owned()));
        self
    }

    /// Adds a user to the running broker (mosquitto re-reads its password file on SIGHUP).
    pub fn add_user_live(&mut self, username: &str, password: &str) {
        self.users.push((username.to_owned(), password.to_owned()));
        let status = Command::new(require_program("mosquitto_passwd", "mosquitto"))
            .arg("-b")
            .arg(self.dir.path().join("passwd"))
            .args([username, password])
            .status()
            .expect("run mosquitto_passwd");
        assert!(status.success(), "mosquitto_passwd failed for {username}");
        if let Some(pid) = self.process.as_ref().and_then(ServiceProcess::pid) {
            let _ = Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status();
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Restricts topics with a mosquitto ACL file (see mosquitto.conf(5), `acl_file`).
    pub fn with_acl(mut self, acl: &str) -> Self {
        self.acl = Some(acl.to_owned());
        self
    }

    /// Serves MQTT over TLS only, with a server certificate from a new test CA; with
    /// `require_client_certificate`, clients must also present a certificate from that CA.
    pub fn with_tls(mut self, require_client_certificate: bool) -> Self {
        let ca = TestCa::new(&self.dir.path().join("tls"));
        ca.server("broker");
        self.tls = Some(MosquittoTls {
            ca,
            require_client_certificate,
        });
        self
    }

    pub fn tls(&self) -> Option<&MosquittoTls> {
        self.tls.as_ref()
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
        if let Some(tls) = &self.tls {
            let dir = self.dir.path().join("tls");
            conf.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                dir.join("ca.crt").display(),
                dir.join("broker.crt").display(),
                dir.join("broker.key").display(),
                tls.require_client_certificate
            ));
        }
        if self.dynsec.is_some() {
            conf.push_str(&format!(
                "plugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {}\n",
                dir.join("dynamic-security.json").display()
            ));
        }
        if let Some(messages) = self.max_inflight {
            conf.push_str(&format!("max_inflight_messages {messages}\n"));
        }
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

    /// `mqtt://127.0.0.1:<port>`, or `mqtts://` for the TLS variant.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Connection arguments for mosquitto_pub/mosquitto_sub.
    fn client_args(&self, user: &str, password: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-u",
            user,
            "-P",
            password,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(tls) = &self.tls {
            args.push("--cafile".into());
            args.push(tls.ca.ca_file().display().to_string());
            if tls.require_client_certificate {
                let (crt, key) = tls.ca.issue("cli", &["cli"]);
                args.extend([
                    "--cert".into(),
                    crt.display().to_string(),
                    "--key".into(),
                    key.display().to_string(),
                ]);
            }
        }
        args
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
        cmd.args(self.client_args(user, password))
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
        self.mosquitto_sub(user, password, &[], topic, count, timeout_secs)
    }

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
        self.mosquitto_sub(
            user,
            password,
            &["-c", "-i", client_id, "-q", "1"],
            topic,
            count,
            timeout_secs,
        )
    }

    fn mosquitto_sub(
        &self,
        user: &str,
        password: &str,
        session: &[&str],
        topic: &str,
        count: usize,
        timeout_secs: u32,
    ) -> Vec<String> {
        let out = Command::new(require_program("mosquitto_sub", "mosquitto-clients"))
            .args(self.client_args(user, password))
            .args(session)
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

impl Default for Mosquitto {
    fn default() -> Self {
        Self::new()
    }
}
