//! The JSON the endpoints answer with, serialised straight from the order.
//!
//! The bodies were first built as a `serde_json::Value` (`json!`), whose
//! members come out sorted by name. These types write the same bytes
//! without building the `Value` (a map, and a string copy of every field,
//! per response): their members are declared in that sorted order, and a
//! test holds them to the bytes `json!` writes.

use serde::Serialize;

use crate::Order;

/// An order as a response body carries it.
#[derive(Serialize)]
pub(crate) struct OrderBody<'a> {
    created_at: &'a str,
    id: &'a str,
    product: &'a str,
    quantity: u16,
}

impl<'a> From<&'a Order> for OrderBody<'a> {
    fn from(order: &'a Order) -> Self {
        Self {
            created_at: &order.created_at,
            id: &order.id,
            product: &order.product,
            quantity: order.quantity,
        }
    }
}

/// The body of a `201` for a new order.
#[derive(Serialize)]
pub(crate) struct CreatedBody<'a> {
    message: &'static str,
    order: OrderBody<'a>,
}

impl<'a> From<&'a Order> for CreatedBody<'a> {
    fn from(order: &'a Order) -> Self {
        Self {
            message: "Order created",
            order: order.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order() -> Order {
        Order {
            id: "0190b2f4-7c1e-7a55-9d2e-2f1c3a4b5c6d".to_owned(),
            product: "Tea \"Earl\" \u{e9}\\ \u{1}".to_owned(),
            quantity: 7,
            created_at: "2026-11-29T16:10:00.123Z".to_owned(),
        }
    }

    #[test]
    fn an_order_body_is_byte_for_byte_what_json_wrote() {
        let order = order();
        let ours = serde_json::to_string(&OrderBody::from(&order)).unwrap();
        assert_eq!(ours, json!(order).to_string());
    }

    #[test]
    fn a_created_body_is_byte_for_byte_what_json_wrote() {
        let order = order();
        let ours = serde_json::to_string(&CreatedBody::from(&order)).unwrap();
        let before = json!({ "message": "Order created", "order": order }).to_string();
        assert_eq!(ours, before);
    }
}
