//! The order payload, validated at the edge into [`NewOrder`], and the
//! stored [`Order`].

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest product name, in characters.
pub const MAX_PRODUCT_CHARS: usize = 200;
/// Largest quantity per order.
pub const MAX_QUANTITY: u16 = 1000;

/// The wire shape of `POST /orders`; unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderRequest {
    product: String,
    quantity: i64,
}

/// Why an order payload was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OrderInputError {
    /// Not JSON at all (syntax error, truncated, empty): `400`.
    #[error("the body is not valid JSON: {0}")]
    Malformed(String),
    /// JSON, but not a valid order (types, fields, ranges): `422`.
    #[error("{0}")]
    Invalid(String),
}

/// A validated order request: `product` is 1–200 characters and not blank,
/// `quantity` is 1–1000.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    product: String,
    quantity: u16,
}

impl NewOrder {
    /// The product name.
    pub fn product(&self) -> &str {
        &self.product
    }

    /// The quantity.
    pub fn quantity(&self) -> u16 {
        self.quantity
    }
}

impl TryFrom<&[u8]> for NewOrder {
    type Error = OrderInputError;

    fn try_from(body: &[u8]) -> Result<Self, OrderInputError> {
        // serde's derived struct also accepts the sequence form
        // `["Tea", 1]`; an order is only ever a JSON object.
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            None | Some(b'{') => {}
            Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
                return Err(OrderInputError::Invalid(
                    "the order must be a JSON object".to_owned(),
                ))
            }
            Some(_) => {}
        }
        let request: OrderRequest = serde_json::from_slice(body).map_err(|e| {
            if e.is_data() {
                OrderInputError::Invalid(format!("invalid order: {e}"))
            } else {
                OrderInputError::Malformed(e.to_string())
            }
        })?;
        let chars = request.product.chars().count();
        if request.product.trim().is_empty() {
            return Err(OrderInputError::Invalid(
                "product must not be blank".to_owned(),
            ));
        }
        if chars > MAX_PRODUCT_CHARS {
            return Err(OrderInputError::Invalid(format!(
                "product is {chars} characters long; the limit is {MAX_PRODUCT_CHARS}"
            )));
        }
        if request.product.chars().any(char::is_control) {
            return Err(OrderInputError::Invalid(
                "product must not contain control characters".to_owned(),
            ));
        }
        let quantity = u16::try_from(request.quantity)
            .ok()
            .filter(|q| (1..=MAX_QUANTITY).contains(q))
            .ok_or_else(|| {
                OrderInputError::Invalid(format!(
                    "quantity must be between 1 and {MAX_QUANTITY}, got {}",
                    request.quantity
                ))
            })?;
        Ok(Self {
            product: request.product,
            quantity,
        })
    }
}

/// A created order, as stored at `orders:<id>` and returned to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// UUID v7: time-ordered and unique across concurrent instances.
    pub id: String,
    /// The product name.
    pub product: String,
    /// The quantity.
    pub quantity: u16,
    /// Creation time, RFC 3339 UTC with milliseconds.
    pub created_at: String,
}

impl Order {
    /// A new order with a fresh id, created now.
    pub fn create(new: NewOrder) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            product: new.product,
            quantity: new.quantity,
            created_at: rfc3339(SystemTime::now()),
        }
    }
}

/// The UTC calendar date `(year, month 1–12, day 1–31)` of a day count
/// since 1970-01-01.
///
/// Hand-rolled (Howard Hinnant's civil-from-days) to avoid a date crate for
/// one timestamp.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Formats a time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(body: &str) -> Result<NewOrder, OrderInputError> {
        NewOrder::try_from(body.as_bytes())
    }

    #[test]
    fn a_valid_order_parses() {
        let order = parse(r#"{"product":"Tea","quantity":1000}"#).unwrap();
        assert_eq!(order.product(), "Tea");
        assert_eq!(order.quantity(), 1000);
    }

    #[test]
    fn broken_json_is_malformed() {
        for body in ["", "{", r#"{"product":"Tea","#, "nope"] {
            assert!(
                matches!(parse(body), Err(OrderInputError::Malformed(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn wrong_values_types_and_fields_are_invalid() {
        for body in [
            r#"{"product":"Tea","quantity":0}"#,
            r#"{"product":"Tea","quantity":1001}"#,
            r#"{"product":"Tea","quantity":-1}"#,
            r#"{"product":"Tea","quantity":99999999999999999999}"#,
            r#"{"product":"Tea","quantity":1.5}"#,
            r#"{"product":"Tea","quantity":"2"}"#,
            r#"{"product":"   ","quantity":1}"#,
            r#"{"product":"","quantity":1}"#,
            r#"{"product":"a\u0000b","quantity":1}"#,
            r#"{"product":"Tea"}"#,
            r#"{"product":"Tea","quantity":1,"price":3}"#,
            r#"[1,2]"#,
            r#"["Tea",1]"#,
        ] {
            assert!(
                matches!(parse(body), Err(OrderInputError::Invalid(_))),
                "{body:?}"
            );
        }
        let long = format!(r#"{{"product":"{}","quantity":1}}"#, "é".repeat(201));
        assert!(matches!(parse(&long), Err(OrderInputError::Invalid(_))));
        let max = format!(r#"{{"product":"{}","quantity":1}}"#, "é".repeat(200));
        assert!(parse(&max).is_ok());
    }

    #[test]
    fn created_orders_get_distinct_v7_ids() {
        let new = parse(r#"{"product":"Tea","quantity":1}"#).unwrap();
        let a = Order::create(new.clone());
        let b = Order::create(new);
        assert_ne!(a.id, b.id);
        assert_eq!(uuid::Uuid::parse_str(&a.id).unwrap().get_version_num(), 7);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
    }
}
