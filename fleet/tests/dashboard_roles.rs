//! The dashboard with named tokens, in a real browser (headless Chromium): each role signs in
//! with its own token, sees who it is signed in as and only the pages and actions its role
//! may use; the server refuses the rest (and audits the attempt), and revoking a token ends
//! its sessions. Screenshots go to target/test-artifacts/dashboard-roles/.

#![allow(
    clippy::too_many_lines,
    reason = "an end-to-end test is one scenario, read from top to bottom"
)]

use edgefleet_common::fleet_api::{AuditEntry, TokenView};
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_tests::{
    Browser, FleetProcess, Mosquitto, install_crypto_provider, repo_root, workspace_binary,
};
use reqwest::StatusCode;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::blocking::Client {
    install_crypto_provider();
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

/// The session cookie the dashboard sets for `token`.
fn sign_in(base: &str, token: &str) -> String {
    let response = client()
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        // A token is `eft_` and hex: nothing to escape.
        .body(format!("token={token}"))
        .send()
        .expect("sign in");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();
    assert!(!cookie.contains(token), "the token stays out of the cookie");
    cookie
}

fn post(base: &str, path: &str, cookie: &str) -> (StatusCode, String) {
    let response = client()
        .post(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .expect("POST");
    (response.status(), response.text().unwrap_or_default())
}

fn token_names(fleet: &FleetProcess) -> Vec<String> {
    let tokens: Vec<TokenView> =
        serde_json::from_str(&fleet.ok(&["token", "list", "--output", "json"])).expect("JSON");
    tokens.into_iter().map(|t| t.name).collect()
}

#[test]
fn each_role_signs_in_with_its_token_sees_only_what_it_may_do_and_the_server_refuses_the_rest() {
    let broker = Mosquitto::new().add_user("fleet", "fleet-pass").start();
    let fleet = FleetProcess::start(
        workspace_binary("edgefleet"),
        &broker,
        "fleet",
        "fleet-pass",
        "plant",
    );
    let create = |name: &str, role: &str| {
        fleet
            .ok(&["token", "create", name, "--role", role])
            .trim()
            .to_owned()
    };
    let (vera, oscar, ada) = (
        create("vera", "viewer"),
        create("oscar", "operator"),
        create("ada", "admin"),
    );
    let key = DeviceIdentity::generate().public_key().to_string();
    let out = fleet.cli_as(&ada, &["device", "add", "gw-1", "--public-key", &key], None);
    assert!(out.status.success(), "{out:?}");
    let base = fleet.url();
    let artifacts = repo_root().join("target/test-artifacts/dashboard-roles");

    // Each token signs in through the link `edgefleet dashboard` prints and sees its name
    // and role; only the admin sees the tokens page.
    let mut browsers = Vec::new();
    for (name, role, token) in [
        ("vera", "viewer", &vera),
        ("oscar", "operator", &oscar),
        ("ada", "admin", &ada),
    ] {
        let link = fleet.cli_as(token, &["dashboard"], None).stdout;
        let link = String::from_utf8_lossy(&link).trim().to_owned();
        assert_eq!(link, format!("{base}/ui/login#token={token}"));
        let browser = Browser::new();
        let overview = browser.dom(&link);
        assert!(
            overview.contains(&format!(
                r#"<span class="out" id="signed-in">{name} ({role})</span>"#
            )),
            "{name}: {overview}"
        );
        assert!(
            !overview.contains(token.as_str()),
            "the token stays out of the page"
        );
        assert_eq!(
            overview.contains(r#"href="/ui/tokens""#),
            role == "admin",
            "{name}: the tokens page in the navigation"
        );
        // Every role reads the audit log: who changed what.
        let audit = browser.dom(&format!("{base}/ui/audit"));
        for text in [
            "Audit log",
            "ada",
            "PUT <code>/v1/devices/gw-1</code>",
            "device/gw-1",
        ] {
            assert!(audit.contains(text), "{name}: {text:?} not in {audit}");
        }
        let tokens = browser.dom(&format!("{base}/ui/tokens"));
        if role == "admin" {
            for text in [
                "vera",
                "oscar",
                "viewer",
                "operator",
                r#"action="/ui/tokens/vera/revoke""#,
            ] {
                assert!(tokens.contains(text), "{text:?} not in {tokens}");
            }
            for token in [&vera, &oscar, &ada] {
                assert!(
                    !tokens.contains(token.as_str()),
                    "a token on the tokens page"
                );
            }
            browser.screenshot(&format!("{base}/ui/tokens"), &artifacts.join("tokens.png"));
            browser.screenshot(&format!("{base}/ui/audit"), &artifacts.join("audit.png"));
        } else {
            assert!(
                tokens.contains(&format!(
                    "token {name} has role {role}; the token list needs role admin"
                )),
                "{name}: {tokens}"
            );
        }
        browsers.push(browser);
    }

    // The server refuses what a role may not do, whatever the page shows: a viewer's revoke
    // and rollout action, an operator's revoke. Nothing changes, and each attempt is audited.
    let vera_session = sign_in(&base, &vera);
    let oscar_session = sign_in(&base, &oscar);
    for (session, path) in [
        (&vera_session, "/ui/tokens/oscar/revoke"),
        (&vera_session, "/ui/rollouts/line/pause"),
        (&oscar_session, "/ui/tokens/vera/revoke"),
    ] {
        let (status, body) = post(&base, path, session);
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("needs role"), "{body}");
    }
    assert_eq!(token_names(&fleet), ["admin", "ada", "oscar", "vera"]);
    let refused: Vec<AuditEntry> =
        serde_json::from_str(&fleet.ok(&["audit", "list", "--token", "vera", "--output", "json"]))
            .expect("JSON");
    let routes: Vec<(&str, u16)> = refused
        .iter()
        .map(|e| (e.route.as_str(), e.status))
        .collect();
    assert_eq!(
        routes,
        [
            ("/ui/rollouts/{deployment}/{action}", 403),
            ("/ui/tokens/{name}/revoke", 403)
        ]
    );

    // The admin revokes oscar from the dashboard: audited, and oscar's session ends.
    let ada_session = sign_in(&base, &ada);
    let (status, _) = post(&base, "/ui/tokens/oscar/revoke", &ada_session);
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(token_names(&fleet), ["admin", "ada", "vera"]);
    let revoked: Vec<AuditEntry> =
        serde_json::from_str(&fleet.ok(&["audit", "list", "--token", "ada", "--output", "json"]))
            .expect("JSON");
    assert_eq!(revoked[0].object, "token/oscar");
    assert!(revoked[0].before.is_some() && revoked[0].after.is_none());
    let after = browsers[1].dom(&format!("{base}/ui/"));
    assert!(after.contains("API token"), "oscar is signed out: {after}");
    let (status, _) = post(&base, "/ui/rollouts/line/pause", &oscar_session);
    assert_eq!(status, StatusCode::SEE_OTHER, "to the sign-in page");
}
