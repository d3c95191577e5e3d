//! What the component is and what it is given: the Spin manifest ([`manifest`]), its
//! variables ([`variables`]), composition with its dependencies ([`compose`]) and the compile
//! cache ([`compile_cache`]).

pub mod compile_cache;
pub mod compose;
pub mod manifest;
pub mod variables;
