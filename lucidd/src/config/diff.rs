//! Structural diff of two normalised configurations, for `config` ledger records: a
//! list of changed leaves with JSON-pointer paths, which an auditor can read without
//! a YAML diff tool.

use lucid_common::api::ConfigChange;
use serde_json::Value;

/// What changed from `old` to `new`.
pub fn diff(old: &Value, new: &Value) -> Vec<ConfigChange> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<ConfigChange>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = format!("{path}/{}", escape(k));
                match b.get(k) {
                    Some(vb) => walk(&p, va, vb, out),
                    None => out.push(ConfigChange { path: p, old: Some(va.clone()), new: None }),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    out.push(ConfigChange { path: format!("{path}/{}", escape(k)), old: None, new: Some(vb.clone()) });
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let p = format!("{path}/{i}");
                match (a.get(i), b.get(i)) {
                    (Some(va), Some(vb)) => walk(&p, va, vb, out),
                    (Some(va), None) => out.push(ConfigChange { path: p, old: Some(va.clone()), new: None }),
                    (None, Some(vb)) => out.push(ConfigChange { path: p, old: None, new: Some(vb.clone()) }),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(ConfigChange { path: path.to_string(), old: Some(a.clone()), new: Some(b.clone()) }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn reports_changed_added_and_removed_leaves() {
        let a = json!({"x": 1, "list": [1, 2], "gone": true, "a/b": 0});
        let b = json!({"x": 2, "list": [1], "new": "y", "a/b": 0});
        let changes = super::diff(&a, &b);
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, vec!["/gone", "/list/1", "/x", "/new"]);
        assert!(super::diff(&a, &a).is_empty());
    }
}
