//! The vmdesc JSON tree (members in order, duplicate keys kept): the core's
//! [`vmstate::json`], re-exported where the decoder's users find it.

pub use vmstate::json::{Json, MAX_DEPTH};
