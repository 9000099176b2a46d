//! Config tests: the reference example loads unchanged, profiles expand to the same
//! structure, and every kind of mistake is reported at its line and column.

use super::*;

const EXAMPLE: &str = include_str!("../../../examples/soc2-environment.yaml");

fn err(text: &str) -> (u64, u64, String) {
    match parse(text, "test.yaml") {
        Err(ConfigError::Invalid { file, line, column, message }) => {
            assert_eq!(file, "test.yaml");
            (line, column, message)
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

fn example_with(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "{from}");
    EXAMPLE.replacen(from, to, 1)
}

#[test]
fn reference_example_loads_unchanged() {
    let env = parse(EXAMPLE, "soc2-environment.yaml").unwrap();
    assert_eq!(env.metadata.name, "soc2-compliant-ai");
    let agent = &env.spec.agents[0];
    assert_eq!(agent.model.id, "meta-llama/Llama-3.1-8B");
    let pre: Vec<_> = agent.audit_chain.pre_request.iter().map(|a| a.auditor_id.as_str()).collect();
    assert_eq!(pre, ["lucid-guardrails-auditor", "lucid-pii-compliance-auditor", "lucid-policy-auditor"]);
    assert_eq!(agent.audit_chain.post_response.len(), 2);
    assert_eq!(env.retention_days(), Some(365));
    match &agent.audit_chain.pre_request[0].env {
        AuditorSettings::Guardrails(g) => {
            assert_eq!(g.injection_threshold.0, 0.8);
            assert_eq!(g.toxicity_threshold.0, 0.7);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn soc2_profile_expands_to_the_example_chain() {
    let example = parse(EXAMPLE, "x").unwrap();
    let with_profile = r#"apiVersion: lucid.io/v1alpha1
kind: LucidEnvironment
metadata:
  name: soc2-compliant-ai
spec:
  infrastructure:
    provider: aws
    region: us-east-1
  agents:
    - name: soc2-agent
      model:
        id: meta-llama/Llama-3.1-8B
      gpu:
        type: A10G
        memory: 24GB
      profile: soc2
"#;
    let expanded = parse(with_profile, "y").unwrap();
    // The example's preRequest as it is; its postResponse after three auditors that read
    // the answer (issue 13: the example's postResponse reads no response).
    let (got, want) = (&expanded.spec.agents[0].audit_chain, &example.spec.agents[0].audit_chain);
    assert_eq!(got.pre_request, want.pre_request);
    let post: Vec<&str> = got.post_response.iter().map(|a| a.auditor_id.as_str()).collect();
    assert_eq!(post, ["lucid-guardrails-auditor", "lucid-pii-compliance-auditor", "lucid-policy-auditor", "lucid-observability-auditor", "lucid-eval-auditor"]);
    assert_eq!(got.post_response[3..], want.post_response[..]);
    // With the example's postResponse given explicitly, the profile is the example.
    let example_post = "      auditChain:\n        postResponse:\n          - auditorId: lucid-observability-auditor\n            name: System Monitoring (CC7.2)\n            env:\n              LOG_RETENTION_DAYS: \"365\"\n              LOG_ALL_EVENTS: \"true\"\n              ANOMALY_DETECTION_ENABLED: \"true\"\n          - auditorId: lucid-eval-auditor\n            name: Change Management (CC8.1)\n            env:\n              MODEL_INTEGRITY_CHECK: \"true\"\n              SAFETY_BENCHMARKS_ENABLED: \"true\"\n";
    let same = parse(&format!("{with_profile}{example_post}"), "w").unwrap();
    assert_eq!(same, example);
    assert_eq!(same.digest(), example.digest());
    // A stage given explicitly replaces the profile's stage.
    let replaced = format!("{with_profile}      auditChain:\n        postResponse: []\n");
    let env = parse(&replaced, "z").unwrap();
    assert!(env.spec.agents[0].audit_chain.post_response.is_empty());
    assert_eq!(env.spec.agents[0].audit_chain.pre_request.len(), 3);
}

/// Issue 13: the soc2 profile reads answers; the reference example, which does not, loads
/// unchanged and is warned about.
#[test]
fn the_soc2_profile_reads_responses_and_the_example_is_warned_about() {
    let profile = parse(DEV_DEFAULT, "dev").unwrap();
    let facts = crate::controls::Facts::default();
    assert!(crate::controls::warnings(&profile, &crate::controls::inventory(&profile, &facts)).is_empty());
    let example = parse(EXAMPLE, "example").unwrap();
    let warned = crate::controls::warnings(&example, &crate::controls::inventory(&example, &facts));
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].starts_with("agent soc2-agent: its responses are read by no auditor"), "{warned:?}");
}

#[test]
fn dev_default_loads() {
    let env = parse(DEV_DEFAULT, "<embedded>").unwrap();
    assert_eq!(env.spec.agents[0].audit_chain.pre_request.len(), 3);
}

#[test]
fn unknown_auditor_id_is_located() {
    let (line, col, msg) = err(&example_with("auditorId: lucid-policy-auditor", "auditorId: lucid-polcy-auditor"));
    assert_eq!((line, col), (33, 24), "{msg}");
    assert!(msg.contains("unknown auditorId \"lucid-polcy-auditor\""), "{msg}");
}

#[test]
fn unknown_env_key_is_located_at_the_key() {
    let (line, col, msg) = err(&example_with("LOG_ALL_EVENTS:", "LOG_ALL_EVENT:"));
    assert_eq!((line, col), (43, 15), "{msg}");
    assert!(msg.contains("LOG_ALL_EVENT"), "{msg}");
}

#[test]
fn bad_values_are_located_at_the_value() {
    let (line, col, msg) = err(&example_with("INJECTION_THRESHOLD: \"0.8\"", "INJECTION_THRESHOLD: \"1.5\""));
    assert_eq!((line, col), (24, 36), "{msg}");
    assert!(msg.contains("between 0 and 1"), "{msg}");
    let (line, _, msg) = err(&example_with("PII_DETECTION_ENABLED: \"true\"", "PII_DETECTION_ENABLED: \"yes\""));
    assert_eq!(line, 30, "{msg}");
    assert!(msg.contains("\"true\" or \"false\""), "{msg}");
    let (line, _, msg) = err(&example_with("LOG_RETENTION_DAYS: \"365\"", "LOG_RETENTION_DAYS: \"0\""));
    assert_eq!(line, 42, "{msg}");
    assert!(msg.contains("between 1 and 36500"), "{msg}");
    let (line, _, msg) = err(&example_with("LOG_RETENTION_DAYS: \"365\"", "LOG_RETENTION_DAYS: \"a year\""));
    assert_eq!(line, 42, "{msg}");
    assert!(msg.contains("whole number of days"), "{msg}");
}

#[test]
fn unknown_keys_and_wrong_types_are_located() {
    let (line, col, msg) = err(&example_with("  infrastructure:", "  infrastucture:"));
    assert_eq!((line, col), (8, 3), "{msg}");
    assert!(msg.contains("unknown field `infrastucture`"), "{msg}");
    let (line, _, msg) = err(&example_with("      gpu:\n        type: A10G\n        memory: 24GB\n", "      gpu: [1, 2]\n"));
    assert_eq!(line, 15, "{msg}");
    let (line, col, msg) = err(&example_with("apiVersion: lucid.io/v1alpha1", "apiVersion: lucid.io/v2"));
    assert_eq!((line, col), (3, 13), "{msg}");
    let (line, _, msg) = err(&example_with("  agents:\n", "  agents:\n    - name: soc2-agent\n      model:\n        id: other\n"));
    assert_eq!(line, 15, "duplicate agent name reported at the second one: {msg}");
    let (line, col, msg) = err("apiVersion: [unclosed\n");
    // The flow sequence opens where a string was expected: line 1, at the `[`.
    assert_eq!((line, col), (1, 13), "{msg}");
    assert!(msg.contains("expected string"), "{msg}");
}

#[test]
fn committed_schema_matches_the_types() {
    let committed = include_str!("../../schema/lucid-environment.schema.json");
    assert!(
        committed == schema::schema_json(),
        "lucidd/schema/lucid-environment.schema.json is stale: regenerate it with `lucidd schema > lucidd/schema/lucid-environment.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(committed).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
}

#[test]
fn gateway_upstream_and_operators_are_typed() {
    let text = example_with(
        "      gpu:\n",
        "      upstream:\n        url: http://10.0.0.5:8000/v1/\n        timeoutSeconds: 30\n      gpu:\n",
    )
    .replace("  agents:\n", "  gateway:\n    listen: 0.0.0.0:9000\n  agents:\n");
    let env = parse(&text, "t").unwrap();
    assert_eq!(env.spec.gateway.listen.port(), 9000);
    assert_eq!(env.spec.agents[0].upstream.url.0, "http://10.0.0.5:8000/v1");
    assert_eq!(env.spec.agents[0].upstream.timeout_seconds, 30);
    // Defaults: vLLM's address and the gateway on loopback.
    let plain = parse(EXAMPLE, "x").unwrap();
    assert_eq!(plain.spec.agents[0].upstream.url.0, "http://127.0.0.1:8000/v1");
    assert_eq!(plain.spec.gateway.listen.to_string(), "127.0.0.1:8700");

    let (line, col, msg) = err(&text.replace("url: http://10.0.0.5:8000/v1/", "url: ftp://x"));
    assert_eq!((line, col), (18, 14), "{msg}");
    assert!(!msg.contains("at line"), "the position is not repeated: {msg}");
    let (line, _, msg) = err(&text.replace("listen: 0.0.0.0:9000", "listen: nowhere"));
    assert_eq!(line, 12, "{msg}");
    let ops = example_with("ACCESS_CONTROL_ENABLED: \"true\"", "ACCESS_CONTROL_ENABLED: \"true\"\n              PII_OPERATORS: \"email_address=mask,shoe_size=hash\"");
    let (line, col, msg) = err(&ops);
    assert_eq!((line, col), (33, 30), "{msg}");
    assert!(msg.contains("shoe_size"), "{msg}");
    let ok = example_with("ACCESS_CONTROL_ENABLED: \"true\"", "ACCESS_CONTROL_ENABLED: \"true\"\n              PII_OPERATORS: \"email_address=mask,us_ssn=hash\"");
    assert!(parse(&ok, "ok").is_ok());
}

#[test]
fn exempt_system_prompts_take_sha256_digests_only() {
    let digest = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
    let text = format!("{EXAMPLE}        exemptSystemPrompts:\n          - sha256:{digest}\n");
    let env = parse(&text, "t").unwrap();
    assert_eq!(env.spec.agents[0].audit_chain.exempt_system_prompts, [digest.to_ascii_lowercase()]);
    assert_ne!(env.digest(), parse(EXAMPLE, "x").unwrap().digest(), "the exemption is part of the configuration's digest");
    let (line, col, msg) = err(&format!("{EXAMPLE}        exemptSystemPrompts: [\"You are helpful.\"]\n"));
    assert_eq!((line, col), (50, 31), "{msg}");
    assert!(msg.contains("not a SHA-256 digest"), "{msg}");
}
