//! The web dashboard (`/ui/...` on the service's listener): server-rendered HTML and inline
//! SVG charts, nothing fetched from elsewhere (no script but the sign-in link's), so it works
//! on an air-gapped site. Signing in takes any API token (a form, or a link
//! `/ui/login#token=...` whose fragment never reaches a server log); the session is a cookie
//! proven from the token, so it ends when the token is revoked. Every page shows who is
//! signed in and with which role, and offers only what that role may do. Pages: overview,
//! devices, a device with its charts of inference rate and latency per module, deployments
//! with rollout progress (and, for operators, a staged rollout's actions), models, the audit
//! log, and the tokens (admins).
//!
//! This file builds the routes. Signing in and out is `session`; `pages` renders each page
//! from the fleet's state, `access_pages` the tokens and the audit log, `actions` what the
//! dashboard changes (role-checked and audited), `charts` draws a device's SVG charts, and
//! `html` holds what every page shares: the layout and style, text escaping and the error
//! page.

mod access_pages;
mod actions;
mod charts;
mod html;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::response::Redirect;
use axum::routing::{get, post};

use self::pages::{deployments, device, devices, models, overview};
use self::session::{login, login_page, logout, signed_in};
use crate::domain::{Fleet, Tokens};

#[derive(Debug, Clone)]
struct Ui {
    fleet: Arc<Fleet>,
    tokens: Arc<Tokens>,
    /// The fleet's dashboard key: session cookies are proven with it.
    session_key: Arc<str>,
}

/// The dashboard's routes, for sessions signed in with a token `tokens` recognises; their
/// cookies are proven with `session_key` (the same on every replica).
pub fn router(fleet: Arc<Fleet>, tokens: Arc<Tokens>, session_key: &str) -> Router {
    let ui = Ui {
        fleet,
        tokens,
        session_key: session_key.into(),
    };
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview))
        .route("/ui/devices", get(devices))
        .route("/ui/devices/{id}", get(device))
        .route("/ui/deployments", get(deployments))
        .route("/ui/models", get(models))
        .route("/ui/audit", get(access_pages::audit))
        .route("/ui/tokens", get(access_pages::tokens))
        .route("/ui/tokens/{name}/revoke", post(actions::revoke_token))
        .route("/ui/rollouts/{deployment}/{action}", post(actions::rollout))
        .route("/ui/logout", get(logout))
        .layer(middleware::from_fn_with_state(ui.clone(), signed_in));
    Router::new()
        .route("/ui/login", get(login_page).post(login))
        .merge(pages)
        .with_state(ui)
}

#[cfg(test)]
mod tests;
