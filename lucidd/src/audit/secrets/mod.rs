//! `lucid-policy-auditor` / `lucid-secrets-auditor`: credential detection (CC6.1, C1.1).
//!
//! Rules are read in the gitleaks TOML format (id, regex, secretGroup, entropy,
//! keywords, allowlists), so an operator's existing gitleaks config loads as it is
//! (`GITLEAKS_CONFIG`); the built-in set (`audit/rules/default-secrets.toml`) is in the same
//! format.
//!
//! Each rule's regex runs either anchored at the places its prefixes occur, found for
//! many rules in one pass (`anchor`), or, for a rule without a usable prefix, over the
//! whole text with the regex engine's literal prefilter (a SIMD scan for the literal
//! every match must contain, a few microseconds per 64 KiB for a rule that does not
//! fire).
//! Keywords keep their gitleaks meaning (a rule with keywords applies only to a text
//! containing one, case-insensitively) but are checked after a regex hit, in the match
//! first and the whole text only if needed: one up-front keyword automaton over every
//! text measured slower than all the regexes together, because short keywords such as
//! `key-` or `eyj` occur in prose.

mod anchor;
mod tables;

use std::sync::{Arc, OnceLock};

use aho_corasick::AhoCorasick;
use regex::Regex;
use regex_automata::meta;
use regex_automata::util::captures::Captures;
use regex_automata::{Anchored, Input};
use serde::Deserialize;

use super::{AuditError, Auditor, Finding, Outcome, Redaction, Stage, Subject, Verdict};
use crate::config::auditors::{AuditorId, PolicyEnv};

/// The built-in rules.
pub const DEFAULT_RULES: &str = include_str!("../rules/default-secrets.toml");

/// Why a rules file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// Not TOML, or not the gitleaks shape.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// What is wrong (with line and column from the TOML parser).
        message: String,
    },
    /// A rule's regex does not compile.
    #[error("{file}: rule {rule}: {message}")]
    Regex {
        /// The file.
        file: String,
        /// The rule id.
        rule: String,
        /// The regex error.
        message: String,
    },
    /// A rule's keyword automaton could not be built.
    #[error("{file}: rule {rule}: keywords: {message}")]
    Keywords {
        /// The file.
        file: String,
        /// The rule id.
        rule: String,
        /// The error.
        message: String,
    },
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The error.
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
struct GlConfig {
    #[serde(default)]
    rules: Vec<GlRule>,
    #[serde(default)]
    allowlist: Option<GlAllowlist>,
    #[serde(default)]
    allowlists: Vec<GlAllowlist>,
}

#[derive(Deserialize)]
struct GlRule {
    id: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default, rename = "secretGroup")]
    secret_group: Option<usize>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    allowlist: Option<GlAllowlist>,
    #[serde(default)]
    allowlists: Vec<GlAllowlist>,
}

#[derive(Deserialize, Default)]
struct GlAllowlist {
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default, rename = "regexTarget")]
    regex_target: Option<String>,
    #[serde(default)]
    stopwords: Vec<String>,
}

struct Allow {
    regexes: Vec<Regex>,
    /// Match the regexes against the whole match instead of the secret.
    on_match: bool,
    stopwords: Vec<String>,
}

impl Allow {
    fn allows(&self, secret: &str, whole: &str) -> bool {
        let target = if self.on_match { whole } else { secret };
        let lower = secret.to_lowercase();
        self.regexes.iter().any(|r| r.is_match(target)) || self.stopwords.iter().any(|w| lower.contains(w.as_str()))
    }
}

struct Rule {
    id: String,
    regex: meta::Regex,
    /// Where matches can begin, when that can be known without running the regex.
    anchor: Option<anchor::Anchor>,
    /// The capture group holding the secret; `None` (gitleaks' `secretGroup` unset or
    /// 0) takes the first group that matched something, as gitleaks does, and the whole
    /// match where none did.
    secret_group: Option<usize>,
    entropy: Option<f64>,
    /// The rule's keywords (ASCII case-insensitive); `None` when it has none.
    keywords: Option<AhoCorasick>,
    allow: Vec<Allow>,
}

impl Rule {
    /// Whether the rule's keyword condition holds for a hit `whole` in `text`; `in_text`
    /// caches the whole-text answer for this scan.
    fn keyword_present(&self, whole: &str, text: &str, in_text: &mut Option<bool>) -> bool {
        let Some(k) = &self.keywords else { return true };
        k.is_match(whole) || *in_text.get_or_insert_with(|| k.is_match(text))
    }
}

/// A compiled rule set.
pub struct RuleSet {
    rules: Vec<Rule>,
    global: Vec<Allow>,
    /// The pass over the prefixes of the rules anchored `Via::Shared`.
    shared: Option<aho_corasick::packed::Searcher>,
    /// Whether password columns of tables are read too (`tables`): the built-in set.
    tables: bool,
}

fn compile_allow(file: &str, rule: &str, a: GlAllowlist) -> Result<Allow, RulesError> {
    let regexes = a
        .regexes
        .iter()
        .map(|r| Regex::new(r).map_err(|e| RulesError::Regex { file: file.into(), rule: rule.into(), message: e.to_string() }))
        .collect::<Result<_, _>>()?;
    Ok(Allow {
        regexes,
        on_match: matches!(a.regex_target.as_deref(), Some("match") | Some("line")),
        stopwords: a.stopwords.into_iter().map(|w| w.to_lowercase()).collect(),
    })
}

