//! [`JsonPointer`] (RFC 6901), and leaving the members it names out of a
//! JSON body before it is fingerprinted.
//!
//! Each pointed-to value is replaced by `null` in the body's text, found
//! with `serde_json`'s borrowed [`RawValue`]s (their offsets in the body),
//! so everything else, duplicates and number spellings included, reaches
//! the fingerprint exactly as before. A body that is not JSON, or in which
//! a pointer names nothing, is left as it is. A member present in one body
//! and absent from another is still a difference.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON Pointer such as `/client_ts` or `/meta/trace_id` (RFC 6901:
/// `~1` stands for `/` and `~0` for `~` in a name; a number also indexes
/// an array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    text: String,
    tokens: Vec<String>,
}

/// Why a JSON Pointer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a JSON Pointer to a member (it must start with '/', and '~' must be followed by 0 or 1)")]
pub struct PointerParseError(String);

impl FromStr for JsonPointer {
    type Err = PointerParseError;

    fn from_str(text: &str) -> Result<Self, PointerParseError> {
        let bad = || PointerParseError(text.to_owned());
        // "" points at the whole document: not a member to leave out.
        let rest = text.strip_prefix('/').ok_or_else(bad)?;
        let tokens = rest
            .split('/')
            .map(|token| unescape(token).ok_or_else(bad))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn unescape(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next()? {
                '0' => out.push('~'),
                '1' => out.push('/'),
                _ => return None,
            },
            other => out.push(other),
        }
    }
    Some(out)
}

/// `body` with the value at each pointer replaced by `null`, or `None`
/// when nothing was replaced (not JSON, or no pointer names a value).
pub(crate) fn without(body: &[u8], pointers: &[JsonPointer]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut spans = Vec::new();
    for pointer in pointers {
        find(text, 0, &pointer.tokens, &mut spans);
    }
    if spans.is_empty() {
        return None;
    }
    // A pointer inside another's value is covered by it.
    spans.sort_by_key(|span| (span.start, std::cmp::Reverse(span.end)));
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for span in spans {
        if span.start < at {
            continue;
        }
        out.extend_from_slice(&body[at..span.start]);
        out.extend_from_slice(b"null");
        at = span.end;
    }
    out.extend_from_slice(&body[at..]);
    Some(out)
}

/// Adds to `spans` where the value at `tokens` lies in `text` (which sits
/// at `offset` in the body), for every member of that name.
fn find(text: &str, offset: usize, tokens: &[String], spans: &mut Vec<Range<usize>>) {
    let Some((first, rest)) = tokens.split_first() else {
        return;
    };
    for value in children(text, first) {
        let start = offset + (value.get().as_ptr() as usize - text.as_ptr() as usize);
        if rest.is_empty() {
            spans.push(start..start + value.get().len());
        } else {
            find(value.get(), start, rest, spans);
        }
    }
}

/// The values of `text`'s members named `token`, or its item at that
/// index; none when `text` is neither an object nor an array.
fn children<'a>(text: &'a str, token: &str) -> Vec<&'a RawValue> {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => serde_json::from_str::<Members<'a>>(text)
            .map(|m| {
                m.0.into_iter()
                    .filter(|(name, _)| name == token)
                    .map(|(_, v)| v)
                    .collect()
            })
            .unwrap_or_default(),
        Some(b'[') => {
            let index = token
                .parse::<usize>()
                .ok()
                .filter(|_| token == "0" || !token.starts_with('0'));
            match (index, serde_json::from_str::<Items<'a>>(text)) {
                (Some(i), Ok(items)) => items.0.get(i).copied().into_iter().collect(),
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// An object's members in order, duplicates kept, values unparsed.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(V(std::marker::PhantomData))
    }
}

/// An array's items in order, unparsed.
struct Items<'a>(Vec<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Items<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Items<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items<'a>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    items.push(item);
                }
                Ok(Items(items))
            }
        }
        deserializer.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests;
