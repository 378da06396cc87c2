//! Checks the CEL expressions of the Telemetry API (access-log filters and metric tag
//! values) and lowers them into [`Expr`], the tree a proxy evaluates. The `cel` crate
//! parses them; what a proxy runs is the part of CEL such expressions use: literals,
//! Envoy's attributes, header maps indexed with `[...]`, `in` and `has()`, `!`, `&&`,
//! `||`, comparisons, `? :`, the string tests `startsWith`, `endsWith` and `contains`, and
//! `string()`, `int()` and `duration()`. Anything else is an error that names what is not
//! supported.

use cel::common::ast::{Expr as Cel, IdedExpr, LiteralValue, operators};
use meshwork_resources::Comparison;
use meshwork_resources::expr::{Attribute, Expr, TextTest, Value};

/// A dotted name (`request.headers`), when the expression is one.
fn dotted(e: &IdedExpr) -> Option<String> {
    match &e.expr {
        Cel::Ident(id) => Some(id.clone()),
        Cel::Select(s) if !s.test => Some(format!("{}.{}", dotted(&s.operand)?, s.field)),
        _ => None,
    }
}

/// A header map (`request.headers`, `response.headers`): true for the request's.
fn header_map(e: &IdedExpr) -> Option<bool> {
    match dotted(e)?.as_str() {
        "request.headers" => Some(true),
        "response.headers" => Some(false),
        _ => None,
    }
}

fn literal_string(e: &IdedExpr) -> Option<String> {
    match &e.expr {
        Cel::Literal(LiteralValue::String(s)) => Some(s.inner().to_string()),
        _ => None,
    }
}

/// A CEL duration (`1s`, `250ms`, `1m30s`) in nanoseconds.
fn duration(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a duration");
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let (unit, scale) = [
            ("ns", 1.0),
            ("us", 1e3),
            ("ms", 1e6),
            ("s", 1e9),
            ("m", 60e9),
            ("h", 3600e9),
        ]
        .into_iter()
        .find(|(u, _)| rest.starts_with(u) && !(u == &"m" && rest.starts_with("ms")))
        .ok_or_else(bad)?;
        total += value * scale;
        rest = &rest[unit.len()..];
    }
    Ok(total as i64)
}

/// A header read: `map[key]` (`index`) or `key in map`, of the request's or the
/// response's headers.
fn header(map: &IdedExpr, key: &IdedExpr, index: bool) -> Result<Expr, String> {
    let request = header_map(map).ok_or(if index {
        "only request.headers and response.headers can be indexed"
    } else {
        "`in` is for request.headers and response.headers"
    })?;
    let key = literal_string(key)
        .ok_or("a header is named by a string")?
        .to_ascii_lowercase();
    Ok(match (request, index) {
        (true, true) => Expr::RequestHeader(key),
        (false, true) => Expr::ResponseHeader(key),
        (true, false) => Expr::HasRequestHeader(key),
        (false, false) => Expr::HasResponseHeader(key),
    })
}

