//! In-memory stores for native tests of the registry logic.

use crate::registry::store::{BlobStore, Extent, MetaStore, StoreError, Stores, Written};
use crate::wire::digest::RunningHash;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct MemMeta(pub RefCell<BTreeMap<String, Vec<u8>>>, RefCell<Option<String>>, Cell<bool>);

impl MemMeta {
    /// From now on every `get` and `increment` fails, as a store that went away would.
    pub fn fail_gets(&self) {
        self.2.set(true);
    }

    /// The next `set` of a key that starts with `prefix` fails, as a store that went away would.
    pub fn fail_next_set(&self, prefix: &str) {
        *self.1.borrow_mut() = Some(prefix.to_owned());
    }
}

impl MetaStore for MemMeta {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if self.2.get() {
            return Err(StoreError::Unavailable(format!("get of {key} failed (test)")));
        }
        Ok(self.0.borrow().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        if self.1.borrow().as_deref().is_some_and(|prefix| key.starts_with(prefix)) {
            self.1.borrow_mut().take();
            return Err(StoreError::Unavailable(format!("set of {key} failed (test)")));
        }
        self.0.borrow_mut().insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.borrow_mut().remove(key);
        Ok(())
    }
    async fn compare_and_swap(&self, key: &str, expected: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let mut map = self.0.borrow_mut();
        match map.get_mut(key) {
            Some(value) if value.as_slice() == expected => {
                *value = new.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        if self.2.get() {
            return Err(StoreError::Unavailable(format!("increment of {key} failed (test)")));
        }
        let mut map = self.0.borrow_mut();
        let current = match map.get(key) {
            Some(value) => i64::from_le_bytes(
                value.as_slice().try_into().map_err(|_| StoreError::Other(format!("{key} is not a counter")))?,
            ),
            None => 0,
        };
        let new = current.saturating_add(delta);
        map.insert(key.to_owned(), new.to_le_bytes().to_vec());
        Ok(new)
    }
}

#[derive(Default)]
pub struct MemBlobs(pub RefCell<BTreeMap<String, Vec<u8>>>, std::cell::Cell<bool>, std::cell::Cell<bool>);

impl MemBlobs {
    /// From now on, `compose` answers that this store does not join objects (as the runner's
    /// filesystem store does).
    pub fn refuse_compose(&self) {
        self.1.set(true);
    }

    /// From now on, `host_body` offers to send bodies, as the runner's store does: the token
    /// spells the extents (`name@offset+length,...`), for tests to read.
    pub fn serve_bodies(&self) {
        self.2.set(true);
    }
}

impl BlobStore for MemBlobs {
    type Incoming = Vec<u8>;
    type Outgoing = Vec<u8>;

    async fn write(&self, name: &str, data: Vec<u8>, mut hashes: Vec<RunningHash>) -> Result<Written, StoreError> {
        let mut objects = self.0.borrow_mut();
        if objects.contains_key(name) {
            return Err(StoreError::AlreadyExists);
        }
        hashes.iter_mut().for_each(|h| h.update(&data));
        let size = data.len() as u64;
        objects.insert(name.to_owned(), data);
        Ok(Written { size, hashes })
    }

    async fn host_body(&self, extents: &[Extent]) -> Result<Option<String>, StoreError> {
        if !self.2.get() {
            return Ok(None);
        }
        let objects = self.0.borrow();
        let spelled: Vec<String> = extents
            .iter()
            .map(|e| match objects.get(&e.name) {
                Some(object) if e.offset + e.length <= object.len() as u64 => {
                    Ok(format!("{}@{}+{}", e.name, e.offset, e.length))
                }
                _ => Err(StoreError::NotFound),
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(spelled.join(",")))
    }

    async fn read_extents(&self, extents: Vec<Extent>) -> Result<Vec<u8>, StoreError> {
        let objects = self.0.borrow();
        let mut out = Vec::new();
        for e in extents {
            let object = objects.get(&e.name).ok_or(StoreError::NotFound)?;
            let range = e.offset as usize..(e.offset + e.length) as usize;
            out.extend_from_slice(object.get(range).ok_or_else(|| StoreError::Other("range past end".into()))?);
        }
        Ok(out)
    }

    async fn size(&self, name: &str) -> Result<u64, StoreError> {
        self.0.borrow().get(name).map(|o| o.len() as u64).ok_or(StoreError::NotFound)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.0.borrow_mut().remove(name).map(|_| ()).ok_or(StoreError::NotFound)
    }

    async fn compose(&self, name: &str, extents: Vec<Extent>) -> Result<Option<u64>, StoreError> {
        if self.1.get() {
            return Ok(None);
        }
        let mut objects = self.0.borrow_mut();
        if objects.contains_key(name) {
            return Err(StoreError::AlreadyExists);
        }
        let mut joined = Vec::new();
        for e in &extents {
            let object = objects.get(&e.name).ok_or(StoreError::NotFound)?;
            joined.extend_from_slice(&object[e.offset as usize..(e.offset + e.length) as usize]);
        }
        let size = joined.len() as u64;
        objects.insert(name.to_owned(), joined);
        Ok(Some(size))
    }

    /// A URL that says what was presigned, so tests of redirects can check it.
    async fn presign(&self, name: &str, expires_secs: u32) -> Result<Option<String>, StoreError> {
        Ok(self.0.borrow().contains_key(name).then(|| format!("https://blobs.example/{name}?expires={expires_secs}")))
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let objects = self.0.borrow();
        let mut names: Vec<String> = objects
            .keys()
            .filter(|n| n.starts_with(prefix) && cursor.is_none_or(|c| n.as_str() > c))
            .cloned()
            .collect();
        let next = (names.len() > limit as usize && limit > 0).then(|| names[limit as usize - 1].clone());
        names.truncate(limit as usize);
        Ok((names, next))
    }

    async fn write_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.write(name, bytes, Vec::new()).await.map(|_| ())
    }

    async fn read_bytes(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.0.borrow().get(name).cloned().ok_or(StoreError::NotFound)
    }

    async fn hash_extents(&self, extents: Vec<Extent>, mut hash: RunningHash) -> Result<RunningHash, StoreError> {
        hash.update(&self.read_extents(extents).await?);
        Ok(hash)
    }

    async fn collect(&self, body: Vec<u8>, limit: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok((body.len() <= limit).then_some(body))
    }
}

thread_local! {
    static COUNTER: Cell<u128> = const { Cell::new(0) };
}

/// Distinct ids, deterministic per thread.
pub fn counter_random() -> [u8; 16] {
    COUNTER.with(|c| {
        c.set(c.get() + 1);
        c.get().to_be_bytes()
    })
}

thread_local! {
    static CLOCK: Cell<u64> = const { Cell::new(1_000_000) };
}

/// A clock tests can move: [`advance_clock`].
pub fn test_clock() -> u64 {
    CLOCK.with(Cell::get)
}

pub fn advance_clock(secs: u64) {
    CLOCK.with(|c| c.set(c.get() + secs));
}

pub fn memory_stores() -> Stores<MemMeta, MemBlobs> {
    Stores {
        meta: MemMeta::default(),
        blobs: MemBlobs::default(),
        random: counter_random,
        now: test_clock,
        config: Default::default(),
        request_id: crate::registry::store::RequestId::made([0xab; 16]),
        events: Default::default(),
    }
}

/// Drive a future that never waits on anything real (the in-memory stores).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Requests through the whole registry (`crate::api::handle`) on in-memory stores.
pub mod api {
    use super::{MemBlobs, MemMeta, block_on};
    use crate::api::handle;
    use crate::registry::store::Stores;
    use crate::wire::digest::{Algorithm, Digest};
    use crate::wire::message::{Body, Request, Response};
    use http::{HeaderMap, Method, StatusCode};

    pub type Mem = Stores<MemMeta, MemBlobs>;

    pub fn send(stores: &Mem, method: Method, path: &str, body: Vec<u8>) -> Response<Vec<u8>> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path.to_owned(), None),
        };
        block_on(handle(stores, Request { method, path, query, headers: HeaderMap::new(), body, origin: None }))
    }

    pub fn error_code(response: &Response<Vec<u8>>) -> String {
        let Body::Full(bytes) = &response.body else { panic!("error without a body") };
        let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        value["errors"][0]["code"].as_str().unwrap().to_owned()
    }

    pub fn push_blob(stores: &Mem, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::of(Algorithm::Sha256, bytes);
        let r = send(stores, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), bytes.to_vec());
        assert_eq!(r.status, StatusCode::CREATED);
        digest
    }

    pub fn manifest_of(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
        let descriptor = |b: &[u8], t: &str| serde_json::json!({ "mediaType": t, "digest": Digest::of(Algorithm::Sha256, b).to_string(), "size": b.len() });
        let layers: Vec<_> = layers.iter().map(|l| descriptor(l, "application/vnd.oci.image.layer.v1.tar")).collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::wire::manifest::OCI_MANIFEST,
            "config": descriptor(config, "application/vnd.oci.image.config.v1+json"),
            "layers": layers,
        }))
        .unwrap()
    }

    pub fn put_manifest(stores: &Mem, repo: &str, reference: &str, manifest: &[u8]) -> Response<Vec<u8>> {
        send(stores, Method::PUT, &format!("/v2/{repo}/manifests/{reference}"), manifest.to_vec())
    }

    /// Push an image (config and layers, then the manifest by tag); its manifest's digest.
    pub fn push_image(stores: &Mem, repo: &str, tag: &str, config: &[u8], layers: &[&[u8]]) -> Digest {
        push_blob(stores, repo, config);
        for layer in layers {
            push_blob(stores, repo, layer);
        }
        let manifest = manifest_of(config, layers);
        assert_eq!(put_manifest(stores, repo, tag, &manifest).status, StatusCode::CREATED);
        Digest::of(Algorithm::Sha256, &manifest)
    }
}
