//! detour's agent and CLI as a library: the `detour` binary is a thin
//! `main` over [`cli::Cli`]. A library also lets the fuzz targets reach the
//! parsers in [`http`].

pub mod admin;
pub mod app;
pub mod cli;
pub mod datapath;
pub mod defaults;
pub mod flows;
pub mod handover;
pub mod health;
pub mod http;
pub mod k8s;
pub mod limits;
pub mod metrics;
pub mod netns;
pub mod proxy;
pub mod reconnect;
pub mod routes;
pub mod socket_file;
pub mod telemetry;
pub mod updater;
