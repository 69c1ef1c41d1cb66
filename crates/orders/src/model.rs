//! The order payload, validated at the edge into [`NewOrder`], and the
//! stored [`Order`].
//!
//! Parsing is done member by member rather than by a derived
//! `Deserialize`, for two reasons:
//! - error messages are ours and bounded: serde's messages quote the
//!   offending input (a 1 MB string would come back as a 4 MB detail), so
//!   no serde message ever reaches a client, and the one piece of input an
//!   error names (an unknown member) is cut to a short escaped excerpt
//!   (`problem_details::excerpt`);
//! - a duplicate member is refused explicitly, whatever its values.

use std::borrow::Cow;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use problem_details::excerpt;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

/// Longest product name, in characters.
pub const MAX_PRODUCT_CHARS: usize = 200;
/// Largest quantity per order.
pub const MAX_QUANTITY: u16 = 1000;

/// Why an order payload was refused. Messages never exceed a few hundred
/// bytes, whatever the input.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OrderInputError {
    /// Not JSON at all (syntax error, truncated, empty): `400`.
    #[error("the body is not valid JSON ({0})")]
    Malformed(String),
    /// JSON, but not a valid order (types, members, ranges): `422`.
    #[error("{0}")]
    Invalid(String),
}

/// A validated order request: `product` is 1–200 characters, not blank and
/// without control characters; `quantity` is 1–1000.
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
        let members: Members = serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => invalid("the order must be a JSON object"),
            serde_json::error::Category::Eof => OrderInputError::Malformed(format!(
                "it ends early, at line {} column {}",
                e.line(),
                e.column()
            )),
            _ => OrderInputError::Malformed(format!(
                "syntax error at line {} column {}",
                e.line(),
                e.column()
            )),
        })?;
        if let Some(problem) = members.problem {
            return Err(invalid(problem));
        }
        let product = match members
            .product
            .map(|raw| serde_json::from_str::<String>(raw.get()))
        {
            Some(Ok(product)) => product,
            Some(Err(_)) => return Err(invalid("product must be a string")),
            None => return Err(invalid("product is required")),
        };
        let chars = product.chars().count();
        if product.trim().is_empty() {
            return Err(invalid("product must not be blank"));
        }
        if chars > MAX_PRODUCT_CHARS {
            return Err(invalid(format!(
                "product is {chars} characters long; the limit is {MAX_PRODUCT_CHARS}"
            )));
        }
        if product.chars().any(char::is_control) {
            return Err(invalid("product must not contain control characters"));
        }
        if product.chars().any(is_invisible_format) {
            return Err(invalid(
                "product must not contain invisible or text-direction characters",
            ));
        }
        // Read from the number's text: JSON numbers have no size limit, and
        // a 15,000-digit one is a wrong quantity, not malformed JSON.
        let quantity = members
            .quantity
            .as_ref()
            .and_then(|raw| whole_number(raw.get()))
            .filter(|q| (1..=MAX_QUANTITY).contains(q));
        match (members.quantity.is_some(), quantity) {
            (false, _) => Err(invalid("quantity is required")),
            (true, None) => Err(invalid(format!(
                "quantity must be a whole number from 1 to {MAX_QUANTITY}"
            ))),
            (true, Some(quantity)) => Ok(Self { product, quantity }),
        }
    }
}

/// The value of a JSON number's text when it is a whole number below
/// 10,000, whatever its notation: `2`, `2.0`, `2e0` and `0.2e1` are all 2
/// (JSON does not tell them apart, and JSON Schema's `integer` accepts
/// them all). Exact: digits are read, never rounded through a float, so
/// `2.0000000000000001` is not whole. `None` for anything else, including
/// text that is not a number.
fn whole_number(text: &str) -> Option<u16> {
    const LIMIT: u32 = 9_999;
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        // An exponent beyond i64 makes a number far too large, or a zero.
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (int, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = || int.bytes().chain(fraction.bytes());
    if !digits().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The value is `digits` × 10^`shift`: the digits a negative shift puts
    // behind the decimal point must all be zeros.
    let shift = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
    let behind = match shift {
        0.. => 0,
        _ => shift
            .checked_neg()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX),
    };
    let kept = (int.len() + fraction.len()).saturating_sub(behind);
    if !digits().skip(kept).all(|b| b == b'0') {
        return None;
    }
    let mut value: u32 = 0;
    for b in digits().take(kept) {
        value = value * 10 + u32::from(b - b'0');
        if value > LIMIT {
            return None;
        }
    }
    if value > 0 {
        for _ in 0..shift {
            value *= 10;
            if value > LIMIT {
                return None;
            }
        }
    }
    u16::try_from(value).ok()
}

/// Characters that change how a name displays without showing: zero-width
/// spaces and joiners, soft hyphens, direction marks, embeddings and
/// isolates, the byte-order mark (Unicode format characters in common use).
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

fn invalid(message: impl Into<String>) -> OrderInputError {
    OrderInputError::Invalid(message.into())
}

/// The members of the order object (as their JSON text), and the first
/// problem with them.
struct Members {
    product: Option<Box<RawValue>>,
    quantity: Option<Box<RawValue>>,
    problem: Option<String>,
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an order object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut members = Members {
            product: None,
            quantity: None,
            problem: None,
        };
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            let slot = match name.as_ref() {
                "product" => &mut members.product,
                "quantity" => &mut members.quantity,
                other => {
                    members.problem.get_or_insert_with(|| {
                        format!(
                            "unknown member {}; an order has only product and quantity",
                            excerpt(other)
                        )
                    });
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                members
                    .problem
                    .get_or_insert_with(|| format!("the member {name:?} appears more than once"));
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            *slot = Some(map.next_value()?);
        }
        Ok(members)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Members, A::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
    }
}

/// A created order, as stored at `orders:<id>` and returned to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// A UUID: derived from the request's idempotency identity when there
    /// is one (so every attempt at one request names the same order),
    /// otherwise a fresh v7.
    pub id: String,
    /// The product name.
    pub product: String,
    /// The quantity.
    pub quantity: u16,
    /// Creation time, RFC 3339 UTC with milliseconds.
    pub created_at: String,
}

impl Order {
    /// The order `id` for `new`, created now.
    pub fn new(id: String, new: NewOrder) -> Self {
        Self {
            id,
            product: new.product,
            quantity: new.quantity,
            created_at: rfc3339(SystemTime::now()),
        }
    }

    /// Whether this (stored) order is what `new` asks for.
    pub fn matches(&self, new: &NewOrder) -> bool {
        self.product == new.product && self.quantity == new.quantity
    }
}

/// The UTC calendar date `(year, month 1–12, day 1–31)` of a day count
/// since 1970-01-01 (Howard Hinnant's civil-from-days, to avoid a date
/// crate for one timestamp).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
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
pub(crate) fn rfc3339(time: SystemTime) -> String {
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
mod tests;
