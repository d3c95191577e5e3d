//! The wire vocabulary: what requests and stored records are made of, parsed once and then
//! trusted. Imports nothing of Berth's.

pub mod digest;
pub mod entries;
pub mod errcode;
pub mod glob;
pub mod manifest;
pub mod message;
pub mod name;
pub mod range;
pub mod reference;
pub mod route;
