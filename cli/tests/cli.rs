//! The `sightline` binary, run as a site team would run it.

use std::path::PathBuf;
use std::process::Command;

fn sightline(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example_plan() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../example-site/tracking-plan.json"
    )
    .to_string()
}

fn temp_file(name: &str, content: &str) -> String {
    let dir = std::env::temp_dir().join(format!("sightline-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn hash_email_and_phone_vectors() {
    let (code, out, _) = sightline(&["hash", "email", "  John_Smith@GMAIL.com "]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "john_smith@gmail.com\t62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f\n"
    );
    let (_, out, _) = sightline(&["hash", "email", "John.Smith@gmail.com", "--google"]);
    assert!(out.starts_with("johnsmith@gmail.com\t"));
    let (_, out, _) = sightline(&["hash", "phone", "(650) 555-1212", "--country", "US"]);
    assert_eq!(
        out,
        "+16505551212\t1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8\n"
    );
    let (_, out, _) = sightline(&["hash", "phone", "+1 650 555 1212", "--meta"]);
    assert_eq!(
        out,
        "16505551212\te323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176\n"
    );
    let (_, out, _) = sightline(&["hash", "phone", "8 (916) 123-45-67", "--country", "RU"]);
    assert!(out.starts_with("+79161234567\t"));
}

#[test]
fn invalid_input_and_bad_arguments_exit_2_with_one_line() {
    for args in [
        vec!["hash", "email", "not-an-email"],
        vec!["hash", "email", "test@test.com"],
        vec!["hash", "phone", "123", "--country", "US"],
        vec!["hash", "phone", "650 555 1212", "--country", "ZZ"],
        vec!["hash", "phone", "1", "--google", "--meta"],
        vec!["plan", "lint"],
        vec!["plan", "lint", "/nonexistent/plan.json"],
        vec!["nonsense"],
    ] {
        let (code, out, err) = sightline(&args);
        assert_eq!(code, 2, "{args:?}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn lint_ok_and_with_problems() {
    let (code, out, _) = sightline(&["plan", "lint", &example_plan()]);
    assert_eq!((code, out.starts_with("ok: ")), (0, true));
    let bad = temp_file(
        "bad-plan.json",
        r#"{"version":"1","events":{"A":{"properties":{"type":"strng","oneOf":[]}}}}"#,
    );
    let (code, out, _) = sightline(&["plan", "lint", &bad]);
    assert_eq!(code, 1);
    assert!(
        out.contains("$.events.A.properties.type: unknown type \"strng\""),
        "{out}"
    );
    assert!(
        out.contains("$.events.A.properties.oneOf: unsupported keyword `oneOf`"),
        "{out}"
    );
    assert!(out.ends_with("2 problem(s)\n"));
}

#[test]
fn validate_gives_one_verdict_per_line() {
    let events = temp_file(
        "events.ndjson",
        concat!(
            r#"{"type":"track","messageId":"1","anonymousId":"a","event":"Product Added","properties":{"product_id":"ETH-GUJI","price":14.5,"currency":"EUR"}}"#,
            "\n",
            r#"{"type":"track","messageId":"2","anonymousId":"a","event":"Product Added","properties":{"product_id":"ETH-GUJI","price":-1}}"#,
            "\n",
            "\n",
            r#"{"type":"track","messageId":"3","anonymousId":"a","event":"Something New"}"#,
            "\n",
            "not json\n",
            r#"{"type":"identify","messageId":"5","userId":"u","traits":{"email_sha256":"bob@example.com"}}"#,
            "\n",
        ),
    );
    let (code, out, _) = sightline(&["plan", "validate", &example_plan(), &events]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1: valid");
    assert!(lines[1].starts_with("2: invalid: "), "{}", lines[1]);
    assert!(lines[1].contains("missing_required at $.properties.currency"));
    assert!(lines[1].contains("out_of_range at $.properties.price"));
    assert_eq!(lines[2], "4: valid (flagged: unplanned_event)");
    assert!(lines[3].starts_with("5: invalid: not a message"));
    assert!(lines[4].starts_with("6: invalid: raw_pii at $.traits.email_sha256"));
    assert_eq!(lines[5], "2 valid, 3 invalid");

    let good = temp_file(
        "good.ndjson",
        r#"{"type":"page","messageId":"p","anonymousId":"a"}"#,
    );
    let (code, out, _) = sightline(&["plan", "validate", &example_plan(), &good]);
    assert_eq!((code, out.as_str()), (0, "1: valid\n1 valid, 0 invalid\n"));

    let bad_plan = temp_file("bad.json", "{}");
    let (code, _, err) = sightline(&["plan", "validate", &bad_plan, &good]);
    assert_eq!(code, 2);
    assert!(err.contains("not a valid plan"));
}