fn lower(e: &IdedExpr) -> Result<Expr, String> {
    let boxed = |e: &IdedExpr| lower(e).map(Box::new);
    Ok(match &e.expr {
        Cel::Literal(LiteralValue::Boolean(b)) => Expr::Literal(Value::Bool(*b.inner())),
        Cel::Literal(LiteralValue::Int(n)) => Expr::Literal(Value::Int(*n.inner())),
        Cel::Literal(LiteralValue::UInt(n)) => Expr::Literal(Value::Int(
            i64::try_from(*n.inner()).map_err(|_| "the number is too large")?,
        )),
        Cel::Literal(LiteralValue::String(s)) => Expr::Literal(Value::Str(s.inner().to_string())),
        Cel::Literal(other) => return Err(format!("{other:?} literals are not supported")),
        // `has(request.headers.x)`.
        Cel::Select(s) if s.test => {
            let key = s.field.to_ascii_lowercase();
            match header_map(&s.operand) {
                Some(true) => Expr::HasRequestHeader(key),
                Some(false) => Expr::HasResponseHeader(key),
                None => return Err("has() is for request.headers and response.headers".into()),
            }
        }
        Cel::Ident(_) | Cel::Select(_) => {
            let name = dotted(e).ok_or("a field of something that is not an attribute")?;
            match Attribute::named(&name) {
                Some(a) => Expr::Attribute(a),
                None if name == "request.headers" || name == "response.headers" => {
                    return Err(format!("{name} is a map: index it, as {name}['x-name']"));
                }
                None => return Err(format!("{name} is not an attribute meshwork knows")),
            }
        }
        Cel::Call(call) => {
            let args = &call.args;
            let arity = |n: usize| {
                if args.len() == n {
                    Ok(())
                } else {
                    Err(format!("{}() takes {n} argument(s)", call.func_name))
                }
            };
            let comparison = match call.func_name.as_str() {
                operators::EQUALS => Some(Comparison::Eq),
                operators::NOT_EQUALS => Some(Comparison::Ne),
                operators::LESS => Some(Comparison::Lt),
                operators::LESS_EQUALS => Some(Comparison::Le),
                operators::GREATER => Some(Comparison::Gt),
                operators::GREATER_EQUALS => Some(Comparison::Ge),
                _ => None,
            };
            if let Some(op) = comparison {
                arity(2)?;
                return Ok(Expr::Compare(op, boxed(&args[0])?, boxed(&args[1])?));
            }
            if let Some(target) = &call.target {
                let test = match call.func_name.as_str() {
                    "startsWith" => TextTest::StartsWith,
                    "endsWith" => TextTest::EndsWith,
                    "contains" => TextTest::Contains,
                    other => return Err(format!("the method {other}() is not supported")),
                };
                arity(1)?;
                return Ok(Expr::Text(test, boxed(target)?, boxed(&args[0])?));
            }
            match call.func_name.as_str() {
                operators::LOGICAL_AND => {
                    arity(2)?;
                    Expr::And(boxed(&args[0])?, boxed(&args[1])?)
                }
                operators::LOGICAL_OR => {
                    arity(2)?;
                    Expr::Or(boxed(&args[0])?, boxed(&args[1])?)
                }
                operators::LOGICAL_NOT => {
                    arity(1)?;
                    Expr::Not(boxed(&args[0])?)
                }
                operators::CONDITIONAL => {
                    arity(3)?;
                    Expr::Choose(boxed(&args[0])?, boxed(&args[1])?, boxed(&args[2])?)
                }
                operators::INDEX => {
                    arity(2)?;
                    header(&args[0], &args[1], true)?
                }
                operators::IN => {
                    arity(2)?;
                    header(&args[1], &args[0], false)?
                }
                operators::NEGATE => match args.first().map(lower) {
                    Some(Ok(Expr::Literal(Value::Int(n)))) => Expr::Literal(Value::Int(
                        n.checked_neg().ok_or("the number is too large")?,
                    )),
                    _ => return Err("`-` is only for numbers".into()),
                },
                "string" => {
                    arity(1)?;
                    Expr::ToString(boxed(&args[0])?)
                }
                "int" | "uint" => {
                    arity(1)?;
                    Expr::ToInt(boxed(&args[0])?)
                }
                "duration" => {
                    arity(1)?;
                    let text = literal_string(&args[0]).ok_or("duration() takes a string")?;
                    Expr::Literal(Value::Duration(duration(&text)?))
                }
                op if op.starts_with('_') || op.starts_with('@') => {
                    return Err(format!(
                        "the operator {} is not supported",
                        op.trim_matches(['_', '@'])
                    ));
                }
                other => return Err(format!("the function {other}() is not supported")),
            }
        }
        _ => return Err("lists, maps, messages and comprehensions are not supported".into()),
    })
}

