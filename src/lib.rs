//! cirrus: a self-hosted implementation of the Microsoft Graph (beta) officeConfiguration API.
//!
//! Module map (see docs/ARCHITECTURE.md): [`http`] (server, routing, handlers) → [`domain`]
//! (rules) → [`storage`] (one trait, engines behind it). [`model`] holds the Graph types and
//! their validation, [`odata`] the wire conventions, [`auth`] identity and permissions,
//! [`policy`] the Office client's effective policy, [`simulator`] the `cirrus client` commands.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod model;
pub mod odata;
pub mod policy;
pub mod simulator;
pub mod storage;
