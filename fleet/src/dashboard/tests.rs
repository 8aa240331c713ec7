//! The dashboard's HTML helpers: escaping and chart drawing.

use super::charts::chart;
use super::html::esc;

#[test]
fn text_is_escaped_for_html() {
    assert_eq!(
        esc(r#"<a href="x">&'"#),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}

#[test]
fn a_chart_draws_each_line_scaled_into_its_box() {
    let points = [(1_000, 0.0), (2_000, 5.0), (3_000, 10.0)];
    let svg = chart("requests/s", &[("rate", &points)]);
    assert!(
        svg.contains(r#"<polyline class="line0" points="34.0,142.0 223.0,77.0 412.0,12.0">"#),
        "{svg}"
    );
    assert!(svg.contains(">10.00<"), "the scale's top: {svg}");
}

#[test]
fn rollout_buttons_show_to_operators_and_admins_only_and_only_the_actions_the_state_allows() {
    use edgefleet_common::fleet_api::{Role, StagedState};

    use super::actions::rollout_buttons;
    use crate::domain::Caller;

    let caller = |role| Caller {
        name: "t".into(),
        role,
    };
    assert_eq!(
        rollout_buttons(&caller(Role::Viewer), "line", StagedState::Running),
        ""
    );
    for role in [Role::Operator, Role::Admin] {
        let running = rollout_buttons(&caller(role), "line", StagedState::Running);
        for action in ["pause", "abort", "rollback"] {
            assert!(
                running.contains(&format!(r#"action="/ui/rollouts/line/{action}""#)),
                "{running}"
            );
        }
        assert!(!running.contains("resume"), "{running}");
        let paused = rollout_buttons(&caller(role), "line", StagedState::Paused);
        assert!(paused.contains("/ui/rollouts/line/resume") && !paused.contains("/pause"));
        assert_eq!(
            rollout_buttons(&caller(role), "line", StagedState::Completed),
            ""
        );
    }
}