/// Parses and checks `text`.
pub fn parse(text: &str) -> Result<Expr, String> {
    if text.trim().is_empty() {
        return Err("the expression is empty".into());
    }
    let parsed = cel::parser::Parser::new().parse(text).map_err(|e| {
        // The first line: the rest draws the expression with a caret.
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default().to_string();
        format!("not valid CEL: {first}")
    })?;
    lower(&parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_resources::expr::Attributes;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Facts {
        values: BTreeMap<&'static str, Value>,
        request: BTreeMap<&'static str, &'static str>,
        response: BTreeMap<&'static str, &'static str>,
    }

    impl Attributes for Facts {
        fn attribute(&self, attribute: Attribute) -> Option<Value> {
            let name = Attribute::ALL.iter().find(|(_, a)| *a == attribute)?.0;
            self.values.get(name).cloned()
        }
        fn request_header(&self, name: &str) -> Option<&str> {
            self.request.get(name).copied()
        }
        fn response_header(&self, name: &str) -> Option<&str> {
            self.response.get(name).copied()
        }
    }

    fn facts() -> Facts {
        Facts {
            values: BTreeMap::from([
                ("response.code", Value::Int(503)),
                ("request.method", Value::Str("GET".into())),
                ("request.url_path", Value::Str("/api/v1/items".into())),
                ("request.host", Value::Str("shop.example.com".into())),
                ("destination.port", Value::Int(9080)),
                ("connection.mtls", Value::Bool(true)),
                ("request.duration", Value::Duration(1_500_000_000)),
            ]),
            request: BTreeMap::from([("x-debug", "on"), ("user-agent", "curl/8")]),
            response: BTreeMap::from([("content-type", "text/plain")]),
        }
    }

    fn holds(text: &str) -> bool {
        parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .holds(&facts())
    }

    #[test]
    fn filters_hold_as_cel_says() {
        for (text, expected) in [
            ("response.code >= 400", true),
            ("response.code >= 400 && response.code < 500", false),
            ("response.code == 503 || request.method == 'POST'", true),
            ("!(response.code < 500)", true),
            ("request.headers['x-debug'] == 'on'", true),
            ("request.headers['X-Debug'] == \"on\"", true),
            ("'x-debug' in request.headers", true),
            ("'x-trace' in request.headers", false),
            ("!('x-trace' in request.headers)", true),
            ("!has(request.headers.x_trace)", true),
            ("request.url_path.startsWith('/api/')", true),
            ("request.host.endsWith('.example.com')", true),
            ("request.headers['user-agent'].contains('curl')", true),
            ("connection.mtls", true),
            ("connection.mtls && destination.port == 9080u", true),
            ("request.duration > duration('1s')", true),
            ("request.duration > duration(\"1m30s\")", false),
            ("response.headers['content-type'] == 'text/plain'", true),
            (
                "response.code >= 500 ? request.method == 'GET' : false",
                true,
            ),
            ("int('503') == response.code", true),
            // A header that is not there is an error: the filter does not hold...
            ("request.headers['x-missing'] == 'y'", false),
            ("request.headers['x-missing'] != 'y'", false),
            // ...unless the other side of && or || decides.
            (
                "request.headers['x-missing'] == 'y' || response.code == 503",
                true,
            ),
            (
                "response.code == 200 && request.headers['x-missing'] == 'y'",
                false,
            ),
            // Different types do not compare.
            ("response.code == '503'", false),
        ] {
            assert_eq!(holds(text), expected, "{text}");
        }
    }

    #[test]
    fn values_become_tag_text() {
        let text = |e: &str| parse(e).unwrap().eval(&facts()).map(|v| v.to_text());
        assert_eq!(text("request.host"), Ok("shop.example.com".into()));
        assert_eq!(text("string(destination.port)"), Ok("9080".into()));
        assert_eq!(text("'literal'"), Ok("literal".into()));
        assert_eq!(text("request.headers['x-debug']"), Ok("on".into()));
        assert!(text("request.headers['x-none']").is_err());
    }

    #[test]
    fn what_is_not_supported_is_named() {
        for (text, why) in [
            (
                "response.codes >= 400",
                "response.codes is not an attribute",
            ),
            ("request.headers == 'x'", "is a map"),
            (
                "request.url_path.matches('^/a')",
                "matches() is not supported",
            ),
            ("size(request.path) > 3", "size() is not supported"),
            ("response.code >=", "not valid CEL"),
            ("response.code >= 400 400", "not valid CEL"),
            ("request.headers['x", "not valid CEL"),
            ("response.code # 3", "not valid CEL"),
            ("response.code + 1 > 3", "the operator + is not supported"),
            ("[1, 2].exists(x, x > 1)", "not supported"),
            ("duration('soon') > request.duration", "not a duration"),
            ("", "empty"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn the_request_headers_read_are_listed() {
        let e = parse("request.headers['x-a'] == 'b' || 'x-b' in request.headers || response.headers['x-c'] == '' || request.referer == 'r'").unwrap();
        let mut out = Vec::new();
        e.request_headers(&mut out);
        assert_eq!(out, ["x-a", "x-b", "referer"]);
        assert!(parse("-(-9223372036854775808) == 1").is_err());
    }
}
