//! `examples/payments.rs` on DynamoDB: a Lambda function behind the layer
//! over `DynamoDbStore`, using only the public API. `POST /payments` takes
//! a payment once per `Idempotency-Key`.
//!
//! The handler names its side effect after the request's `ExecutionId`
//! and writes it only if absent (a conditional `PutItem`), so a re-run of
//! the same request finds the payment instead of taking it twice. The
//! payment lives in the idempotency table under its own key (`payments:`
//! and the execution id; no `ttl`, so it stays), through the store's SDK
//! client.
//!
//! Environment: `IDEMPOTENCY_TABLE` (required), `DYNAMODB_TIMEOUT_MS`,
//! the SDK's (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL_DYNAMODB` for
//! an emulator), `IDEMPOTENCY_SCOPE` (whose keys are whose; e.g.
//! `jwt,anonymous` to accept callers without identity, as a local run
//! needs) and the layer's `IDEMPOTENCY_*`. `tests/example_dynamodb.rs`
//! builds it and runs it the way Lambda does; the crate README gives the
//! command that runs it locally and its SAM resources.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use lambda_http::tower::Layer;
use lambda_http::{service_fn, Body, Error, Request, Response};
use lambda_idempotency::{
    ApiGatewayScope, DynamoDbStore, ExecutionId, IdempotencyLayer, NotExecuted, Settings,
};

async fn take_payment(db: Client, table: String, req: Request) -> Result<Response<Body>, Error> {
    let Some(id) = req
        .extensions()
        .get::<ExecutionId>()
        .map(ToString::to_string)
    else {
        // Only reached without a key when `key_required` is off.
        let mut refused = Response::builder()
            .status(400)
            .body(Body::from("send an Idempotency-Key"))?;
        refused.extensions_mut().insert(NotExecuted);
        return Ok(refused);
    };
    let amount = String::from_utf8_lossy(req.body()).into_owned();
    let pk = AttributeValue::S(format!("payments:{id}"));
    // Written once; a re-run of the same request reads what the first wrote.
    let put = db
        .put_item()
        .table_name(&table)
        .item("pk", pk.clone())
        .item("amount", AttributeValue::S(amount))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    if let Err(e) = put {
        if !e
            .as_service_error()
            .is_some_and(|s| s.is_conditional_check_failed_exception())
        {
            return Err(e.into());
        }
    }
    let stored = db
        .get_item()
        .table_name(&table)
        .key("pk", pk)
        .consistent_read(true)
        .send()
        .await?;
    let stored = match stored.item().and_then(|item| item.get("amount")) {
        Some(AttributeValue::S(amount)) => amount.clone(),
        _ => return Err("the payment was written but cannot be read back".into()),
    };
    Ok(Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .body(Body::from(format!(
            r#"{{"payment":"{id}","amount":{stored:?}}}"#
        )))?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let store = DynamoDbStore::from_env().await?;
    let (db, table) = (store.client().clone(), store.table().to_owned());
    let mut layer = IdempotencyLayer::builder(store).settings(Settings::from_env()?);
    if let Ok(scope) = std::env::var("IDEMPOTENCY_SCOPE") {
        layer = layer.scope(scope.parse::<ApiGatewayScope>()?);
    }
    let handler = service_fn(move |req| take_payment(db.clone(), table.clone(), req));
    lambda_http::run(layer.build().layer(handler)).await
}
