//! The committed JSON Schema, checked by an independent validator (Python's
//! `jsonschema`, Draft 7): it accepts what lucidd accepts and rejects what it rejects.

use std::process::Command;

use lucid_tests::skip;

const CHECK: &str = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
v = jsonschema.Draft7Validator(schema)
for path in sys.argv[2:]:
    doc = yaml.safe_load(open(path))
    errors = list(v.iter_errors(doc))
    print(path, "valid" if not errors else "invalid: " + errors[0].message)
"#;

#[test]
fn the_schema_agrees_with_lucidd() {
    let root = lucid_tests::repo_root();
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        return skip("the_schema_agrees_with_lucidd", ".venv with jsonschema is missing (scripts/test.sh creates it)");
    }
    let example = std::fs::read_to_string(root.join("examples/soc2-environment.yaml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("example", example.clone(), true),
        ("dev", std::fs::read_to_string(root.join("lucidd/src/config/profiles/dev.yaml")).unwrap(), true),
        ("bad-auditor", example.replace("lucid-eval-auditor", "lucid-evil-auditor"), false),
        ("bad-threshold", example.replace("INJECTION_THRESHOLD: \"0.8\"", "INJECTION_THRESHOLD: \"1.5\""), false),
        ("bad-key", example.replace("LOG_ALL_EVENTS:", "LOG_ALL_EVENT:"), false),
        ("bad-days", example.replace("LOG_RETENTION_DAYS: \"365\"", "LOG_RETENTION_DAYS: \"0\""), false),
        ("bad-top", example.replace("  infrastructure:", "  infrastucture:"), false),
    ];
    let mut args = Vec::new();
    for (name, text, _) in &cases {
        let path = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        args.push(path);
    }
    let out = Command::new(&python)
        .arg("-c")
        .arg(CHECK)
        .arg(root.join("lucidd/schema/lucid-environment.schema.json"))
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for ((name, yaml, valid), line) in cases.iter().zip(text.lines()) {
        assert_eq!(line.ends_with(" valid"), *valid, "schema says {line} for {name}");
        // lucidd agrees.
        assert_eq!(lucidd::config::parse(yaml, name).is_ok(), *valid, "lucidd disagrees on {name}");
    }
}
