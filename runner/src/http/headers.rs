//! The headers the HTTP front and the component speak between them. The front sets the asking
//! ones on every request, replacing any a client sent, and takes the answering ones off every
//! answer, so no client can ask, and none sees the answers. (The component's side:
//! `src/api/mod.rs`.)

/// The component's event counts for the request (`uploads_finished=1,...`): asked on every
/// request, taken off every answer.
pub const COUNT_EVENTS: &str = "x-berth-count-events";
pub const EVENTS: &str = "x-berth-events";
/// The token of a body the component leaves to the host (`berth:blob-store/store.host-body`):
/// taken off every answer.
pub const HOST_BODY: &str = "x-berth-host-body";
/// Asked of requests whose answer may be kept: the component records the key-value reads its
/// answer is made from (`answer_cache`).
pub const RECORD_READS: &str = "x-berth-record-reads";
/// What a keepable answer was read from: `<store label> [@<until>] <key>=<sha256 hex>|- ...`.
pub const READ_SET: &str = "x-berth-read-set";
