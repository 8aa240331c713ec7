//! The web dashboard in a real browser (headless Chromium): sign-in, then every page of a
//! fleet with a device serving a model, its content checked and a screenshot kept per page in
//! target/test-artifacts/dashboard/.

use std::time::Duration;

use edgefleet_tests::{Browser, FleetWorld, free_port, repo_root, score_at, wait_for};
use serde_json::Value;

#[test]
fn the_dashboard_signs_in_with_the_token_and_shows_the_fleet_devices_charts_deployments_and_models()
{
    let mut world = FleetWorld::new();
    world.fleet.register("diabetes", "diabetes");
    world.fleet.package("diabetes:1", "models/diabetes");
    let mut agent = world.device("dash-1", &["site=plant1"], "127.0.0.9");
    let port = free_port();
    world
        .fleet
        .deploy("line", "tags.site = 'plant1'", "diabetes:1", port);
    world.wait_rollout("line");
    // Two bursts in two of the charts' 10-second buckets: each line has two points.
    for burst in 0..2 {
        if burst > 0 {
            std::thread::sleep(Duration::from_secs(11));
        }
        for _ in 0..10 {
            score_at("127.0.0.9", port);
        }
    }
    wait_for(
        "the inferences at the fleet",
        Duration::from_secs(60),
        || {
            let out = world.fleet.ok(&[
                "telemetry",
                "query",
                "dash-1",
                "--kind",
                "inference",
                "--output",
                "json",
            ]);
            let records: Vec<Value> = serde_json::from_str(&out).ok()?;
            (records.len() >= 20).then_some(())
        },
    );

    let base = world.fleet.url();
    let browser = Browser::new();
    let signed_out = browser.dom(&format!("{base}/ui/devices"));
    assert!(signed_out.contains("API token"), "{signed_out}");
    let wrong = browser.dom(&format!("{base}/ui/login#token=not-the-token"));
    assert!(wrong.contains("That token is not known here"), "{wrong}");
    // `edgefleet dashboard` prints the link that signs in.
    let link = world.fleet.ok(&["dashboard"]).trim().to_owned();
    assert_eq!(link, format!("{base}/ui/login#token={}", world.fleet.token));
    let overview = browser.dom(&link);
    assert!(overview.contains("Fleet plant"), "{overview}");
    assert!(
        !overview.contains(&world.fleet.token),
        "the token stays out of the page"
    );

    let artifacts = repo_root().join("target/test-artifacts/dashboard");
    for (name, path, expected) in [
        (
            "overview",
            "/ui/",
            vec![
                "Fleet plant",
                "online",
                "stale",
                "offline",
                "never seen",
                "Failing modules",
            ],
        ),
        (
            "devices",
            "/ui/devices",
            vec!["dash-1", "site=plant1", "diabetes", "online"],
        ),
        (
            "device",
            "/ui/devices/dash-1",
            vec![
                "Modules",
                "diabetes",
                "requests/s",
                "latency ms",
                "<polyline",
            ],
        ),
        (
            "deployments",
            "/ui/deployments",
            vec!["line", "1 succeeded"],
        ),
        (
            "models",
            "/ui/models",
            vec!["diabetes", "models/diabetes:1@sha256:"],
        ),
    ] {
        let url = format!("{base}{path}");
        let dom = browser.dom(&url);
        for text in expected {
            assert!(dom.contains(text), "{name}: {text:?} not in\n{dom}");
        }
        if name == "device" {
            let rate = dom
                .split(r#"<polyline class="line0" points=""#)
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default();
            assert!(
                rate.split(' ').count() >= 2,
                "a rate line of two points: {rate:?}"
            );
        }
        let shot = artifacts.join(format!("{name}.png"));
        browser.screenshot(&url, &shot);
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{name}: a {size}-byte screenshot is blank");
    }
    let signed_off = browser.dom(&format!("{base}/ui/logout"));
    assert!(signed_off.contains("API token"), "{signed_off}");
    agent.stop();
}
