//! Pointers parsed as RFC 6901 says, and only the named values blanked.

use super::*;

fn pointers(list: &[&str]) -> Vec<JsonPointer> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

fn blanked(body: &str, list: &[&str]) -> Option<String> {
    without(body.as_bytes(), &pointers(list)).map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn pointers_parse_as_rfc_6901_says() {
    let p: JsonPointer = "/a~1b/c~0d".parse().unwrap();
    assert_eq!(p.tokens, vec!["a/b", "c~d"]);
    assert_eq!(p.to_string(), "/a~1b/c~0d");
    for bad in ["", "client_ts", "/a~2", "/a~"] {
        assert!(bad.parse::<JsonPointer>().is_err(), "{bad:?}");
    }
}

#[test]
fn the_named_value_becomes_null_and_nothing_else_changes() {
    let body = r#"{"client_ts": 1733, "order": {"qty": 2.50, "meta": {"trace_id": "x"}}}"#;
    assert_eq!(
        blanked(body, &["/client_ts", "/order/meta/trace_id"]).unwrap(),
        r#"{"client_ts": null, "order": {"qty": 2.50, "meta": {"trace_id": null}}}"#
    );
}

#[test]
fn every_duplicate_member_and_an_array_item_are_blanked() {
    assert_eq!(
        blanked(r#"{"t":1,"a":[{"t":2},{"t":3}],"t":4}"#, &["/t", "/a/1/t"]).unwrap(),
        r#"{"t":null,"a":[{"t":2},{"t":null}],"t":null}"#
    );
}

#[test]
fn a_pointer_inside_another_is_covered_by_it() {
    assert_eq!(
        blanked(r#"{"m":{"t":1}}"#, &["/m/t", "/m"]).unwrap(),
        r#"{"m":null}"#
    );
}

#[test]
fn nothing_changes_when_no_value_is_named_or_the_body_is_not_json() {
    assert_eq!(blanked(r#"{"a":1}"#, &["/b", "/a/x", "/a/0"]), None);
    assert_eq!(blanked(r#"[1,2]"#, &["/01", "/2", "/-"]), None);
    assert_eq!(blanked("not json", &["/a"]), None);
    assert_eq!(blanked(r#"{"a":1"#, &["/a"]), None);
}
