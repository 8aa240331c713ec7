//! Serving models in-process: a [`model_module`] holds the version being served, the
//! [`scoring_api`] answers `/score` over HTTP (served by the [`scoring_server`]'s request
//! threads, described by its [`swagger`] document), [`batch_scoring`] scores a file of requests, and
//! [`resident_memory`] gives back what loading a model touched only once.

pub(crate) mod batch_scoring;
pub(crate) mod model_module;
pub(crate) mod resident_memory;
pub(crate) mod scoring_api;
pub(crate) mod scoring_server;
pub(crate) mod swagger;
