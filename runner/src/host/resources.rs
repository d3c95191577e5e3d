//! The host-side values behind the guest's key-value handles (the resources that
//! `bindings.rs` maps the WIT resource types to), apart from the host interfaces that use them
//! so that the bindings need no interface module.

use crate::store::kv::KvBackend;
use std::sync::Arc;

/// The resource behind a guest's `spin:key-value` `store` handle.
pub struct KvHandle(pub Arc<dyn KvBackend>);

/// The resource behind a guest's `wasi:keyvalue` `bucket` handle.
pub struct Bucket(pub Arc<dyn KvBackend>);

/// The resource behind a guest's `cas` handle: a key and the value last read from it, which
/// `swap` expects still to be there.
pub struct Cas {
    pub store: Arc<dyn KvBackend>,
    pub key: String,
    pub seen: Option<Vec<u8>>,
}
