//! What runs over the registry rather than in a client's push or pull: garbage collection
//! ([`gc`], with retention's phase), retention ([`retention`]), immutable tags' bindings
//! ([`immutable`]) and the quota recount ([`recount`]).

pub mod gc;
pub mod immutable;
pub mod recount;
pub mod retention;
