//! `openapi.yaml` and `docs/problems.md` against the code, both ways.
//!
//! The code's problems are the three lists: `lambda_idempotency::PROBLEMS`
//! (the layer), `orders::PROBLEMS` (the handlers) and
//! `idempotent_orders::problems::PROBLEMS` (the router and entry point).
//! Every one of them must be documented, with its status and title, in
//! both documents; and every problem the documents describe must be one of
//! them, with the same status. A problem added to the code without its
//! documents, or documented without the code, fails here.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// slug → (status, title), from the code.
type Problems = BTreeMap<&'static str, (u16, &'static str)>;

fn code_problems() -> Problems {
    let mut all = Problems::new();
    let lists = [
        lambda_idempotency::PROBLEMS,
        orders::PROBLEMS,
        idempotent_orders::problems::PROBLEMS,
    ];
    for kind in lists.into_iter().flatten() {
        let previous = all.insert(kind.slug, (kind.status.as_u16(), kind.title));
        assert!(
            previous.is_none(),
            "{} is listed twice across the crates",
            kind.slug
        );
    }
    all
}

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("openapi.yaml");
    serde_norway::from_str(&text).expect("openapi.yaml is YAML")
}

/// Follows `$ref`s (local ones, `#/...`) until a value that is not one.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').expect("local $ref");
                value = doc
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}"));
            }
            None => return value,
        }
    }
    panic!("$ref chain too long");
}

/// One documented response: where it is, the status it is for (`None` for
/// a component response, which has none of its own) and the response.
struct Documented<'a> {
    at: String,
    status: Option<u16>,
    response: &'a Value,
}

fn responses(doc: &Value) -> Vec<Documented<'_>> {
    let mut out = Vec::new();
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            let Some(responses) = operation.get("responses").and_then(Value::as_object) else {
                continue;
            };
            for (status, response) in responses {
                out.push(Documented {
                    at: format!("{method} {path} {status}"),
                    status: Some(status.parse().expect("numeric status")),
                    response: resolve(doc, response),
                });
            }
        }
    }
    let components = doc["components"]["responses"]
        .as_object()
        .expect("components");
    for (name, response) in components {
        out.push(Documented {
            at: format!("components/responses/{name}"),
            status: None,
            response: resolve(doc, response),
        });
    }
    out
}

/// The `status` a problem schema pins (`ProblemNNN`: `allOf` with a const).
fn pinned_status(doc: &Value, schema: &Value) -> Option<u64> {
    let schema = resolve(doc, schema);
    schema["allOf"].as_array()?.iter().find_map(|part| {
        resolve(doc, part)
            .pointer("/properties/status/const")
            .and_then(Value::as_u64)
    })
}

/// (status, slug) of every problem the description documents, after
/// checking each example against the code.
fn documented_problems(doc: &Value, code: &Problems) -> BTreeSet<(u16, String)> {
    let mut documented = BTreeSet::new();
    for Documented {
        at,
        status,
        response,
    } in responses(doc)
    {
        let Some(problem) = response.pointer("/content/application~1problem+json") else {
            let gateway = response.get("x-answered-by").and_then(Value::as_str);
            let success = status.is_some_and(|s| (200..300).contains(&s));
            assert!(
                success || gateway == Some("api-gateway"),
                "{at}: an error the function answers must be application/problem+json"
            );
            continue;
        };
        assert_ne!(
            response.get("x-answered-by").and_then(Value::as_str),
            Some("api-gateway"),
            "{at}: API Gateway does not answer problem+json"
        );
        let pinned = pinned_status(doc, &problem["schema"])
            .unwrap_or_else(|| panic!("{at}: the schema pins no status"));
        if let Some(status) = status {
            assert_eq!(u64::from(status), pinned, "{at}: schema for another status");
        }
        let examples = problem["examples"]
            .as_object()
            .unwrap_or_else(|| panic!("{at}: no examples naming its problems"));
        assert!(
            !examples.is_empty(),
            "{at}: no examples naming its problems"
        );
        for (slug, example) in examples {
            let value = &resolve(doc, example)["value"];
            let shown = value["status"].as_u64().expect("example status");
            assert_eq!(shown, pinned, "{at} {slug}: example of another status");
            let Some(&(status, title)) = code.get(slug.as_str()) else {
                panic!("{at}: {slug} is documented but the code never answers it");
            };
            assert_eq!(
                u64::from(status),
                pinned,
                "{at}: {slug} has status {status}"
            );
            assert_eq!(value["title"], title, "{at}: {slug}'s title");
            let kind = value["type"].as_str().expect("example type");
            assert!(
                kind.ends_with(&format!("/{slug}")) || kind.ends_with(&format!(":{slug}")),
                "{at}: {slug}'s example type is {kind}"
            );
            documented.insert((status, slug.clone()));
        }
    }
    documented
}

