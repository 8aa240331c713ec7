//! The fleet API over HTTPS (`edgefleet serve --tls-cert --tls-key`), with the real service
//! and the real CLI: the CLI trusts the service through `--ca-file`, refuses it without the
//! right CA, a plain-HTTP client is told to use https://, and a certificate or key that cannot
//! be used stops the service at start with a message naming the file. The embedded broker's
//! warning is checked here too (these tests run the service with it).

use std::process::{Command, Output};

use edgefleet_tests::{FleetProcess, TestCa, free_port, workspace_binary};

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `edgefleet <args>` against `server` with the fleet's token and nothing else from the
/// environment that would choose a CA.
fn cli(fleet: &FleetProcess, server: &str, args: &[&str]) -> Output {
    Command::new(workspace_binary("edgefleet"))
        .args(args)
        .env("EDGEFLEET_SERVER", server)
        .env("EDGEFLEET_TOKEN", &fleet.token)
        .env_remove("EDGEFLEET_CA_FILE")
        .output()
        .expect("run edgefleet")
}

#[test]
fn the_cli_trusts_the_https_fleet_only_through_its_ca_and_plain_http_is_told_to_use_https() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(&dir.path().join("ca"));
    let (cert, key) = ca.server("fleet");
    let other_ca = TestCa::new(&dir.path().join("other-ca"));
    let fleet = FleetProcess::start_embedded_https(
        workspace_binary("edgefleet"),
        free_port(),
        "secure",
        (&cert, &key),
    );
    let server = fleet.url();
    assert!(server.starts_with("https://"), "{server}");
    let ca_file = ca.ca_file().display().to_string();

    // With the CA that signed the service's certificate, every command works.
    let info = cli(&fleet, &server, &["--ca-file", &ca_file, "device", "list"]);
    assert!(info.status.success(), "{}", text(&info));
    let dashboard = cli(&fleet, &server, &["--ca-file", &ca_file, "dashboard"]);
    assert!(dashboard.status.success(), "{}", text(&dashboard));
    assert_eq!(
        String::from_utf8_lossy(&dashboard.stdout).trim(),
        format!("{server}/ui/login#token={}", fleet.token)
    );
    // The same CA from the environment.
    let from_env = Command::new(workspace_binary("edgefleet"))
        .args(["device", "list"])
        .env("EDGEFLEET_SERVER", &server)
        .env("EDGEFLEET_TOKEN", &fleet.token)
        .env("EDGEFLEET_CA_FILE", &ca_file)
        .output()
        .expect("run edgefleet");
    assert!(from_env.status.success(), "{}", text(&from_env));

    // Without it (the system roots) and with another CA, the service is refused by name.
    let other_file = other_ca.ca_file().display().to_string();
    for args in [
        vec!["device", "list"],
        vec!["--ca-file", other_file.as_str(), "device", "list"],
    ] {
        let refused = cli(&fleet, &server, &args);
        assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(&format!("the fleet service at {server}"))
                && stderr.contains("does not trust")
                && stderr.contains("--ca-file"),
            "{}",
            text(&refused)
        );
    }

    // A plain-HTTP client on the HTTPS port is answered, in plain HTTP, where to go.
    let plain = format!("http://127.0.0.1:{}", fleet.port());
    let refused = cli(&fleet, &plain, &["device", "list"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("HTTPS only") && stderr.contains(&server),
        "{}",
        text(&refused)
    );
    // The service still serves HTTPS after all of that.
    let again = cli(&fleet, &server, &["--ca-file", &ca_file, "device", "list"]);
    assert!(again.status.success(), "{}", text(&again));
    // Its embedded broker says, once, what it cannot keep apart.
    let log = fleet.log();
    assert_eq!(
        log.matches("the embedded MQTT broker has no per-topic rules")
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains(&server),
        "the service logs its https:// address: {log}"
    );
}

#[test]
fn a_certificate_or_key_that_cannot_be_used_stops_the_service_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(&dir.path().join("ca"));
    let (cert, _key) = ca.server("fleet");
    let (_other_cert, other_key) = ca.server("other");
    let missing = dir.path().join("missing.key");
    let serve = |cert: &std::path::Path, key: &std::path::Path| {
        Command::new(workspace_binary("edgefleet"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args([
                "--embedded-broker-listen",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .expect("run edgefleet serve")
    };

    let out = serve(&cert, &missing);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr.contains(&format!("--tls-key {}", missing.display())),
        "{}",
        text(&out)
    );

    let out = serve(&cert, &other_key);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr.contains(&format!(
            "--tls-key {} does not belong to the certificate in --tls-cert {}",
            other_key.display(),
            cert.display()
        )),
        "{}",
        text(&out)
    );

    // A key given as the certificate holds no certificate.
    let out = serve(&other_key, &other_key);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr.contains(&format!(
            "--tls-cert {} holds no PEM certificate",
            other_key.display()
        )),
        "{}",
        text(&out)
    );
}
