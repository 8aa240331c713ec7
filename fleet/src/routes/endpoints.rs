//! The one table of the API's routes: method, path, the least role that may call it, and for
//! a change the record it changes. The router is built from it ([`super::router`]) and the
//! access tests read it ([`endpoints`]), so a route cannot be added without a role.
//!
//! The roles: a viewer reads (every `GET`, but the token list and a device's configuration,
//! which holds its MQTT password); an operator also steers rollouts and sends module commands;
//! an admin does everything else.

use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};
use edgefleet_common::fleet_api::Role;
use edgefleet_common::fleet_api::Role::{Admin, Operator, Viewer};

use super::{Api, handlers as h, tokens as t};
use crate::store::kind;

/// One route of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub method: Method,
    /// The path as the router matches it (`/v1/deployments/{name}`).
    pub path: &'static str,
    /// The least role that may call it.
    pub role: Role,
    /// The record a call changes, for the audit log; `None` for a read.
    pub changes: Option<Changes>,
}

/// Which record a change writes, named from the request's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changes {
    /// The record of `kind` named by the path parameter `param`.
    Named {
        kind: &'static str,
        param: &'static str,
    },
    /// The model version named by the path's `{name}` and `{version}`.
    ModelVersion,
    /// Every record of `kind` the change writes (a new model version, imported devices), or
    /// none at all (telemetry imported is not a record).
    Kind(&'static str),
}

/// Every route of the API, as the router has them.
pub fn endpoints() -> Vec<Endpoint> {
    routed().into_iter().map(|(e, _)| e).collect()
}

const fn named(kind: &'static str, param: &'static str) -> Option<Changes> {
    Some(Changes::Named { kind, param })
}

/// Every route with its handler.
#[allow(clippy::too_many_lines, reason = "one table, a row per route")]
pub(super) fn routed() -> Vec<(Endpoint, MethodRouter<Api>)> {
    macro_rules! row {
        ($method:ident, $path:literal, $role:expr, $changes:expr, $handler:expr) => {
            (
                Endpoint {
                    method: Method::$method,
                    path: $path,
                    role: $role,
                    changes: $changes,
                },
                on(MethodFilter::$method, $handler),
            )
        };
    }
    let model = Some(Changes::ModelVersion);
    vec![
        row!(GET, "/v1/fleet", Viewer, None, h::fleet_info),
        row!(GET, "/v1/registries", Viewer, None, h::list_registries),
        row!(
            PUT,
            "/v1/registries/{name}",
            Admin,
            named(kind::REGISTRY, "name"),
            h::put_registry
        ),
        row!(
            DELETE,
            "/v1/registries/{name}",
            Admin,
            named(kind::REGISTRY, "name"),
            h::delete_registry
        ),
        row!(GET, "/v1/models", Viewer, None, h::list_models),
        row!(
            POST,
            "/v1/models",
            Admin,
            Some(Changes::Kind(kind::MODEL)),
            h::register_model
        ),
        row!(
            GET,
            "/v1/models/{name}/{version}",
            Viewer,
            None,
            h::show_model
        ),
        row!(
            DELETE,
            "/v1/models/{name}/{version}",
            Admin,
            model,
            h::delete_model
        ),
        row!(
            GET,
            "/v1/models/{name}/{version}/onnx",
            Viewer,
            None,
            h::model_file
        ),
        row!(
            POST,
            "/v1/models/{name}/{version}/package",
            Admin,
            model,
            h::package_model
        ),
        row!(
            POST,
            "/v1/models/{name}/{version}/profile",
            Admin,
            model,
            h::profile_model
        ),
        row!(GET, "/v1/devices", Viewer, None, h::list_devices),
        row!(GET, "/v1/devices/{id}", Viewer, None, h::show_device),
        row!(
            PUT,
            "/v1/devices/{id}",
            Admin,
            named(kind::DEVICE, "id"),
            h::put_device
        ),
        row!(
            DELETE,
            "/v1/devices/{id}",
            Admin,
            named(kind::DEVICE, "id"),
            h::remove_device
        ),
        row!(
            POST,
            "/v1/device-imports",
            Admin,
            Some(Changes::Kind(kind::DEVICE)),
            h::import_devices
        ),
        row!(
            GET,
            "/v1/devices/{id}/config",
            Admin,
            None,
            h::device_config
        ),
        row!(
            POST,
            "/v1/devices/{id}/rotate-credentials",
            Admin,
            named(kind::MQTT_ROTATION, "id"),
            h::rotate_credentials
        ),
        row!(
            POST,
            "/v1/devices/{id}/commands",
            Operator,
            named(kind::DEVICE, "id"),
            h::device_command
        ),
        row!(GET, "/v1/deployments", Viewer, None, h::list_deployments),
        row!(
            GET,
            "/v1/deployments/{name}",
            Viewer,
            None,
            h::show_deployment
        ),
        row!(
            PUT,
            "/v1/deployments/{name}",
            Admin,
            named(kind::DEPLOYMENT, "name"),
            h::put_deployment
        ),
        row!(
            DELETE,
            "/v1/deployments/{name}",
            Admin,
            named(kind::DEPLOYMENT, "name"),
            h::delete_deployment
        ),
        row!(
            GET,
            "/v1/deployments/{name}/history",
            Viewer,
            None,
            h::deployment_history
        ),
        row!(
            GET,
            "/v1/manifests/{device}",
            Viewer,
            None,
            h::show_manifest
        ),
        row!(
            GET,
            "/v1/rollouts/{deployment}",
            Viewer,
            None,
            h::rollout_status
        ),
        row!(
            POST,
            "/v1/rollouts/{deployment}/{action}",
            Operator,
            named(kind::ROLLOUT, "deployment"),
            h::rollout_action
        ),
        row!(GET, "/v1/telemetry/{device}", Viewer, None, h::telemetry),
        row!(GET, "/v1/bundle", Viewer, None, h::bundle),
        row!(
            POST,
            "/v1/telemetry-imports",
            Admin,
            Some(Changes::Kind("telemetry")),
            h::import_telemetry
        ),
        row!(GET, "/v1/tokens", Admin, None, t::list_tokens),
        row!(
            POST,
            "/v1/tokens/{name}",
            Admin,
            named(kind::TOKEN, "name"),
            t::create_token
        ),
        row!(
            DELETE,
            "/v1/tokens/{name}",
            Admin,
            named(kind::TOKEN, "name"),
            t::revoke_token
        ),
        row!(GET, "/v1/audit", Viewer, None, t::audit),
    ]
}
