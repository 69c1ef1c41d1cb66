//! The idempotency layer: generic over the handler it wraps and the store
//! it uses. Nothing here knows about orders.
//!
//! Split the way Powertools splits its idempotency package:
//! - [`config`]: settings; [`key`]: the header and the Redis key;
//!   [`fingerprint`]: what makes two requests "the same";
//! - [`record`]: what is stored; [`decision`]: the pure decision;
//! - [`store`]: the persistence trait, with [`redis_store`] and
//!   [`memory_store`];
//! - [`layer`] + [`service`]: the tower middleware; [`error`]: the one
//!   mapping from the layer's errors to HTTP; [`metrics`]: CloudWatch EMF lines.

pub mod config;
pub mod decision;
pub mod error;
pub mod fingerprint;
pub mod key;
pub mod layer;
pub mod memory_store;
pub mod metrics;
pub mod record;
pub mod redis_store;
pub mod service;
pub mod store;

pub use config::IdempotencyConfig;
pub use decision::{decide, NextAction};
pub use error::{IdempotencyError, StoreError};
pub use fingerprint::Fingerprint;
pub use key::{IdempotencyKey, KeyError, StoreKey};
pub use layer::IdempotencyLayer;
pub use memory_store::MemoryStore;
pub use record::{OwnerToken, Record, RecordState, StoredResponse, REPLAYED_HEADER};
pub use redis_store::RedisStore;
pub use service::{is_storable, Idempotency};
pub use store::IdempotencyStore;
