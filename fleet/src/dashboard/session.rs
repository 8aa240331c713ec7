//! Signing in to the dashboard with any API token, by the form or by a link whose fragment
//! carries the token, and out again. The session cookie is `<token name>.<proof>`, the proof
//! a digest of the fleet's dashboard key and the token's SHA-256: the store's contents alone
//! cannot forge one, and revoking the token ends its sessions at their next page. Pages
//! without a valid cookie redirect to the sign-in page; signed-in pages get the [`Caller`].

use axum::extract::{Form, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use sha2::{Digest as _, Sha256};

use super::Ui;
use super::html::{esc, page};
use crate::domain::{Caller, token_sha256};

const COOKIE: &str = "edgefleet_session";

/// The cookie of a session of the token `name` whose SHA-256 is `sha256`.
fn session_cookie(ui: &Ui, name: &str, sha256: &str) -> String {
    let proof = hex::encode(Sha256::digest(
        format!("edgefleet dashboard session\n{}\n{sha256}", ui.session_key).as_bytes(),
    ));
    format!("{name}.{proof}")
}

/// The request's session cookie, if it has one.
fn session_of(request: &Request) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find_map(|(name, value)| (name == COOKIE).then(|| value.to_owned()))
}

/// Who the session cookie `value` belongs to, if it is valid now.
async fn session_caller(ui: &Ui, value: Option<String>) -> Option<Caller> {
    let value = value?;
    let (name, _) = value.rsplit_once('.')?;
    let (sha256, role) = ui.tokens.sha256_of(&ui.fleet, name).await.ok()??;
    (session_cookie(ui, name, &sha256) == value).then(|| Caller {
        name: name.to_owned(),
        role,
    })
}

pub(super) async fn signed_in(State(ui): State<Ui>, mut request: Request, next: Next) -> Response {
    match session_caller(&ui, session_of(&request)).await {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => Redirect::to("/ui/login").into_response(),
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
        None,
        "",
        &format!(
            r#"<h1>Edgefleet</h1>
<form method="post" action="/ui/login" class="login">
<label>API token <input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit">Sign in</button>
</form>{error}
<p class="muted">A token from <code>edgefleet token create</code>; the first admin's is in <code>&lt;data-dir&gt;/admin-token</code> on the fleet host.</p>{script}"#
        ),
    )
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct Login {
    token: String,
}

pub(super) async fn login(State(ui): State<Ui>, Form(login): Form<Login>) -> Response {
    let caller = match ui.tokens.caller(&ui.fleet, &login.token).await {
        Ok(Some(caller)) => caller,
        Ok(None) => {
            tracing::warn!(
                "dashboard sign-in refused: a token the fleet does not know (wrong or revoked)"
            );
            return (
                StatusCode::UNAUTHORIZED,
                Html(login_html(Some(
                    "That token is not known here (wrong, or revoked).",
                ))),
            )
                .into_response();
        }
        Err(e) => return super::html::answer(Err(e)),
    };
    let cookie = format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=43200",
        session_cookie(&ui, &caller.name, &token_sha256(&login.token))
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/")).into_response()
}

pub(super) async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response()
}
