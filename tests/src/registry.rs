//! A real CNCF distribution registry (Debian `docker-registry`) with htpasswd authentication,
//! over HTTP or over TLS with a test CA generated for the occasion.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{ServiceProcess, free_port, require_program};

/// The test CA and server certificate of a TLS registry.
#[derive(Debug)]
pub struct RegistryTls {
    /// PEM of the CA that signed the registry's certificate (what clients must trust).
    pub ca_pem: String,
    /// A directory holding `ca.crt`, as `skopeo --dest-cert-dir` and Docker's
    /// `certs.d/<host>` expect it.
    pub cert_dir: PathBuf,
}

/// A running registry. Dropping it stops the process and removes its storage.
#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    username: String,
    password: String,
    tls: Option<RegistryTls>,
    process: ServiceProcess,
}

impl Registry {
    /// A registry over plain HTTP accepting only `username`/`password`.
    pub fn start(username: &str, password: &str) -> Self {
        Self::start_inner(username, password, false)
    }

    /// A registry over HTTPS with a certificate for 127.0.0.1 and localhost signed by a new
    /// test CA, accepting only `username`/`password`.
    pub fn start_tls(username: &str, password: &str) -> Self {
        Self::start_inner(username, password, true)
    }

    fn start_inner(username: &str, password: &str, tls: bool) -> Self {
        require_program("docker-registry", "docker-registry");
        let htpasswd = require_program("htpasswd", "apache2-utils");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();

        let out = Command::new(htpasswd)
            .args(["-Bbn", username, password])
            .output()
            .expect("run htpasswd");
        assert!(
            out.status.success(),
            "htpasswd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let htpasswd_path = dir.path().join("htpasswd");
        std::fs::write(&htpasswd_path, &out.stdout).expect("write htpasswd");

        let tls = tls.then(|| write_test_certificates(dir.path()));
        let tls_config = match &tls {
            Some(_) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display()
            ),
            None => String::new(),
        };
        let storage = dir.path().join("storage");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: edgefleet-test-secret\n{tls_config}\
             auth:\n  htpasswd:\n    realm: edgefleet-test\n    path: {htpasswd}\n",
            storage = storage.display(),
            htpasswd = htpasswd_path.display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");

        let process = Self::spawn(dir.path(), port);
        Self {
            dir,
            port,
            username: username.to_owned(),
            password: password.to_owned(),
            tls,
            process,
        }
    }

    fn spawn(dir: &Path, port: u16) -> ServiceProcess {
        let mut command = Command::new(require_program("docker-registry", "docker-registry"));
        command.arg("serve").arg(dir.join("config.yml"));
        ServiceProcess::spawn("docker-registry", command, &dir.join("registry.log"), port)
    }

    /// Changes the user's password (as an operator rotating it would) and restarts the
    /// registry on the same port with the same storage.
    pub fn set_password(&mut self, password: &str) {
        let out = Command::new(require_program("htpasswd", "apache2-utils"))
            .args(["-Bbn", &self.username, password])
            .output()
            .expect("run htpasswd");
        std::fs::write(self.dir.path().join("htpasswd"), &out.stdout).expect("write htpasswd");
        self.password = password.to_owned();
        self.process.stop();
        self.process = Self::spawn(self.dir.path(), self.port);
    }

    /// Stops the registry process (its storage stays): clients find nothing listening.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// `127.0.0.1:<port>`: the registry part of image references.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>` or `https://...` for the TLS variant.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.address())
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn tls(&self) -> Option<&RegistryTls> {
        self.tls.as_ref()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A blocking HTTP client that trusts this registry's test CA.
    pub fn http_client(&self) -> reqwest::blocking::Client {
        crate::install_crypto_provider();
        let mut builder = reqwest::blocking::Client::builder();
        if let Some(tls) = &self.tls {
            let ca = reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).expect("test CA PEM");
            builder = builder.add_root_certificate(ca);
        }
        builder.build().expect("HTTP client")
    }
}

/// Writes the registry's server certificate, signed by a new test CA, under `dir/certs`.
fn write_test_certificates(dir: &Path) -> RegistryTls {
    let cert_dir = dir.join("certs");
    let ca = crate::test_ca::TestCa::new(&cert_dir);
    let (crt, key) = ca.server("server");
    std::fs::rename(&crt, dir.join("server.crt")).expect("move server.crt");
    std::fs::rename(&key, dir.join("server.key")).expect("move server.key");
    RegistryTls {
        ca_pem: ca.ca_pem.clone(),
        cert_dir,
    }
}
