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
