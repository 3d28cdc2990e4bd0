//! For tests (feature `testing`): the conformance kit that checks a
//! [`KeyProvider`](crate::provider::KeyProvider) or a
//! [`KeyStore`](crate::store::KeyStore) keeps the promises fieldseal relies
//! on, and a clock a test sets.

pub use crate::conformance::{check_key_provider, check_key_store};
pub use crate::time::ManualClock;
