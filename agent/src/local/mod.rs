//! How programs on the device itself reach the running agent: the [`control_socket`] takes
//! commands (bundle import, outbox export and trim), the [`status_socket`] serves the reported
//! state.

pub(crate) mod control_socket;
pub(crate) mod status_socket;
