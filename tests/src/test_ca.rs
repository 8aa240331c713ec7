//! A certificate authority made for one test: server certificates for 127.0.0.1 and
//! localhost, and client certificates, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A test CA whose certificate is at [`TestCa::ca_file`].
pub struct TestCa {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    pub ca_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA writing its files under `dir` (`ca.crt` first).
    pub fn new(dir: &Path) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Edgefleet test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::create_dir_all(dir).expect("CA dir");
        std::fs::write(dir.join("ca.crt"), cert.pem()).expect("write ca.crt");
        Self {
            dir: dir.to_owned(),
            issuer: Issuer::new(params, key),
            ca_pem: cert.pem(),
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Writes `<name>.crt` and `<name>.key` for `subject_alt_names`; returns their paths.
    pub fn issue(&self, name: &str, subject_alt_names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = subject_alt_names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        let (crt, pem_key) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&crt, cert.pem()).expect("write certificate");
        std::fs::write(&pem_key, key.serialize_pem()).expect("write key");
        (crt, pem_key)
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue(name, &["127.0.0.1", "localhost"])
    }
}
