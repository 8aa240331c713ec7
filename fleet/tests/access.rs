//! Named tokens and roles against the real `edgefleet serve`, on the embedded store and on
//! PostgreSQL: every route of the router with each role (viewer, operator, admin, the bootstrap
//! admin), a revoked token, a wrong one and none; tokens created and revoked through one
//! replica count on the other at once; and the audit log of changes made by two named tokens,
//! read with `edgefleet audit list`, with no token ever stored or logged in clear.

#![allow(
    clippy::too_many_lines,
    reason = "an end-to-end test is one scenario, read from top to bottom"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use edgefleet_common::fleet_api::{AuditEntry, Role, TokenView};
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_fleet::routes::endpoints::endpoints;
use edgefleet_tests::{
    FleetProcess, Mosquitto, Postgres, http_client, postgres_store, workspace_binary,
};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};

/// Every route and the least role that may call it, as this test expects. The router is built
/// from its own table (`routes::endpoints`); a route added there and not here fails the test.
const EXPECTED: &[(&str, &str, Role)] = &[
    ("GET", "/v1/fleet", Role::Viewer),
    ("GET", "/v1/registries", Role::Viewer),
    ("PUT", "/v1/registries/{name}", Role::Admin),
    ("DELETE", "/v1/registries/{name}", Role::Admin),
    ("GET", "/v1/models", Role::Viewer),
    ("POST", "/v1/models", Role::Admin),
    ("GET", "/v1/models/{name}/{version}", Role::Viewer),
    ("DELETE", "/v1/models/{name}/{version}", Role::Admin),
    ("GET", "/v1/models/{name}/{version}/onnx", Role::Viewer),
    ("POST", "/v1/models/{name}/{version}/package", Role::Admin),
    ("POST", "/v1/models/{name}/{version}/profile", Role::Admin),
    ("GET", "/v1/devices", Role::Viewer),
    ("GET", "/v1/devices/{id}", Role::Viewer),
    ("PUT", "/v1/devices/{id}", Role::Admin),
    ("DELETE", "/v1/devices/{id}", Role::Admin),
    ("POST", "/v1/device-imports", Role::Admin),
    // The device's configuration holds its MQTT password.
    ("GET", "/v1/devices/{id}/config", Role::Admin),
    ("POST", "/v1/devices/{id}/rotate-credentials", Role::Admin),
    ("POST", "/v1/devices/{id}/commands", Role::Operator),
    ("GET", "/v1/deployments", Role::Viewer),
    ("GET", "/v1/deployments/{name}", Role::Viewer),
    ("PUT", "/v1/deployments/{name}", Role::Admin),
    ("DELETE", "/v1/deployments/{name}", Role::Admin),
    ("GET", "/v1/deployments/{name}/history", Role::Viewer),
    ("GET", "/v1/manifests/{device}", Role::Viewer),
    ("GET", "/v1/rollouts/{deployment}", Role::Viewer),
    ("POST", "/v1/rollouts/{deployment}/{action}", Role::Operator),
    ("GET", "/v1/telemetry/{device}", Role::Viewer),
    ("GET", "/v1/bundle", Role::Viewer),
    ("POST", "/v1/telemetry-imports", Role::Admin),
    ("GET", "/v1/tokens", Role::Admin),
    ("POST", "/v1/tokens/{name}", Role::Admin),
    ("DELETE", "/v1/tokens/{name}", Role::Admin),
    ("GET", "/v1/audit", Role::Viewer),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Embedded,
    Postgres,
}

/// A fleet service (or two replicas, on PostgreSQL) behind a real mosquitto.
struct World {
    fleet: FleetProcess,
    second: Option<FleetProcess>,
    postgres: Option<Postgres>,
    _broker: Mosquitto,
}

impl World {
    fn start(store: Store, replicas: usize) -> Self {
        let broker = Mosquitto::new().add_user("fleet", "fleet-pass").start();
        let binary = workspace_binary("edgefleet");
        match store {
            Store::Embedded => Self {
                fleet: FleetProcess::start(binary, &broker, "fleet", "fleet-pass", "plant"),
                second: None,
                postgres: None,
                _broker: broker,
            },
            Store::Postgres => {
                let postgres = Postgres::start();
                let replica = |name: &str| {
                    FleetProcess::start_replica(
                        binary.clone(),
                        &broker,
                        ("fleet", "fleet-pass"),
                        "plant",
                        &postgres.url(),
                        name,
                    )
                };
                Self {
                    fleet: replica("a"),
                    second: (replicas > 1).then(|| replica("b")),
                    postgres: Some(postgres),
                    _broker: broker,
                }
            }
        }
    }

