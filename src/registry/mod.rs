//! The registry's domain over the storage contracts ([`store`]): blobs with their links and
//! holder entries ([`blobs`]), upload sessions ([`upload`], [`uploads`]), manifests and tags
//! ([`manifests`]), and quota accounting ([`quota`]: a link is charged in the step that writes
//! it). The keys of everything stored are in [`keys`]; what every blob store backend must keep
//! is checked by [`store_contract`]. What an answer was read from, for a host that keeps
//! answers, is [`read_set`].

pub mod blobs;
pub mod events;
pub mod keys;
pub mod manifests;
pub mod quota;
pub mod read_set;
pub mod store;
pub mod store_contract;
pub mod upload;
pub mod uploads;
