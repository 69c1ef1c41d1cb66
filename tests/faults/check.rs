//! The guarantee, checked after a schedule on everything the clients got
//! and on what Redis holds: at most one order, only answers the request
//! allows, every `201` naming that order with exactly its content, all
//! `201`s the same bytes, and the stored replay agreeing with them.
//!
//! It reads the record's stored response ([`stored_response`]) itself rather
//! than through the layer, so a wrong record is caught even when no client
//! happened to be replayed from it.

use serde_json::Value;

use crate::client::Answer;
use crate::world::World;

/// The stored response in a completed record: status and body.
fn stored_response(value: &[u8]) -> Option<(u16, Vec<u8>)> {
    if value.first() != Some(&b'c') {
        return None;
    }
    let newline = value.iter().position(|&b| b == b'\n')?;
    let payload = &value[newline + 1..];
    // version (1) | fingerprint (32) | status (2) | body kind (1) | count (2)
    let status = u16::from_be_bytes([*payload.get(33)?, *payload.get(34)?]);
    let count = u16::from_be_bytes([*payload.get(36)?, *payload.get(37)?]);
    let mut at = 38;
    for _ in 0..count {
        let name = usize::from(u16::from_be_bytes([
            *payload.get(at)?,
            *payload.get(at + 1)?,
        ]));
        at += 2 + name;
        let len = u32::from_be_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4 + len;
    }
    Some((status, payload.get(at..)?.to_vec()))
}

/// The guarantee, checked on everything the clients got and on Redis.
pub(crate) fn check(world: &World) -> Result<String, String> {
    let answers = world.answers.all();
    let orders = world.orders();
    let mut problems = Vec::new();
    if orders.len() > 1 {
        problems.push(format!("{} orders for one key: {orders:?}", orders.len()));
    }
    let created: Vec<&Answer> = answers
        .iter()
        .filter(|(_, a)| a.status == 201)
        .map(|(_, a)| a)
        .collect();
    for (ask, answer) in &answers {
        // A refused request retried after the fixed one completed is a key
        // reused for a different request: 422.
        let allowed: &[u16] = if ask.content_type == "text/plain" {
            &[415, 422, 409, 503]
        } else {
            &[201, 409, 503]
        };
        if !allowed.contains(&answer.status) {
            problems.push(format!(
                "unexpected answer {} to {}",
                answer.summary(),
                ask.content_type
            ));
        }
    }
    if let Some(first) = created.first() {
        let body: Value = serde_json::from_slice(&first.body).unwrap_or(Value::Null);
        match orders.first() {
            None => problems.push("a 201 names an order that is not in Redis".to_owned()),
            Some((key, json)) => {
                let stored: Value = serde_json::from_str(json).unwrap_or(Value::Null);
                if body["order"] != stored
                    || *key != format!("orders:{}", stored["id"].as_str().unwrap_or(""))
                {
                    problems.push(format!(
                        "the 201 says {} but Redis has {json}",
                        body["order"]
                    ));
                }
            }
        }
        for other in &created {
            if other.body != first.body || other.replayable_headers() != first.replayable_headers()
            {
                problems.push(format!(
                    "two different 201s for one key:\n  {}\n  {}",
                    String::from_utf8_lossy(&first.body),
                    String::from_utf8_lossy(&other.body)
                ));
            }
        }
        for (_, record) in world.records() {
            if let Some((status, stored)) = stored_response(&record) {
                if status != 201 || stored != first.body {
                    problems.push(format!(
                        "the record replays {status} {} but a client got {}",
                        String::from_utf8_lossy(&stored),
                        String::from_utf8_lossy(&first.body)
                    ));
                }
            }
        }
    }
    // Runs of the same answer are counted: `b:409 request-in-progress ×12`.
    let mut runs: Vec<(String, usize)> = Vec::new();
    for (_, answer) in &answers {
        match runs.last_mut() {
            Some((last, n)) if *last == answer.summary() => *n += 1,
            _ => runs.push((answer.summary(), 1)),
        }
    }
    let trail = runs
        .iter()
        .map(|(summary, n)| match n {
            1 => summary.clone(),
            n => format!("{summary} ×{n}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    if problems.is_empty() {
        Ok(trail)
    } else {
        Err(format!("{}\n  answers: {trail}", problems.join("\n  ")))
    }
}