    /// `edgefleet token create NAME --role ROLE` as the bootstrap admin; the token printed.
    fn create_token(fleet: &FleetProcess, name: &str, role: &str) -> String {
        let token = fleet
            .ok(&["token", "create", name, "--role", role])
            .trim()
            .to_owned();
        assert!(
            token.starts_with("eft_") && token.len() == 68,
            "a 256-bit token: {token:?}"
        );
        token
    }
}

/// `path` with each `{param}` filled with a value naming nothing the fleet holds.
fn concrete(path: &str) -> String {
    path.replace("{version}", "1")
        .replace("{action}", "pause")
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "nothing-here"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Sends `method` `path` (a JSON body `{}` for a change) with `token`; the status and body.
fn call(base: &str, method: &str, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let http = http_client();
    let method: reqwest::Method = method.parse().expect("method");
    let mut request = http.request(method.clone(), format!("{base}{path}"));
    if method != reqwest::Method::GET {
        request = request
            .header("content-type", "application/json")
            .body("{}");
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().expect("the service answers");
    let status = response.status();
    (status, response.text().unwrap_or_default())
}

fn get_json<T: serde::de::DeserializeOwned>(fleet: &FleetProcess, args: &[&str]) -> T {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    serde_json::from_str(&fleet.ok(&args)).expect("JSON")
}

#[test]
fn the_router_has_exactly_the_routes_this_test_classifies() {
    let routed: BTreeSet<(String, String, Role)> = endpoints()
        .into_iter()
        .map(|e| (e.method.to_string(), e.path.to_owned(), e.role))
        .collect();
    let expected: BTreeSet<(String, String, Role)> = EXPECTED
        .iter()
        .map(|(m, p, r)| ((*m).to_owned(), (*p).to_owned(), *r))
        .collect();
    assert_eq!(
        routed.difference(&expected).collect::<Vec<_>>(),
        Vec::<&(String, String, Role)>::new(),
        "routes the router has and this test does not classify (or classifies otherwise)"
    );
    assert_eq!(
        expected.difference(&routed).collect::<Vec<_>>(),
        Vec::<&(String, String, Role)>::new(),
        "routes this test expects and the router does not have"
    );
    // Every change has a record to audit; no read has.
    for e in endpoints() {
        assert_eq!(
            e.changes.is_some(),
            e.method != "GET",
            "{} {}",
            e.method,
            e.path
        );
    }
}

#[test]
fn every_route_refuses_a_role_below_its_own_and_a_revoked_wrong_or_missing_token_on_both_stores() {
    for store in [Store::Embedded, Store::Postgres] {
        let world = World::start(store, 1);
        let fleet = &world.fleet;
        let base = fleet.url();
        let viewer = World::create_token(fleet, "eve-viewer", "viewer");
        let operator = World::create_token(fleet, "otto-operator", "operator");
        let admin = World::create_token(fleet, "ada-admin", "admin");
        let revoked = World::create_token(fleet, "rex-revoked", "admin");
        fleet.ok(&["token", "revoke", "rex-revoked"]);

        let callers: [(&str, Option<&str>, Option<Role>); 7] = [
            ("eve-viewer", Some(&viewer), Some(Role::Viewer)),
            ("otto-operator", Some(&operator), Some(Role::Operator)),
            ("ada-admin", Some(&admin), Some(Role::Admin)),
            ("admin", Some(&fleet.token), Some(Role::Admin)),
            ("rex-revoked", Some(&revoked), None),
            ("wrong", Some("eft_not-a-token-of-this-fleet"), None),
            ("none", None, None),
        ];
        let mut refused_changes: BTreeMap<&str, usize> = BTreeMap::new();
        for (method, path, needed) in EXPECTED {
            let concrete = concrete(path);
            for (name, token, role) in &callers {
                let (status, body) = call(&base, method, &concrete, *token);
                let what = format!("{store:?}: {name} {method} {concrete}: {status} {body}");
                match role {
                    None => assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}"),
                    Some(role) if role < needed => {
                        assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
                        for part in [
                            format!("token {name} has role {role}"),
                            format!("needs role {needed}"),
                        ] {
                            assert!(body.contains(&part), "{what}: no {part:?}");
                        }
                        if *method != "GET" {
                            *refused_changes.entry(*name).or_default() += 1;
                        }
                    }
                    Some(_) => assert!(
                        status != StatusCode::UNAUTHORIZED
                            && status != StatusCode::FORBIDDEN
                            && !status.is_server_error(),
                        "{what}"
                    ),
                }
            }
        }

        // The refused attempts changed nothing, and each is in the audit log with its token.
        for list in ["registry", "model", "device", "deployment"] {
            let all: Vec<serde_json::Value> = get_json(fleet, &[list, "list"]);
            assert!(all.is_empty(), "{store:?}: {list}: {all:?}");
        }
        let tokens: Vec<TokenView> = get_json(fleet, &["token", "list"]);
        let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["admin", "ada-admin", "eve-viewer", "otto-operator"],
            "{store:?}"
        );
        for (name, count) in &refused_changes {
            let entries: Vec<AuditEntry> = get_json(
                fleet,
                &["audit", "list", "--token", name, "--limit", "1000"],
            );
            let refused = entries.iter().filter(|e| e.status == 403).count();
            assert_eq!(refused, *count, "{store:?}: {name}'s refused changes");
        }
        assert!(refused_changes["eve-viewer"] > refused_changes["otto-operator"]);
        let log = plain(&fleet.log());
        assert!(
            log.lines().any(|l| l.contains("refused")
                && l.contains("token=eve-viewer")
                && l.contains("needed=admin")),
            "{store:?}: the service log names a refused token:\n{log}"
        );
        // The bootstrap token cannot be revoked through the API, nor can its name be taken.
        let out = fleet.cli(&["token", "revoke", "admin"]);
        assert_eq!(out.status.code(), Some(1), "{store:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("admin-token"));
        let out = fleet.cli(&["token", "create", "admin", "--role", "viewer"]);
        assert_eq!(out.status.code(), Some(1), "{store:?}");
        // A bad name or role is refused with what is wrong.
        let out = fleet.cli(&["token", "create", "a b", "--role", "viewer"]);
        assert_eq!(out.status.code(), Some(1), "{store:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("token name"));
        let out = fleet.cli(&["token", "create", "x", "--role", "root"]);
        assert_eq!(out.status.code(), Some(2), "{store:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("viewer, operator, admin"));
        // A role too low is exit code 4, like a wrong token.
        let out = fleet.cli_as(&viewer, &["token", "list"], None);
        assert_eq!(out.status.code(), Some(4), "{store:?}");
    }
}

#[test]
fn a_token_created_through_one_replica_works_on_the_other_at_once_and_stops_there_once_revoked() {
    let world = World::start(Store::Postgres, 2);
    let (a, b) = (&world.fleet, world.second.as_ref().expect("replica b"));
    let token = World::create_token(a, "ci", "viewer");
    let (status, _) = call(&b.url(), "GET", "/v1/devices", Some(&token));
    assert_eq!(status, StatusCode::OK, "b knows the token a created");
    b.ok(&["token", "revoke", "ci"]);
    let (status, _) = call(&a.url(), "GET", "/v1/devices", Some(&token));
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a refuses what b revoked");
}

/// `log` without its terminal colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every byte under `dir`, file by file (nothing when it does not exist: a replica on
/// PostgreSQL keeps nothing there).
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn changes_by_two_named_tokens_are_listed_by_audit_list_with_each_token_and_the_record_digests() {
    for store in [Store::Embedded, Store::Postgres] {
        let world = World::start(store, 1);
        let fleet = &world.fleet;
        let alice = World::create_token(fleet, "alice", "admin");
        let bob = World::create_token(fleet, "bob", "operator");
        let as_alice = |args: &[&str]| {
            let out = fleet.cli_as(&alice, args, None);
            assert!(out.status.success(), "{args:?}: {out:?}");
        };
        let key = DeviceIdentity::generate().public_key().to_string();
        as_alice(&[
            "device",
            "add",
            "gw-1",
            "--public-key",
            &key,
            "--tag",
            "site=a",
        ]);
        let first_record = world.postgres.as_ref().map(|p| {
            p.query("SELECT value::text FROM records WHERE kind = 'device' AND name = 'gw-1'")
        });
        as_alice(&[
            "device",
            "add",
            "gw-1",
            "--public-key",
            &key,
            "--tag",
            "site=b",
        ]);
        // Bob's role may not remove a device: refused, and recorded.
        let out = fleet.cli_as(&bob, &["device", "remove", "gw-1"], None);
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        let refusal = String::from_utf8_lossy(&out.stderr);
        assert!(
            refusal.contains("token bob has role operator") && refusal.contains("needs role admin"),
            "{refusal}"
        );
        as_alice(&["device", "remove", "gw-1"]);
        let carol = fleet
            .cli_as(
                &alice,
                &["token", "create", "carol", "--role", "viewer"],
                None,
            )
            .stdout;
        let carol = String::from_utf8_lossy(&carol).trim().to_owned();

        let entries: Vec<AuditEntry> = get_json(fleet, &["audit", "list", "--since", "1d"]);
        let mut mine: Vec<&AuditEntry> = entries
            .iter()
            .filter(|e| e.token == "alice" || e.token == "bob")
            .collect();
        mine.reverse();
        let seen: Vec<(&str, &str, &str, u16)> = mine
            .iter()
            .map(|e| {
                (
                    e.token.as_str(),
                    e.method.as_str(),
                    e.object.as_str(),
                    e.status,
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("alice", "PUT", "device/gw-1", 200),
                ("alice", "PUT", "device/gw-1", 200),
                ("bob", "DELETE", "device/gw-1", 403),
                ("alice", "DELETE", "device/gw-1", 200),
                ("alice", "POST", "token/carol", 200),
            ],
            "{store:?}: {entries:#?}"
        );
        let (added, updated, refused, removed, created) =
            (mine[0], mine[1], mine[2], mine[3], mine[4]);
        assert_eq!(added.before, None, "{store:?}: gw-1 did not exist");
        assert!(added.after.is_some(), "{store:?}");
        assert_eq!(updated.before, added.after, "{store:?}");
        assert_ne!(updated.after, updated.before, "{store:?}: the tag changed");
        assert_eq!(refused.before, updated.after, "{store:?}");
        assert_eq!(refused.after, refused.before, "{store:?}: nothing changed");
        assert_eq!(removed.before, updated.after, "{store:?}");
        assert_eq!(removed.after, None, "{store:?}: removed");
        assert_eq!(created.before, None, "{store:?}");
        assert_eq!(created.path, "/v1/tokens/carol");
        if let Some(record) = first_record {
            assert_eq!(
                added.after.as_deref(),
                Some(sha256_hex(record.trim().as_bytes()).as_str()),
                "the digest is of the record as stored"
            );
        }
        // Also as a table, filtered by token.
        let table = fleet.ok(&["audit", "list", "--since", "1d", "--token", "bob"]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("WHEN"), "{table}");
        assert_eq!(lines.len(), 2, "bob's one entry:\n{table}");
        for part in [
            "bob",
            "operator",
            "DELETE /v1/devices/gw-1",
            "device/gw-1",
            "403",
        ] {
            assert!(lines[1].contains(part), "{part:?} in {table}");
        }
        // The token list shows who created each, never a token.
        let listed = fleet.ok(&["token", "list"]);
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with("carol") && l.contains("alice")),
            "{listed}"
        );

        // No token is kept or logged in clear: not in the data directory, the database or
        // the service log.
        let tokens = [&alice, &bob, &carol];
        let files = files_under(&fleet.data_dir());
        // (Under EDGEFLEET_TEST_STORE=postgres the harness puts every fleet on PostgreSQL.)
        if store == Store::Embedded && !postgres_store() {
            assert!(
                files.iter().any(|(path, _)| path.ends_with("fleet.redb")),
                "the store's file is read"
            );
        }
        for (path, bytes) in files {
            for token in tokens {
                assert!(
                    !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                    "{store:?}: a token in clear in {path}"
                );
            }
        }
        if let Some(postgres) = &world.postgres {
            let dump = postgres.query(
                "SELECT (SELECT string_agg(value::text, ' ') FROM records) || \
                 (SELECT string_agg(entry::text, ' ') FROM audit_log) || \
                 (SELECT string_agg(value, ' ') FROM fleet_secrets)",
            );
            assert!(dump.contains("carol"), "the dump holds the records");
            for token in tokens {
                assert!(!dump.contains(token.as_str()), "a token in the database");
            }
        }
        let log = fleet.log();
        for token in tokens {
            assert!(
                !log.contains(token.as_str()),
                "{store:?}: a token in the log"
            );
        }
        assert!(
            listed.contains("alice") && !listed.contains("eft_"),
            "{listed}"
        );
    }
}