impl RuleSet {
    /// Parses and compiles a gitleaks config; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<RuleSet, RulesError> {
        let cfg: GlConfig = toml::from_str(text).map_err(|e| RulesError::Parse { file: file.into(), message: e.to_string() })?;
        let mut rules = Vec::new();
        let mut planner = anchor::Planner::default();
        for r in cfg.rules {
            // Path-only rules (no regex) concern file names, which prompts do not have.
            let Some(source) = r.regex.as_deref() else { continue };
            let regex = meta::Regex::new(source)
                .map_err(|e| RulesError::Regex { file: file.into(), rule: r.id.clone(), message: e.to_string() })?;
            let mut allow = Vec::new();
            for a in r.allowlist.into_iter().chain(r.allowlists) {
                allow.push(compile_allow(file, &r.id, a)?);
            }
            let keywords = match r.keywords.is_empty() {
                true => None,
                false => Some(
                    AhoCorasick::builder()
                        .ascii_case_insensitive(true)
                        .build(&r.keywords)
                        .map_err(|e| RulesError::Keywords { file: file.into(), rule: r.id.clone(), message: e.to_string() })?,
                ),
            };
            rules.push(Rule {
                id: r.id,
                secret_group: r.secret_group.filter(|g| *g > 0).map(|g| g.min(regex.captures_len().saturating_sub(1))),
                anchor: planner.plan(source),
                regex,
                entropy: r.entropy,
                keywords,
                allow,
            });
        }
        let mut global = Vec::new();
        for a in cfg.allowlist.into_iter().chain(cfg.allowlists) {
            global.push(compile_allow(file, "(global allowlist)", a)?);
        }
        let shared = planner.finish();
        if shared.is_none() {
            // Without the shared pass (no SIMD searcher here), those rules scan alone.
            for rule in &mut rules {
                rule.anchor.take_if(|a| a.via == anchor::Via::Shared);
            }
        }
        Ok(RuleSet { rules, global, shared, tables: false })
    }

    /// Reads a gitleaks config file.
    pub fn load(path: &str) -> Result<RuleSet, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read { file: path.into(), source })?;
        RuleSet::parse(&text, path)
    }

    /// The built-in rules (compiled once).
    pub fn builtin() -> Result<Arc<RuleSet>, String> {
        static SET: OnceLock<Result<Arc<RuleSet>, String>> = OnceLock::new();
        SET.get_or_init(|| {
            RuleSet::parse(DEFAULT_RULES, "<built-in rules>").map(|set| Arc::new(RuleSet { tables: true, ..set })).map_err(|e| e.to_string())
        })
            .clone()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Finds secrets in `text`: (rule id, start, end) of the secret part.
    pub fn scan<'a>(&'a self, text: &str) -> Vec<(&'a str, usize, usize)> {
        self.scan_with(text, true)
    }

    /// `scan`, with anchored searches for the rules that have an anchor when `anchors`,
    /// or every rule over the whole text when not (the tests compare the two).
    fn scan_with<'a>(&'a self, text: &str, anchors: bool) -> Vec<(&'a str, usize, usize)> {
        // The secrets taken so far, start -> (end, rule), disjoint: the one starting last
        // before a new secret's end is the only one that can overlap it (a list searched
        // for every finding made a text dense with secrets quadratic).
        let mut taken: std::collections::BTreeMap<usize, (usize, &str)> = std::collections::BTreeMap::new();
        let mut positions = anchor::Positions::new(text.as_bytes(), self.shared.as_ref());
        for rule in &self.rules {
            let mut keyword_in_text = None;
            let mut accept = |caps: &Captures| {
                let Some(whole) = caps.get_match().map(|m| m.span()) else { return };
                let secret = match rule.secret_group {
                    Some(g) => caps.get_group(g),
                    None => (1..caps.group_len()).find_map(|g| caps.get_group(g).filter(|s| !s.is_empty())),
                }
                .unwrap_or(whole);
                let (Some(whole_text), Some(secret_text)) = (text.get(whole.range()), text.get(secret.range())) else { return };
                if !rule.keyword_present(whole_text, text, &mut keyword_in_text) {
                    return;
                }
                if rule.entropy.is_some_and(|min| shannon_entropy(secret_text) < min) {
                    return;
                }
                if rule.allow.iter().chain(&self.global).any(|a| a.allows(secret_text, whole_text)) {
                    return;
                }
                if taken.range(..secret.end.max(secret.start + 1)).next_back().is_some_and(|(_, (e, _))| *e > secret.start) {
                    return;
                }
                taken.insert(secret.start, (secret.end, rule.id.as_str()));
            };
            // An anchored search that fails can read to the end of the text (a PEM
            // header with no footer), so a rule runs anchored at most at
            // `MAX_ANCHORED` places; with more candidates it scans the ordinary way,
            // once. A rule's cost is then at most `MAX_ANCHORED + 1` passes over the
            // text, whatever the text: linear (tested by
            // `rule_auditors_run_in_time_linear_in_the_text`).
            let anchored = rule.anchor.as_ref().filter(|_| anchors).and_then(|a| Some((a, positions.of(a)?)));
            let starts: Option<Vec<usize>> = anchored.and_then(|(anchor, at)| {
                let starts: Vec<usize> = anchor.starts(text.as_bytes(), at).take(MAX_ANCHORED + 1).collect();
                (starts.len() <= MAX_ANCHORED).then_some(starts)
            });
            match starts {
                Some(starts) => {
                    let mut caps = rule.regex.create_captures();
                    let mut next = 0;
                    for start in starts {
                        if start < next {
                            continue;
                        }
                        rule.regex.search_captures(&Input::new(text).range(start..).anchored(Anchored::Yes), &mut caps);
                        if let Some(m) = caps.get_match() {
                            next = m.end();
                            accept(&caps);
                        }
                    }
                }
                None => rule.regex.captures_iter(text).for_each(|caps| accept(&caps)),
            }
        }
        if self.tables && tables::mentions_password(text) {
            for (start, end) in tables::password_cells(text) {
                let cell = &text[start..end];
                let overlaps = taken.range(..end).next_back().is_some_and(|(_, (e, _))| *e > start);
                if !overlaps && !self.global.iter().any(|a| a.allows(cell, cell)) {
                    taken.insert(start, (end, "password-table"));
                }
            }
        }
        taken.into_iter().map(|(start, (end, id))| (id, start, end)).collect()
    }
}

