//! edgefleet: the fleet service and the administrators' CLI.
//!
//! The service ([`service`]) keeps [`records`] in its [`store`], parses deployment target
//! [`condition`]s, [`render`]s one signed manifest per device, [`package`]s models as OCI
//! images and computes [`rollout`] status. The CLI ([`cli`]) talks to it over the HTTP
//! [`api`].

pub mod api;
pub mod cli;
pub mod condition;
pub mod embedded_broker;
pub mod package;
pub mod records;
pub mod render;
pub mod rollout;
pub mod service;
pub mod store;
