//! Commands beside `up`: `hash-password` ([`auth_tools`]), `gc` and `quota` ([`admin_client`]).

pub mod admin_client;
pub mod auth_tools;
