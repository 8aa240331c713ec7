//! Signing in to the dashboard with the admin token, by the form or by a link whose fragment
//! carries the token, and out again. The session cookie is derived from the token, so changing
//! the token ends every session; pages without it redirect to the sign-in page.

use axum::extract::{Form, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use sha2::{Digest as _, Sha256};

use super::Ui;
use super::html::{esc, page};

const COOKIE: &str = "edgefleet_session";

pub(super) async fn signed_in(State(ui): State<Ui>, request: Request, next: Next) -> Response {
    let cookie = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && value == ui.session);
    if cookie {
        next.run(request).await
    } else {
        Redirect::to("/ui/login").into_response()
    }
}

pub(super) async fn login_page() -> Html<String> {
    Html(login_html(None))
}

fn login_html(error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!(r#"<p class="bad">{}</p>"#, esc(e))
    });
    // A link carrying the token in its fragment signs in at once; the fragment stays in the
    // browser.
    let script = r#"<script>
const t = new URLSearchParams(location.hash.slice(1)).get("token");
if (t) { history.replaceState(null, "", "/ui/login"); const f = document.forms[0]; f.token.value = t; f.submit(); }
</script>"#;
    page(
        "Sign in",
        "",
        &format!(
            r#"<h1>Edgefleet</h1>
<form method="post" action="/ui/login" class="login">
<label>Admin token <input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit">Sign in</button>
</form>{error}
<p class="muted">The token is in <code>&lt;data-dir&gt;/admin-token</code> on the fleet host.</p>{script}"#
        ),
    )
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct Login {
    token: String,
}

pub(super) async fn login(State(ui): State<Ui>, Form(login): Form<Login>) -> Response {
    if Sha256::digest(login.token.as_bytes()).as_slice() != ui.token_sha256 {
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_html(Some("That is not the admin token."))),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=43200",
        ui.session
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/")).into_response()
}

pub(super) async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response()
}
