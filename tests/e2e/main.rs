//! End-to-end tests: the real git and the real binaries against real servers on loopback.

mod approval;
mod aws;
mod cargo;
mod cedar_policies;
mod delegation;
mod demo;
mod doctor;
mod exchange_faults;
mod exec;
mod git_flow;
mod helper_protocol;
mod hostile_input;
mod intent;
mod kubectl;
mod no_disk;
mod npm_clients;
mod oci;
mod revocation;
mod scope_boundary;
mod setup;
mod shims;
mod single_flight;
mod subject_tokens;
mod terraform;
mod verdaccio;
mod views;