/// The most places one rule is searched anchored in one text (see `scan_with`).
const MAX_ANCHORED: usize = 16;

/// Shannon entropy in bits per character, as gitleaks computes it.
pub fn shannon_entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts.iter().filter(|c| **c > 0).map(|c| {
        let p = f64::from(*c) / n;
        -p * p.log2()
    }).sum()
}

/// The auditor, configured.
pub struct SecretsAuditor {
    id: AuditorId,
    env: PolicyEnv,
    rules: Arc<RuleSet>,
}

impl SecretsAuditor {
    /// An auditor with these settings and rules.
    pub fn new(id: AuditorId, env: PolicyEnv, rules: Arc<RuleSet>) -> SecretsAuditor {
        SecretsAuditor { id, env, rules }
    }
}

impl Auditor for SecretsAuditor {
    fn id(&self) -> AuditorId {
        self.id
    }

    fn audit(&self, _stage: Stage, subject: &Subject, _deadline: std::time::Instant) -> Result<Verdict, AuditError> {
        if !self.env.credential_detection_enabled.0 {
            return Ok(Verdict::proceed());
        }
        let mut v = Verdict::proceed();
        for (i, seg) in subject.segments.iter().enumerate() {
            let scan = |text: &str| self.rules.scan(text).into_iter().map(|(rule, s, e)| (rule, s, e, 1.0)).collect();
            for super::Hit { kind: rule, start: a, end: b, score, encoding } in seg.find(scan) {
                v.findings.push(Finding { kind: rule.into(), segment: i, start: a, end: b, score, encoding, hash: None });
                v.redactions.push(Redaction { segment: i, start: a, end: b, replacement: format!("<SECRET:{rule}>") });
            }
        }
        if !v.findings.is_empty() {
            v.reason = Some(format!("credential found: {}", super::finding_kinds(&v.findings)));
            v.scores.insert("credential".into(), 1.0);
            v.outcome = if self.env.credential_block_on_detection.0 { Outcome::Deny } else { Outcome::Redact };
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &str) -> Vec<String> {
        let rules = RuleSet::builtin().unwrap();
        rules.scan(text).into_iter().map(|(id, ..)| id.to_string()).collect()
    }

    #[test]
    fn builtin_rules_compile_and_find_provider_tokens() {
        assert!(RuleSet::builtin().unwrap().len() >= 25);
        assert_eq!(ids("key AKIAQWERTYUIOPASDFGH here"), ["aws-access-key-id"]);
        assert_eq!(ids("export GITHUB_TOKEN=ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"), ["github-token"]);
        assert_eq!(ids("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"), ["slack-token"]);
        assert_eq!(ids("sk_live_4eC39HqLyjWDarjtT1zdp7dc00aBcDeF"), ["stripe-secret-key"]);
        assert_eq!(ids("hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"), ["huggingface-token"]);
        assert_eq!(ids("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MaoTTAtjv4WZlF0qnIA9\n-----END RSA PRIVATE KEY-----"), ["private-key"]);
        assert_eq!(ids("db_password = \"h7Gk2pQ9xL4mN8vR3tY6\""), ["generic-secret-assignment"]);
    }

    /// Issue 15: human passwords (short, low entropy) in config lines, command lines,
    /// connection options and prose in the seven locales; and the look-alikes that must
    /// stay quiet.
    #[test]
    fn passwords_in_config_lines_and_prose_are_found_and_look_alikes_are_not() {
        let rules = RuleSet::builtin().unwrap();
        let found = |text: &str| -> Vec<String> { rules.scan(text).into_iter().map(|(_, a, b)| text[a..b].to_string()).collect() };
        for (text, secret) in [
            ("password: Summer2024!", "Summer2024!"),
            ("DB_PASS=hunter2x", "hunter2x"),
            ("\"password\": \"P@ssw0rd123\"", "P@ssw0rd123"),
            ("mysql -u root --password Tr0ub4dor&3 -h db", "Tr0ub4dor&3"),
            ("Server=db;User Id=sa;Password=Winter#2023;", "Winter#2023"),
            ("The admin password is Tr0ub4dor&3.", "Tr0ub4dor&3"),
            ("the wifi password is now c0ffee-shop", "c0ffee-shop"),
            ("Mein Passwort ist Sommer2024!", "Sommer2024!"),
            ("Le mot de passe est Soleil#2023", "Soleil#2023"),
            ("La contraseña es Verano2024*", "Verano2024*"),
            // Argument lists, basic credentials encoded in code, a key cut short.
            ("subprocess.run([\"vault\", \"login\", \"--token\", \"hvs.CAESIJ4k9Xq2LmNpR7tYw\"])", "hvs.CAESIJ4k9Xq2LmNpR7tYw"),
            ("args = ['--password', 'Kaffee#2024', '--host', 'db']", "Kaffee#2024"),
            ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEf\nI cut it here because it is secret, why does the login fail?", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEf"),
            ("subprocess.run([\"sshpass\", \"-p\", \"Linde42@x\", \"ssh\", \"deploy@10.0.0.5\"])", "Linde42@x"),
            ("[\"--bot-token\", \"7b3f9c2e8a1d4f6b0e5c9a7d\"]", "7b3f9c2e8a1d4f6b0e5c9a7d"),
            ("headers: { Authorization: 'Basic ' + btoa('admin:Sommer2024!') }", "Sommer2024!"),
            ("auth = base64.b64encode(b\"svc-deploy:Tr0ub4dor&3\").decode()", "Tr0ub4dor&3"),
            ("var auth = Convert.ToBase64String(Encoding.ASCII.GetBytes(\"svc:Winter#2023\"));", "Winter#2023"),
            ("$auth = base64_encode('api:Kaffee#2024');", "Kaffee#2024"),
            ("auth = Base64.strict_encode64(\"deploy:Linde42@x\")", "Linde42@x"),
            ("token = base64.urlsafe_b64encode(b'ci:Sommer2024!')", "Sommer2024!"),
            ("args:\n  - --token\n  - 7b3f9c2e8a1d4f6b0e5c9a7d\n  - --verbose", "7b3f9c2e8a1d4f6b0e5c9a7d"),
            ("{\"type\": \"service_account\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4"),
            ("La password è Estate2024!", "Estate2024!"),
            ("Het wachtwoord is Zomer2024!", "Zomer2024!"),
            ("pwd = 12345678", "12345678"),
            ("POSTGRES_PASSWORD_PROD: 'Bl4ckC@t!'", "Bl4ckC@t!"),
            // Issue 15: prefixed keys, function arguments, words between the key and
            // the verb, typographic quotes, command lines, a login written as a pair.
            ("PGPASSWORD=Tulip_42 psql -h db -U app", "Tulip_42"),
            ("define( 'DB_PASSWORD', 'Maple77!' );", "Maple77!"),
            ("the root password of the staging database is Quartz#19", "Quartz#19"),
            ("Das Root-Passwort der Datenbank ist „Linde42@“.", "Linde42@"),
            ("le mot de passe du compte est Orage55#, mais", "Orage55#"),
            ("mysql -u root -p'Falcon12#' -h 127.0.0.1 shop", "Falcon12#"),
            ("redis-cli -h cache -a hazel9981 ping", "hazel9981"),
            ("sshpass -p 'R1verStone' ssh ops@10.0.0.4", "R1verStone"),
            ("curl -u admin:Birch_2017 https://nas.local:5001", "Birch_2017"),
            ("htpasswd -b -c /etc/nginx/.htpasswd admin q8rtz0pLmn", "q8rtz0pLmn"),
            ("my jenkins login is admin / kx82nd0QpL - how do I", "kx82nd0QpL"),
            ("api_key: 3f9a0c41d2b87e56a1c0f9e4d3b27a68", "3f9a0c41d2b87e56a1c0f9e4d3b27a68"),
            ("MAILGUN=9f0c2a4be71d3c85f6a0e2d4c8b1f370-5c1e9a2b-7d3f0e64", "9f0c2a4be71d3c85f6a0e2d4c8b1f370-5c1e9a2b-7d3f0e64"),
            ("Authorization: Basic YWRtaW46UzNjcmV0IQ==", "YWRtaW46UzNjcmV0IQ=="),
            ("client = Client(\"AC0f3a9c2e41d7b8a6c5e0f9d2a3b4c5d6\", \"q8Zr2LmN0pXv4TbW7yKc1HdJ5sFa9GeQ\")", "q8Zr2LmN0pXv4TbW7yKc1HdJ5sFa9GeQ"),
            ("TWILIO_AUTH_TOKEN=0f3a9c2e41d7b8a6c5e0f9d2a3b4c5d6", "0f3a9c2e41d7b8a6c5e0f9d2a3b4c5d6"),
            ("DD_APP_KEY: 0f3a9c2e41d7b8a6c5e0f9d2a3b4c5d61e2f3a4b", "0f3a9c2e41d7b8a6c5e0f9d2a3b4c5d61e2f3a4b"),
            // Hex keys whose entropy falls below the generic floor (3.4): 32 hex digits
            // drawn from few of the sixteen, as a third of real ones are.
            ("auth_token = \"a1a1b2b2c3c3a1a1b2b2c3c3d4d4e5e5\"", "a1a1b2b2c3c3a1a1b2b2c3c3d4d4e5e5"),
            ("api_key: 00aa11bb22cc33dd44ee55ff00aa11bb", "00aa11bb22cc33dd44ee55ff00aa11bb"),
            // Basic credentials in a headers dict and in an HTTP client's call.
            ("headers = {\"Authorization\": \"Basic YWRtaW46UzNjcmV0IQ==\"}", "YWRtaW46UzNjcmV0IQ=="),
            ("r = requests.get(url, auth=(\"svc-report\", \"Hollow_Pine8\"))", "Hollow_Pine8"),
            ("client.get(url, auth=HTTPBasicAuth('admin', 'Kestrel#31'))", "Kestrel#31"),
            // XML, SQL, docker and PowerShell; "pw" as a key.
            ("<server><id>nexus</id><username>deploy</username><password>Gr4nite!Peak</password></server>", "Gr4nite!Peak"),
            ("CREATE USER 'report'@'%' IDENTIFIED BY 'Otter_2291';", "Otter_2291"),
            ("ALTER USER app IDENTIFIED WITH mysql_native_password BY 'Lynx77!x';", "Lynx77!x"),
            ("docker login -u ci-bot -p Ember_Fox_19 registry.example.org", "Ember_Fox_19"),
            ("$pw = ConvertTo-SecureString 'W1llow#Creek' -AsPlainText -Force", "W1llow#Creek"),
            ("$pw = ConvertTo-SecureString 'P@ssw0rd9' -Force -AsPlainText", "P@ssw0rd9"),
            ("r = requests.get(url, auth=(USERNAME, \"Hollow_Pine8\"))", "Hollow_Pine8"),
            // Left open by the review, now read: a spelled-out name and a colon, XML
            // attributes, SET PASSWORD, a colon after the verb.
            ("My API key: Zq8vX3mT1kL9pW4nB7cR", "Zq8vX3mT1kL9pW4nB7cR"),
            ("<property name=\"db.password\" value=\"Granite_77x\"/>", "Granite_77x"),
            ("<add key=\"SmtpPassword\" value=\"Heron#2291\" />", "Heron#2291"),
            ("SET PASSWORD FOR 'app'@'%' = 'Pelican_88!';", "Pelican_88!"),
            ("the new password will be: Osprey#4410", "Osprey#4410"),
            ("vpn user: jmeyer pw: Tannen2020!", "Tannen2020!"),
            ("WLAN PW ist Kiefer#884", "Kiefer#884"),
            // A sentence naming what the password is for, then a colon; keys in prose.
            ("Passwort für den Router: Kiefer#884", "Kiefer#884"),
            ("the password for the staging db: Quartz#19x", "Quartz#19x"),
            ("mot de passe pour le wifi : Orage55#", "Orage55#"),
            ("my Twilio auth token is 8f14e45fceea167a5a36dedd4bea2543", "8f14e45fceea167a5a36dedd4bea2543"),
            ("Der API-Key für das Staging lautet sk9Xv2Lq7Tz4Wm1Rb8Nc", "sk9Xv2Lq7Tz4Wm1Rb8Nc"),
            // Options on a command line; a password written before its name.
            ("twilio profiles:create --auth-token 8f14e45fceea167a5a36dedd4bea2543", "8f14e45fceea167a5a36dedd4bea2543"),
            ("./deploy.sh --api-key=Zq8vX3mT1kL9pW4nB7cR", "Zq8vX3mT1kL9pW4nB7cR"),
            ("Sommer2024! is the new admin password", "Sommer2024!"),
            ("Nimm Linde42@ als Passwort für den Testzugang", "Linde42@"),
            ("utilise Orage55# comme mot de passe", "Orage55#"),
        ] {
            let got = found(text);
            assert!(got.iter().any(|g| g == secret), "{text}: {got:?}");
        }
        for benign in [
            "Forgot your password? Click the reset link.",
            "The password is stored hashed with argon2.",
            "password: ${DB_PASSWORD}",
            "password: \"{{ vault_db_password }}\"",
            "password_file: /run/secrets/db_password",
            "PASSWORD=changeme",
            "password: ********",
            "Passwords must be at least 12 characters long.",
            "Set the password to something memorable.",
            "Das Passwort ist abgelaufen.",
            "Le mot de passe est incorrect.",
            "We took the bypass: 25 minutes faster.",
            "The compass: north by northwest.",
            "My passport is D48906095.",
            "passport_number: X37921473",
            "Use a passphrase generator.",
            "password = os.environ['DB_PASSWORD']",
            "<input type=\"password\" autocomplete=\"current-password\" minlength=\"12\">",
            "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "mysql -u root -p -h db shop",
            "mysql -u root -p${MYSQL_PWD} shop",
            "curl -u admin:$PASSWORD https://x",
            "the login page is /admin/login: nothing else",
            "my login is admin / password",
            // The service-account file's type line is no secret (its private key is).
            "{\"type\": \"service_account\", \"project_id\": \"demo\"}",
            "<password>${env.NEXUS_PASSWORD}</password>",
            "CREATE USER 'report'@'%' IDENTIFIED BY '{{ report_password }}';",
            "docker login -u ci-bot -p $CI_REGISTRY_PASSWORD registry.example.org",
            "docker login -u ci-bot --password-stdin < token.txt",
            "r = requests.get(url, auth=(user, password))",
            "pw = getpass.getpass()",
            "pw = hash_password(raw)",
            "the PW is on the sticky note",
            "The password for the account: see the vault entry",
            "Password requirements for admins: twelve characters",
            "The API key is documented_in_the_wiki_section",
            "the token is refreshed_automatically every hour",
            "the secret is aaaaaaaaaaaaaaaaaaaaaaaa",
            "The API key for production is stored in Vault.",
            "this is the password you asked about",
            "Write it as the password field says.",
            "use --token $GITHUB_TOKEN in CI",
            "--secret-name prod-db-credentials",
            "Is it the password?",
            "12345 is not a strong password",
            // Found in review: commands, documentation, code and terminal output.
            "docker login ghcr.io && docker run -p 8080:80 nginx",
            "docker login registry.example.com; docker run --rm -p 5432:5432 postgres:16",
            "Each record is identified by `customer_id` in the table.",
            "The vulnerability identified by 'CVE-2024-3094' affects xz.",
            "Password for 'https://bob@github.com':",
            "[sudo] password for pi: \n/usr/bin/python3: No module named pip",
            "Password for user postgres: \npsql.bin: error: connection refused",
            "Passwords for Postgres 15: scram-sha-256 by default",
            "Password for MySQL 8.0: caching_sha2_password is the default",
            "$pw = Read-Host -AsSecureString",
            "$pw = Get-Credential",
            "pw = self.patch_size",
            "pw = padding[1]",
            "pw = (kernel_w - 1) // 2",
            "PW = 1.5e-6",
            "old_pw = user.password",
            "1Password is my password manager",
            "Argon2id is the recommended password hashing algorithm",
            "PBKDF2 is a password hashing function",
            "SHA-256 is not a password hash",
            "Django uses PBKDF2 as the password hasher by default",
            "Set MYSQL_ROOT_PASSWORD as the password variable",
            "~/.pgpass is the password file",
            "assert user.password_hash is not password",
            "The token for USDC is 0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
            "The client secret is /etc/secrets/client.json",
            "The secret is kube-system/default-token-x7k2p",
            "The secret key is SECRET_KEY_BASE_2024",
            "the token is base64url-encoded",
            "the access token is valid_for_3600_seconds",
            "kubectl --token /var/run/secrets/kubernetes.io/serviceaccount/token get pods",
            "docker service create --secret source=db_password_v2,target=db redis",
            "docker build --secret id=aws_credentials,src=$HOME/.aws/credentials .",
            "meta: { auth: ['admin', 'manager'] }",
            "@auth(\"GET\", \"/users\")",
            "<password>YOUR_PASSWORD</password>",
            "<password>your-password-here</password>",
            "<Password>%DB_PASSWORD%</Password>",
            "<password>@db.password@</password>",
            "CREATE USER app IDENTIFIED BY 'your_password';",
            "auth=(\"apikey\", \"YOUR_API_KEY\")",
            "HTTPBasicAuth('user', 'changeme')",
            "Topics: authentication, authorization, basic networking and SQL",
            "Authorization: Basic authentication is deprecated",
            "token_sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "\"author_commit\": \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b\"",
            "<property name=\"db.password\" value=\"${DB_PASSWORD}\"/>",
            "<add key=\"SmtpPassword\" value=\"%SMTP_PASSWORD%\" />",
            "<property name=\"password.minLength\" value=\"12\"/>",
            "SET PASSWORD FOR 'app'@'%' = '{{ app_password }}';",
            "the password is: required",
            "API key: see the dashboard",
            "Access token: valid for one hour",
            "auth_token = \"0000000000000000000000000000000a\"",
            "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "cmd = [\"app\", \"--token\", \"$VAULT_TOKEN\"]",
            "argv = ['--password', '--stdin']",
            "['--token', '/run/secrets/token']",
            "btoa(`${user}:${pass}`)",
            "btoa('hello world')",
            "runner.invoke(cli, [\"--token\", \"test-token\"])",
            "[\"--api-key\", \"fake-key-123\"]",
            "[\"docker\",\"build\",\"--secret\",\"id=npmrc,src=.npmrc\",\".\"]",
            "[\"gcloud\",\"secrets\",\"versions\",\"access\",\"latest\",\"--secret\",\"db-password\"]",
            "[\"openssl\",\"pkcs12\",\"-pass\",\"file:pass.txt\"]",
            "[\"docker\",\"run\",\"-p\",\"8080:80\",\"nginx\"]",
            "btoa('https://cdn.shopify.com/s/files/1/hero.png')",
            "b64encode(b'data:image/png;base64,iVBORw0KGgo')",
            "btoa('mailto:support@acme.io')",
            "args:\n  - --token\n  - $(VAULT_TOKEN)\n  - --password\n  - --stdin",
            "args:\n  - --token\n  - {{ .Values.token }}",
            "args:\n  - --secret\n  - db-password",
            "var bytes = Encoding.UTF8.GetBytes(\"hello world\");",
            "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
            "the file starts with -----BEGIN PRIVATE KEY----- and ends with the END line",
        ] {
            assert!(rules.scan(benign).is_empty(), "{benign}: {:?}", found(benign));
        }
    }

    /// The anchored searches find exactly what running every rule over the whole text
    /// finds, on texts built to trip them: tokens glued to words, tokens inside tokens,
    /// prefixes without a body, runs dense enough in `_` and `-` to fall back, PEM
    /// blocks, and text in other scripts.
    #[test]
    fn anchored_searches_find_what_whole_text_scans_find() {
        let rules = RuleSet::builtin().unwrap();
        let anchored = rules.rules.iter().filter(|r| r.anchor.is_some()).count();
        assert!(anchored >= 20, "only {anchored} built-in rules are anchored");
        let pieces = [
            "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "xghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "ghp_", "gh_", "ghp_short",
            "github_pat_11ABCDEFG0abcdefghijklmn_opqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstu",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxp-", "sk_live_4eC39HqLyjWDarjtT1zdp7dc00aBcDeF",
            "rk_test_", "sk-proj-", "sk-ant-api03-", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOp",
            "shpat_0123456789abcdef0123456789abcdef", "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh", "hf_hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
            "key-0123456789abcdef0123456789abcdef", "npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "pypi-AgEIcHlwaS5vcmc",
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX0123456789ABCDEFGHIJ",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MaoTTAtjv4WZlF0qnIA9\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN", "----- ", "AKIAQWERTYUIOPASDFGH", "api_key = \"h7Gk2pQ9xL4mN8vR3tY6\"", "a_b_c_d-e-f-g_", "__--__--",
            "snake_case_name = other_value - 1", "AKIA", "AKIAAKIAQWERTYUIOPASDFGH", "EAAAKIAQWERTYUIOPASDFGH",
            "EAAAbCdEfGhIjKlMnOpQrStUv", "sq0atp-AbCdEfGhIjKlMnOpQrStUv", "glpat-AbCdEfGhIjKlMnOpQrStUv", "gldt-",
            "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "\"type\": \"service_account\"", "\"type\"",
            "SG.AbCdEfGhIjKlMnOpQrStUv.AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGhIjKlMnOpQ", "dapi0123456789abcdef0123456789abcdef",
            "aws_secret_access_key = \"wJalrxUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKE1\"", "AWS", "dapidapi", "the", "report", " ", "\n", ": ", "=", "é", "ß", "日本", "٢",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..3000 {
            let mut text = String::new();
            let len = 1 + round % 60;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push_str(pieces[(x % pieces.len() as u64) as usize]);
                if x.is_multiple_of(3) {
                    text.push(' ');
                }
            }
            assert_eq!(rules.scan_with(&text, true), rules.scan_with(&text, false), "{text:?}");
        }
    }

    #[test]
    fn look_alikes_are_not_secrets() {
        for benign in [
            "the example key AKIAIOSFODNN7EXAMPLE from the AWS docs",
            "password = \"changeme\"",
            "token = ${API_TOKEN}",
            "api_key = your_api_key_here",
            "commit 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
            "uuid 123e4567-e89b-12d3-a456-426614174000",
            "the secret to good bread is patience",
        ] {
            assert!(ids(benign).is_empty(), "{benign}: {:?}", ids(benign));
        }
    }

    /// Issue 15: the forms detect-secrets' keyword detector and common tools know that
    /// the rules above missed (comparisons, setters and login calls, tools that take a
    /// password as an argument or on standard input, tables), and their look-alikes.
    #[test]
    fn passwords_in_code_calls_pipes_tools_and_tables() {
        let rules = RuleSet::builtin().unwrap();
        let found = |text: &str| -> Vec<String> { rules.scan(text).into_iter().map(|(_, a, b)| text[a..b].to_string()).collect() };
        for (text, secret) in [
            ("string password = @\"Kestrel#31\";", "Kestrel#31"),
            ("if password == \"Maple77!\":", "Maple77!"),
            ("if (\"Maple77!\".equals(password))", "Maple77!"),
            ("if (adminPwd.equals(\"Maple77!\"))", "Maple77!"),
            ("redis://:Maple77x@cache:6379/0", "Maple77x"),
            ("network={\n  ssid=\"home\"\n  psk=\"Maple77!x\"\n}", "Maple77!x"),
            ("net user admin Maple77! /add", "Maple77!"),
            ("echo 'Maple77!' | sudo -S apt update", "Maple77!"),
            ("echo \"app:Maple77!\" | chpasswd", "Maple77!"),
            ("echo Maple77! | docker login -u ci --password-stdin", "Maple77!"),
            ("server.login(\"me@example.com\", \"Maple77!\")", "Maple77!"),
            ("ftp.login('user', 'Maple77!')", "Maple77!"),
            ("DriverManager.getConnection(url, \"app\", \"Maple77!\")", "Maple77!"),
            ("DataSourceBuilder.create().username(\"app\").password(\"Maple77!\").build()", "Maple77!"),
            ("user.set_password('Maple77!')", "Maple77!"),
            ("storePassword 'Maple77!'", "Maple77!"),
            ("SECRET_KEY = 'django-insecure-8f#k2l!x0q9m4n7b3v6c1z5'", "django-insecure-8f#k2l!x0q9m4n7b3v6c1z5"),
            ("Mon mot de passe, c'est soleil2023", "soleil2023"),
            ("DB password -> Maple77!", "Maple77!"),
            ("sqlcmd -S db -U sa -P Maple77!", "Maple77!"),
            ("mongo -u admin -p Maple77! --authenticationDatabase admin", "Maple77!"),
            ("smbclient //nas/share -U admin%Maple77!", "Maple77!"),
            ("keytool -importcert -file ca.pem -keystore ks.jks -storepass Maple77!", "Maple77!"),
            ("rabbitmqctl add_user admin Maple77!", "Maple77!"),
            ("ldapsearch -x -D cn=admin,dc=acme -w Maple77! -b dc=acme", "Maple77!"),
            ("zip -r -P Maple77! backup.zip data/", "Maple77!"),
            ("7z a -pMaple77! backup.7z data/", "Maple77!"),
            ("ipmitool -I lanplus -H 10.0.0.9 -U admin -P Maple77! power status", "Maple77!"),
            ("| username | password |\n|---|---|\n| admin | Maple77! |", "Maple77!"),
            ("host,user,password\ndb1,app,Tr0ub4dor&3", "Tr0ub4dor&3"),
            ("| Field | Value |\n|---|---|\n| Password | Osprey#4410 |", "Osprey#4410"),
            // HTTP clients' basic credentials: continued command lines, other clients,
            // other languages; Twilio's SID and token together or named in prose.
            ("curl -X POST https://api.example.com/v1/jobs \\\n  -H 'Content-Type: application/json' \\\n  -u deploy:Maple77! \\\n  -d '{}'", "Maple77!"),
            ("http -a admin:Maple77! GET https://nas.local/api", "Maple77!"),
            ("req.SetBasicAuth(\"admin\", \"Maple77!\")", "Maple77!"),
            ("var cred = new NetworkCredential(\"svc\", \"Maple77!\");", "Maple77!"),
            ("new UsernamePasswordCredentials(\"svc\", \"Maple77!\")", "Maple77!"),
            ("curl_setopt($ch, CURLOPT_USERPWD, \"api:Maple77!\");", "Maple77!"),
            ("const options = { host: 'nas', auth: 'admin:Maple77!' };", "Maple77!"),
            ("http.basic_auth 'admin', 'Maple77!'", "Maple77!"),
            ("curl https://api.twilio.com/2010-04-01/Accounts.json -u AC0f3a9c2e41d7b8a6c5e0f9d2a3b4c5d6:aa11bb22cc33dd44aa11bb22cc33dd44", "aa11bb22cc33dd44aa11bb22cc33dd44"),
            ("my twilio auth token 8f14e45fceea167a5a36dedd4bea2543, can you check it", "8f14e45fceea167a5a36dedd4bea2543"),
            // The review's walk-arounds.
            ("echo \"Maple77!\" | sudo --stdin apt update", "Maple77!"),
            ("echo \"Maple77!\" | sudo -kS apt update", "Maple77!"),
            ("curl -udeploy:Maple77! https://api.example.com", "Maple77!"),
            ("curl -su deploy:Maple77! https://api.example.com", "Maple77!"),
            ("network={\n    ssid=\"office\"\n    psk=\"Kiefer#8842\"\n}", "Kiefer#8842"),
        ] {
            let got = found(text);
            assert!(got.iter().any(|g| g == secret), "{text}: {got:?}");
        }
        for benign in [
            "if password == \"\":",
            "if password == confirm_password:",
            "if (password.equals(confirmPassword))",
            "if password != \"null\"",
            "if pwd is None or pwd == \"undefined\":",
            "if input_type == 'password':",
            "form = PasswordField(\"Password\", validators=[DataRequired()])",
            "name = ui.password(\"Passphrase:\")",
            "ok = user.check_password(\"hunter2\")",
            "reset_password(\"user@example.com\")",
            "smtp.login(user, password)",
            "7z a -tzip archive.zip -p -mem=AES256 folder",
            "net user /domain",
            "net user jdoe /active:no",
            "the net user command creates accounts on Windows",
            "net user admin\nUser name  admin",
            "keytool -list -keystore ks.jks -storepass:env KS_PASS",
            "ipmitool -I lanplus -H bmc -U admin -P $IPMI_PW chassis status",
            "echo \"$PASSWORD\" | sudo -S apt update",
            "echo 'hello world' | sudo -S tee /etc/motd",
            "echo ${{ secrets.DOCKER_PASSWORD }} | docker login -u ci --password-stdin",
            "secret_name = \"arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf\"",
            "token_url = \"https://oauth2.googleapis.com/token\"",
            "token_pattern = \"(?u)\\\\b\\\\w\\\\w+\\\\b\"",
            "token_email = \"release-bot@company-name.example.org\"",
            "secret_fmt = \"%(asctime)s-%(name)s-%(levelname)s\"",
            "$this->password = $password;",
            "$user->password->getHashedValue()",
            "password = hashed_value",
            "pw = newPassword",
            "mongo --host db --port 27017",
            "zip -r out.zip dir -x \"*.git*\"",
            "Mon mot de passe, c'est important de le changer",
            "psk: true",
            "http://localhost:8080/path",
            // The review's look-alikes.
            "if [[ $PWD == \"/home/deploy/app\" ]]; then",
            "network:\n  key_mgmt=WPA-PSK\n  pairwise=CCMP",
            "Security: WPA2-PSK AES-CCMP",
            "Note that the password, which is case-sensitive, must be changed yearly.",
            "Go to Settings -> Password -> Two-factor",
            "cache_key = \"user:1234:profile:v2\"",
            "sort_key = \"ORDER#2024-05-01#A123\"",
            "ssl_key = \"C:\\certs\\prod\\server.key\"",
            "\"key\": \"#/components/schemas/User\"",
            "signing_key = \"release-bot@acme-corp.io\"",
            "docker run -d --name mongo -p 27017:27017 mongo:7",
            "I'm speaking at the .NET User Group (DNUG) next week",
            "Register for the .NET User Conference 2025",
            "7z x data.7z && find . -type f -print0 | xargs -0 sha256sum",
            "The http server runs with: docker run -u 1000:1000 -p 80:80 nginx",
            "docker run -u 1000:1000 -v data:/data alpine",
            "curl -u $USER:$TOKEN https://api.example.com",
            "const options = { host: 'nas', auth: 'admin:password' };",
            "const options = { auth: 'user:secret' };",
            "Use NetworkCredential(user, password) for that.",
        ] {
            assert!(rules.scan(benign).is_empty(), "{benign}: {:?}", found(benign));
        }
    }

    #[test]
    fn gitleaks_configs_load_with_secret_groups_and_allowlists() {
        let cfg = r#"
title = "custom"
[[rules]]
id = "acme-token"
regex = '''acme_(?:live|test)_([a-z0-9]{12})'''
secretGroup = 1
keywords = ["acme_"]
[rules.allowlist]
stopwords = ["000000"]
[[rules]]
id = "path-only"
path = '''\.pem$'''
"#;
        let set = RuleSet::parse(cfg, "acme.toml").unwrap();
        assert_eq!(set.len(), 1);
        let found = set.scan("x acme_live_abc123def456 y acme_test_000000abcdef");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "acme-token");
        // Keywords keep gitleaks' meaning: a rule applies only where one occurs, in any
        // case, in the match or elsewhere in the text.
        let kw = "[[rules]]\nid = \"ctx\"\nregex = '''\\b([0-9a-f]{24})\\b'''\nsecretGroup = 1\nkeywords = [\"widget\"]\n";
        let set = RuleSet::parse(kw, "kw.toml").unwrap();
        assert!(set.scan("build 3f2a9c4e1b7d8a6f5e4c3b2a").is_empty());
        assert_eq!(set.scan("WIDGET key 3f2a9c4e1b7d8a6f5e4c3b2a").len(), 1);
        // secretGroup unset: the first group that matched (gitleaks' rule), or the match.
        let alt = "[[rules]]\nid = \"alt\"\nregex = '''(?:a=(\\d{4})|b=(\\d{4})|c=\\d{4})'''\n";
        let set = RuleSet::parse(alt, "alt.toml").unwrap();
        let text = "a=1234 b=5678 c=9012";
        let spans: Vec<&str> = set.scan(text).into_iter().map(|(_, s, e)| &text[s..e]).collect();
        assert_eq!(spans, ["1234", "5678", "c=9012"]);
        let bad = RuleSet::parse("[[rules]]\nid = \"x\"\nregex = '''(unclosed'''\n", "bad.toml");
        assert!(matches!(bad, Err(RulesError::Regex { .. })));
        let bad = RuleSet::parse("[[rules]\n", "bad.toml");
        assert!(matches!(bad, Err(RulesError::Parse { .. })));
    }
}
