//! The web dashboard (`/ui/...` on the service's listener): server-rendered HTML and inline
//! SVG charts, nothing fetched from elsewhere (no script but the sign-in link's), so it works
//! on an air-gapped site. Signing in takes the admin token (a form, or a link `/ui/login#token=...` whose
//! fragment never reaches a server log); the session is a cookie derived from the token, so it
//! ends when the token changes. Pages: overview, devices, a device with its charts of
//! inference rate and latency per module, deployments with rollout progress, models.
//!
//! This file builds the routes. Signing in and out is `session`; `pages` renders each page
//! from the fleet's state, `charts` draws a device's SVG charts, and `html` holds what every
//! page shares: the layout and style, text escaping and the error page.

mod charts;
mod html;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::response::Redirect;
use axum::routing::get;
use sha2::{Digest as _, Sha256};

use self::pages::{deployments, device, devices, models, overview};
use self::session::{login, login_page, logout, signed_in};
use crate::domain::Fleet;

#[derive(Debug, Clone)]
struct Ui {
    fleet: Arc<Fleet>,
    /// The cookie value of a signed-in session.
    session: String,
    token_sha256: [u8; 32],
}

/// The dashboard's routes, for sessions signed in with `token`.
pub fn router(fleet: Arc<Fleet>, token: &str) -> Router {
    let token_sha256: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let session = hex::encode(Sha256::digest(
        [b"edgefleet dashboard session\n".as_slice(), &token_sha256].concat(),
    ));
    let ui = Ui {
        fleet,
        session,
        token_sha256,
    };
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview))
        .route("/ui/devices", get(devices))
        .route("/ui/devices/{id}", get(device))
        .route("/ui/deployments", get(deployments))
        .route("/ui/models", get(models))
        .route("/ui/logout", get(logout))
        .layer(middleware::from_fn_with_state(ui.clone(), signed_in));
    Router::new()
        .route("/ui/login", get(login_page).post(login))
        .merge(pages)
        .with_state(ui)
}

#[cfg(test)]
mod tests;
