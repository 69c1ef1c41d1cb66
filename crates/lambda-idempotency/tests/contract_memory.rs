//! `MemoryStore` through the public store contract suite. It has no
//! backend to take down, so the suite's failure checks do not apply.

use lambda_idempotency::{testing, MemoryStore};

#[tokio::test]
async fn the_memory_store_keeps_the_store_contract() {
    testing::contract(&MemoryStore::new()).await;
}
