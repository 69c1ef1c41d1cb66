//! [`DynamoDbStore`]: idempotency records in a DynamoDB table, with the
//! guarantees of the Redis store.
//!
//! - A claim is one conditional `PutItem` (`attribute_not_exists(pk) OR
//!   expiry < :now`) with `ReturnValuesOnConditionCheckFailure=ALL_OLD`:
//!   when the key is taken, the refusal carries the existing record, so a
//!   replay, a `409` or a `422` costs one round trip.
//! - Completing, releasing and renewing are conditioned on the owner token
//!   (`item.rs` has every condition).
//! - Expiry is checked in each condition against the writer's clock;
//!   DynamoDB's TTL (on the `ttl` attribute, epoch seconds) only cleans up.
//!
//! The SDK is used without its default HTTPS client (rustls on aws-lc-rs,
//! which needs cmake): [`DynamoDbStore::http_client`] is its hyper client
//! on rustls with ring, the provider the Redis store uses too.
//!
//! # Layout
//! - `item.rs`: the record as an item, the conditions;
//! - `env.rs`: [`DynamoDbStore::from_env`], the SDK configuration.

mod env;
mod item;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use crate::store::{IdempotencyStore, Phase, StoreError, StoredRecord};
use crate::{OwnerToken, StoreKey};

/// Idempotency records in one DynamoDB table, keyed on `pk` (a string),
/// with TTL enabled on `ttl`. Cheap to clone (the SDK client is shared).
#[derive(Clone, Debug)]
pub struct DynamoDbStore {
    client: Client,
    table: Arc<str>,
    /// The client's operation timeout, when it has one.
    bound: Option<Duration>,
}

/// A failed SDK call, with the SDK's whole error context as its message.
#[derive(Debug, thiserror::Error)]
#[error("DynamoDB: {0}")]
struct SdkFailure(String);

/// What a conditional write came to.
enum Written {
    Done,
    /// The condition failed; the item as it was, when DynamoDB sent it.
    Refused(Option<HashMap<String, AttributeValue>>),
}

impl DynamoDbStore {
    /// A store on `table` through `client`. Its timeouts and retries are
    /// the client's: give it an operation timeout (the store then reports
    /// it as [`IdempotencyStore::max_call_time`]), and an HTTP client, such
    /// as [`DynamoDbStore::http_client`].
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        let bound = client
            .config()
            .timeout_config()
            .and_then(|t| t.operation_timeout());
        Self {
            client,
            table: Arc::from(table.into()),
            bound,
        }
    }

    /// The SDK client, to share with the handler's own calls.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table the records are in.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn timeout(&self) -> StoreError {
        StoreError::Timeout(self.bound.unwrap_or_default())
    }

    /// Maps an SDK failure that is not a refused condition.
    fn failure<E>(
        &self,
        error: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        match &error {
            SdkError::TimeoutError(_) => self.timeout(),
            SdkError::DispatchFailure(failure) if failure.is_timeout() => self.timeout(),
            _ => StoreError::backend(SdkFailure(DisplayErrorContext(&error).to_string())),
        }
    }

    /// `PutItem` of `item` under `condition` (with `values`).
    async fn put(
        &self,
        item: HashMap<String, AttributeValue>,
        condition: &str,
        values: HashMap<String, AttributeValue>,
    ) -> Result<Written, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(self.table.as_ref())
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(item::names(condition)))
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Written::Done),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let old = match e.into_err() {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                Ok(Written::Refused(old))
            }
            Err(e) => Err(self.failure(e)),
        }
    }
}

impl IdempotencyStore for DynamoDbStore {
    async fn claim(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> Result<Option<StoredRecord>, StoreError> {
        let now = item::now_ms();
        let new = item::item(key, Phase::InProgress, owner, payload, now, lease);
        match self.put(new, item::FREE, item::values(now, None)).await? {
            Written::Done => Ok(None),
            Written::Refused(Some(old)) => item::record(&old).map(Some),
            Written::Refused(None) => Err(StoreError::backend(SdkFailure(
                "the claim was refused without the existing item \
                 (ReturnValuesOnConditionCheckFailure not supported?)"
                    .to_owned(),
            ))),
        }
    }

    async fn complete(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        retention: Duration,
    ) -> Result<bool, StoreError> {
        let now = item::now_ms();
        let done = item::item(key, Phase::Completed, owner, payload, now, retention);
        let written = self
            .put(done, item::FREE_OR_OURS, item::values(now, Some(owner)))
            .await?;
        Ok(matches!(written, Written::Done))
    }

    async fn release(&self, key: &StoreKey, owner: &OwnerToken) -> Result<bool, StoreError> {
        let condition = item::OURS_IN_PROGRESS;
        let result = self
            .client
            .delete_item()
            .table_name(self.table.as_ref())
            .key(
                item::PARTITION_KEY,
                AttributeValue::S(key.as_str().to_owned()),
            )
            .condition_expression(condition)
            .set_expression_attribute_names(Some(item::names(condition)))
            .set_expression_attribute_values(Some(item::ours_in_progress(item::now_ms(), owner)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(false)
            }
            Err(e) => Err(self.failure(e)),
        }
    }

    async fn renew(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = item::now_ms();
        let renewed = item::item(key, Phase::InProgress, owner, payload, now, lease);
        let values = item::ours_in_progress(now, owner);
        let written = self.put(renewed, item::OURS_IN_PROGRESS, values).await?;
        Ok(matches!(written, Written::Done))
    }

    /// The client's operation timeout (retries included), when it has one.
    fn max_call_time(&self) -> Option<Duration> {
        self.bound
    }
}
