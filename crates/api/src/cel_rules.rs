//! Evaluates the CEL rules (`x-kubernetes-validations`) of Istio's CRD schemas, as the
//! Kubernetes API server does before Istio's webhook sees a resource.
//!
//! The rules run in a real CEL interpreter (the `cel` crate) with the Kubernetes extension
//! functions they use: the strings library (`substring`) and the URL library (`isURL`,
//! `url(x).getScheme()`, which is rewritten to `__url_scheme(x)` before compiling).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use cel::objects::Key;
use cel::{Context, Env, Program, Value as CelValue};
use regex::Regex;
use serde_json::Value;

/// Why a rule could not be evaluated (the rule is then reported as failed, as Kubernetes does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The rule does not compile.
    #[error("rule {rule:?} does not compile: {reason}")]
    Compile {
        /// The rule text.
        rule: String,
        /// The parser's message.
        reason: String,
    },
    /// Evaluation failed (a bad duration, a missing field).
    #[error("{0}")]
    Eval(String),
    /// The rule gave something other than a boolean.
    #[error("rule {0:?} did not evaluate to a boolean")]
    NotBool(String),
}

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        env.add_extension(cel::extensions::strings)
            .expect("the CEL strings extension registers");
        Arc::new(env)
    })
    .clone()
}

fn rewrite(rule: &str) -> String {
    static URL: OnceLock<Regex> = OnceLock::new();
    let re =
        URL.get_or_init(|| Regex::new(r"url\(([^()]*)\)\.getScheme\(\)").expect("valid regex"));
    re.replace_all(rule, "__url_scheme($1)").into_owned()
}

thread_local! {
    static PROGRAMS: RefCell<HashMap<String, Rc<Program>>> = RefCell::new(HashMap::new());
}

fn program(rule: &str) -> Result<Rc<Program>, RuleError> {
    PROGRAMS.with(|cache| {
        if let Some(p) = cache.borrow().get(rule) {
            return Ok(p.clone());
        }
        let compiled = env()
            .compile(&rewrite(rule))
            .map_err(|e| RuleError::Compile {
                rule: rule.to_string(),
                reason: e.to_string(),
            })?;
        let p = Rc::new(compiled);
        cache.borrow_mut().insert(rule.to_string(), p.clone());
        Ok(p)
    })
}

/// The scheme of `text` when it parses as an absolute URL (`scheme://...` or `scheme:...`).
fn url_scheme(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !rest.contains(char::is_whitespace);
    valid.then(|| scheme.to_ascii_lowercase())
}

/// Evaluates `rule` with `self` bound to `value`.
pub fn evaluate(rule: &str, value: &Value) -> Result<bool, RuleError> {
    let program = program(rule)?;
    let mut ctx = Context::with_env(env());
    ctx.add_variable_from_value("self", to_cel(value));
    ctx.add_function("isURL", |s: Arc<String>| url_scheme(&s).is_some())
        .map_err(|e| RuleError::Eval(format!("{e:?}")))?;
    ctx.add_function("__url_scheme", |s: Arc<String>| {
        url_scheme(&s).unwrap_or_default()
    })
    .map_err(|e| RuleError::Eval(format!("{e:?}")))?;
    match program.execute(&ctx) {
        Ok(CelValue::Bool(b)) => Ok(b),
        Ok(_) => Err(RuleError::NotBool(rule.to_string())),
        Err(e) => Err(RuleError::Eval(e.to_string())),
    }
}

/// JSON to CEL as Kubernetes maps it: integers are `int`, objects are maps with string keys.
fn to_cel(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(f)) => CelValue::Float(f),
            (None, None) => CelValue::Null,
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let m: HashMap<Key, CelValue> = map
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            m.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duration_rule() {
        let rule = "duration(self) >= duration('1ms')";
        assert!(evaluate(rule, &json!("1.5s")).unwrap());
        assert!(evaluate(rule, &json!("100ms")).unwrap());
        assert!(evaluate(rule, &json!("1h30m")).unwrap());
        assert!(!evaluate(rule, &json!("0s")).unwrap());
        assert!(evaluate(rule, &json!("5x")).is_err());
    }

    #[test]
    fn port_and_map_rules() {
        assert!(evaluate("0 < self && self <= 65535", &json!(443)).unwrap());
        assert!(!evaluate("0 < self && self <= 65535", &json!(70000)).unwrap());
        let ports = "self.all(key, 0 < int(key) && int(key) <= 65535)";
        assert!(evaluate(ports, &json!({"8080": {"mode": "DISABLE"}})).unwrap());
        assert!(!evaluate(ports, &json!({"0": {}})).unwrap());
        let dup = "self.all(l1, self.exists_one(l2, l1.number == l2.number))";
        assert!(evaluate(dup, &json!([{"number": 1}, {"number": 2}])).unwrap());
        assert!(!evaluate(dup, &json!([{"number": 1}, {"number": 1}])).unwrap());
    }

    #[test]
    fn presence_string_and_url_rules() {
        let one = "(has(self.selector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1";
        assert!(evaluate(one, &json!({"selector": {}})).unwrap());
        assert!(!evaluate(one, &json!({"selector": {}, "targetRefs": []})).unwrap());
        let uds = r#"self.startsWith("unix://") ? (self.substring(7, 8) == "/" || self.substring(7, 8) == "@") : true"#;
        assert!(evaluate(uds, &json!("unix:///var/run/x.sock")).unwrap());
        assert!(!evaluate(uds, &json!("unix://relative")).unwrap());
        assert!(evaluate(uds, &json!("10.0.0.1")).unwrap());
        let url = r#"url(self).getScheme() in ["http", "https"]"#;
        assert!(evaluate(url, &json!("https://example.com/jwks")).unwrap());
        assert!(!evaluate(url, &json!("ftp://example.com/jwks")).unwrap());
        let is_url = r#"isURL(self) ? (url(self).getScheme() in ["", "http", "https", "file", "oci"]) : (isURL("http://" + self) && url("http://" + self).getScheme() in ["", "http", "https", "file", "oci"])"#;
        assert!(evaluate(is_url, &json!("oci://ghcr.io/x")).unwrap());
        assert!(evaluate(is_url, &json!("ghcr.io/x")).unwrap());
        assert!(!evaluate(is_url, &json!("ftp://x")).unwrap());
        let names = r#"self.all(key, size(key) < 63 && key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"))"#;
        assert!(evaluate(names, &json!({"http": 80})).unwrap());
        assert!(!evaluate(names, &json!({"-bad": 80})).unwrap());
    }
}
