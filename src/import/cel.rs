//! A reader for the literal subset of CEL that GeneratingPolicies build their objects with:
//! lists, maps, strings, numbers, booleans, `dyn(...)`/`string(...)`/`int(...)` wrappers and
//! references such as `variables.nsName` or `object.spec.selector`. Pure.
//!
//! Importing needs the objects a policy generates, not an evaluator: anything beyond literals
//! (arithmetic, comprehensions, `resource.Get`) is refused with what it met, and the rule is
//! reported as one the import cannot map. A reference becomes the string `{{path}}`, the same
//! shape a ClusterPolicy's variables have, so both APIs are mapped by one piece of code.

use serde_json::{Map, Number, Value};

/// Why an expression is not a literal the import can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CEL at byte {at}: {what}")]
pub struct CelError {
    pub at: usize,
    pub what: String,
}

/// Reads `expr` as a literal value; references become `{{path}}` strings.
pub fn literal(expr: &str) -> Result<Value, CelError> {
    let mut p = Reader {
        s: expr.as_bytes(),
        src: expr,
        at: 0,
    };
    let v = p.value()?;
    p.skip_space();
    if p.at != p.s.len() {
        return Err(p.error("more after the value (only literals are read)"));
    }
    Ok(v)
}

/// The two arguments of `generator.Apply(namespace, objects)`, as source text.
pub fn generator_apply_args(expr: &str) -> Option<(String, String)> {
    let inner = expr
        .trim()
        .strip_prefix("generator.Apply(")?
        .strip_suffix(')')?;
    let comma = top_level_comma(inner)?;
    Some((
        inner[..comma].trim().to_string(),
        inner[comma + 1..].trim().to_string(),
    ))
}

/// The byte index of the first comma outside brackets and strings.
fn top_level_comma(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(_) if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'"' | b'\'' => quote = Some(c),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b',' if depth == 0 => return Some(i),
                _ => {}
            },
        }
        i += 1;
    }
    None
}

struct Reader<'a> {
    s: &'a [u8],
    src: &'a str,
    at: usize,
}

impl Reader<'_> {
    fn error(&self, what: &str) -> CelError {
        CelError {
            at: self.at,
            what: what.to_string(),
        }
    }

    fn skip_space(&mut self) {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.s.get(self.at).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), CelError> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", c as char)))
        }
    }

    fn value(&mut self) -> Result<Value, CelError> {
        match self.peek() {
            Some(b'[') => self.list(),
            Some(b'{') => self.map(),
            Some(b'"') | Some(b'\'') => self.string().map(Value::String),
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.name_or_call(),
            Some(_) => Err(self.error("not a literal")),
            None => Err(self.error("unexpected end")),
        }
    }

    fn list(&mut self) -> Result<Value, CelError> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(b']') {
                self.at += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {}
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn map(&mut self) -> Result<Value, CelError> {
        self.expect(b'{')?;
        let mut m = Map::new();
        loop {
            if self.peek() == Some(b'}') {
                self.at += 1;
                return Ok(Value::Object(m));
            }
            let key = match self.peek() {
                Some(b'"') | Some(b'\'') => self.string()?,
                _ => return Err(self.error("map keys must be strings")),
            };
            self.expect(b':')?;
            let v = self.value()?;
            m.insert(key, v);
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {}
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn string(&mut self) -> Result<String, CelError> {
        let quote = self.s[self.at];
        self.at += 1;
        let mut out = String::new();
        let start = self.at;
        let mut chunk_start = start;
        while self.at < self.s.len() {
            let c = self.s[self.at];
            if c == quote {
                out.push_str(&self.src[chunk_start..self.at]);
                self.at += 1;
                return Ok(out);
            }
            if c == b'\\' {
                out.push_str(&self.src[chunk_start..self.at]);
                let escaped = self.s.get(self.at + 1).copied();
                out.push(match escaped {
                    Some(b'n') => '\n',
                    Some(b't') => '\t',
                    Some(e @ (b'\\' | b'"' | b'\'')) => e as char,
                    _ => return Err(self.error("unsupported escape")),
                });
                self.at += 2;
                chunk_start = self.at;
                continue;
            }
            self.at += 1;
        }
        Err(self.error("unterminated string"))
    }

    fn number(&mut self) -> Result<Value, CelError> {
        let start = self.at;
        if self.s[self.at] == b'-' {
            self.at += 1;
        }
        while self.at < self.s.len() && self.s[self.at].is_ascii_digit() {
            self.at += 1;
        }
        let text = &self.src[start..self.at];
        text.parse::<i64>()
            .map(|n| Value::Number(Number::from(n)))
            .map_err(|_| self.error("not an integer"))
    }

    /// A dotted name: a reference, a constant, or one of the wrapper calls.
    fn name_or_call(&mut self) -> Result<Value, CelError> {
        let start = self.at;
        while self.at < self.s.len()
            && (self.s[self.at].is_ascii_alphanumeric() || matches!(self.s[self.at], b'_' | b'.'))
        {
            self.at += 1;
        }
        let name = &self.src[start..self.at];
        if self.peek() == Some(b'(') {
            if !matches!(name, "dyn" | "string" | "int") {
                self.at = start;
                return Err(self.error(&format!("calls {name}(), which the import cannot read")));
            }
            self.at += 1;
            let v = self.value()?;
            self.expect(b')')?;
            return Ok(v);
        }
        Ok(match name {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            path => Value::String(format!("{{{{{path}}}}}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_generating_policy_object_list() {
        let expr = r#"[
          {
            "kind": dyn("NetworkPolicy"),
            "metadata": dyn({"name": "deny", "namespace": string(variables.nsName),}),
            "spec": dyn({"podSelector": dyn({}), "policyTypes": dyn(['Ingress', "Egress"]), "port": 53})
          }
        ]"#;
        assert_eq!(
            literal(expr),
            Ok(json!([{
                "kind": "NetworkPolicy",
                "metadata": {"name": "deny", "namespace": "{{variables.nsName}}"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "port": 53}
            }]))
        );
    }

    #[test]
    fn refuses_what_is_not_a_literal() {
        let e = literal(r#"resource.Get("v1", "secrets", "a", "b")"#).unwrap_err();
        assert!(e.what.contains("resource.Get"), "{e}");
        assert!(literal("1 + 2").is_err());
    }

    #[test]
    fn splits_generator_apply() {
        assert_eq!(
            generator_apply_args("generator.Apply(variables.nsName, [variables.a, f(x, y)])"),
            Some((
                "variables.nsName".to_string(),
                "[variables.a, f(x, y)]".to_string()
            ))
        );
        assert_eq!(generator_apply_args("true"), None);
    }
}