#[test]
fn every_problem_the_code_answers_is_in_openapi_yaml_and_nothing_else_is() {
    let doc = spec();
    let code = code_problems();
    let documented = documented_problems(&doc, &code);
    let answered: BTreeSet<(u16, String)> = code
        .iter()
        .map(|(slug, (status, _))| (*status, slug.to_string()))
        .collect();
    let missing: Vec<_> = answered.difference(&documented).collect();
    assert!(missing.is_empty(), "not in openapi.yaml: {missing:?}");
    let extra: Vec<_> = documented.difference(&answered).collect();
    assert!(extra.is_empty(), "documented, never answered: {extra:?}");
}

#[test]
fn the_problem_page_route_accepts_exactly_the_code_s_slugs() {
    let doc = spec();
    let operation = &doc["paths"]["/problems/{slug}"]["get"];
    let slug = operation["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "slug")
        .expect("slug parameter");
    let listed: BTreeSet<&str> = slug["schema"]["enum"]
        .as_array()
        .expect("enum of slugs")
        .iter()
        .map(|v| v.as_str().expect("slug"))
        .collect();
    let code: BTreeSet<&str> = code_problems().keys().copied().collect();
    assert_eq!(listed, code);
    assert_eq!(operation["security"], serde_json::json!([]), "open to all");
}

#[test]
fn every_problem_the_code_answers_has_its_section_in_docs_problems_md_and_nothing_else_does() {
    use idempotent_orders::problems::{documented_slugs, section};
    let code = code_problems();
    let sections: BTreeSet<&str> = documented_slugs().collect();
    let answered: BTreeSet<&str> = code.keys().copied().collect();
    assert_eq!(
        sections.len(),
        documented_slugs().count(),
        "a section appears twice"
    );
    let missing: Vec<_> = answered.difference(&sections).collect();
    assert!(
        missing.is_empty(),
        "no section in docs/problems.md: {missing:?}"
    );
    let extra: Vec<_> = sections.difference(&answered).collect();
    assert!(
        extra.is_empty(),
        "sections the code never answers: {extra:?}"
    );
    for (slug, (status, title)) in &code {
        let text = section(slug).expect("section");
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains(&format!("Status: `{status} ")),
            "{slug}: its section does not give status {status}"
        );
        assert!(
            words.contains(&format!("Title: \"{title}\"")),
            "{slug}: its section does not give the title {title:?}"
        );
        for part in ["**When:**", "**What to do:**"] {
            assert!(words.contains(part), "{slug}: no {part}");
        }
    }
}

#[test]
fn retry_allow_location_and_the_created_order_link_are_described() {
    let doc = spec();
    for Documented {
        at,
        status,
        response,
    } in responses(&doc)
    {
        if matches!(status, Some(409 | 503)) && response.get("x-answered-by").is_none() {
            let header = resolve(&doc, &response["headers"]["Retry-After"]);
            assert_eq!(header["required"], true, "{at}: Retry-After");
        }
    }
    let allow = &doc["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"];
    assert_eq!(allow["required"], true);

    let created = &doc["paths"]["/orders"]["post"]["responses"]["201"];
    assert_eq!(created["headers"]["Location"]["required"], true);
    assert!(created["headers"]["Idempotent-Replayed"].is_object());
    let link = &created["links"]["GetCreatedOrder"];
    assert_eq!(link["operationId"], "getOrder");
    assert_eq!(link["parameters"]["id"], "$response.body#/order/id");

    let key = resolve(&doc, &doc["paths"]["/orders"]["post"]["parameters"][0]);
    assert_eq!(key["name"], "Idempotency-Key");
    assert_eq!(key["required"], true);
    assert_eq!(key["schema"]["anyOf"][0]["maxLength"], 255);
}
