//! `examples/try.sh`, the one command in the README that runs the payments
//! example locally: it must show a payment (201), its replay and a `422`
//! for the same key with another amount, and leave no process behind.

use std::process::Command;

#[test]
fn the_try_script_shows_a_payment_its_replay_and_a_422() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/try.sh");
    let mut command = Command::new("bash");
    // Its cargo lambda watch builds in this workspace's target directory.
    testkit::harness::without_run_env(&mut command);
    let output = command.arg(script).output().expect("bash is required");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    let statuses: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("HTTP/"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["201", "201", "422"], "{text}");
    assert_eq!(
        text.matches("idempotent-replayed: true").count(),
        1,
        "{text}"
    );
    assert!(text.contains("idempotency-key-reused"), "{text}");
    let left = Command::new("pgrep")
        .args(["-f", "target/debug/examples/payments"])
        .output()
        .expect("pgrep is required (apt-get install procps)");
    assert!(
        left.stdout.is_empty(),
        "processes left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
