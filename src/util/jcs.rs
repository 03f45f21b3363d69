//! RFC 8785 canonical JSON (JCS): object members sorted by their names' UTF-16 code units, no
//! insignificant whitespace, minimal string escapes, numbers in ECMAScript `Number::toString`
//! form. The serialiser is the maintained `serde_json_canonicalizer` crate (numbers through the
//! Boa project's `ryu-js`); it passes the RFC's test vectors (tests below).
//!
//! Manifests before `vigil.manifest.v3` were canonicalised by vigil's own first serialiser
//! ([`Version::V1`]), whose number formatting differed from ECMAScript's when two shortest
//! spellings were equally close (`253.69631958007813` where ECMAScript writes
//! `253.69631958007812`). Every signed document says which version made its bytes, so old
//! manifests still verify.

use serde_json::Value;

/// Which canonical serialiser made a document's bytes (its `canonicalization` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// vigil's own serialiser of manifest v1/v2 (`"RFC 8785 (JCS)"`).
    V1,
    /// RFC 8785 with ECMAScript number formatting (`"RFC 8785 (JCS) v2"`).
    V2,
}

impl Version {
    pub const CURRENT: Version = Version::V2;

    pub fn label(self) -> &'static str {
        match self {
            Version::V1 => "RFC 8785 (JCS)",
            Version::V2 => "RFC 8785 (JCS) v2",
        }
    }

    pub fn from_label(s: &str) -> Option<Version> {
        match s {
            "RFC 8785 (JCS)" => Some(Version::V1),
            "RFC 8785 (JCS) v2" => Some(Version::V2),
            _ => None,
        }
    }
}

/// RFC 8785 canonical bytes of a JSON value.
pub fn canonical(v: &Value) -> Vec<u8> {
    canonical_as(v, Version::CURRENT)
}

/// Canonical bytes as serialiser `version` made them.
pub fn canonical_as(v: &Value, version: Version) -> Vec<u8> {
    match version {
        Version::V2 => serde_json_canonicalizer::to_vec(v).expect("a JSON value always serialises"),
        Version::V1 => {
            let mut out = Vec::with_capacity(1024);
            legacy::write(v, &mut out);
            out
        }
    }
}

/// The version a document's bytes claim (its top-level `canonicalization`), V1 when absent.
pub fn version_of(v: &Value) -> Version {
    v.get("canonicalization").and_then(Value::as_str).and_then(Version::from_label).unwrap_or(Version::V1)
}

/// vigil's first serialiser, kept only to verify documents it made.
mod legacy {
    use serde_json::Value;
    use std::io::Write;

    pub fn write(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    out.extend_from_slice(i.to_string().as_bytes());
                } else if let Some(u) = n.as_u64() {
                    out.extend_from_slice(u.to_string().as_bytes());
                } else {
                    out.extend_from_slice(number(n.as_f64().unwrap_or(0.0)).as_bytes());
                }
            }
            Value::String(s) => string(s, out),
            Value::Array(a) => {
                out.push(b'[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(x, out);
                }
                out.push(b']');
            }
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    string(k, out);
                    out.push(b':');
                    write(&m[k], out);
                }
                out.push(b'}');
            }
        }
    }

    fn string(s: &str, out: &mut Vec<u8>) {
        out.push(b'"');
        for c in s.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\u{08}' => out.extend_from_slice(b"\\b"),
                '\u{0c}' => out.extend_from_slice(b"\\f"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        out.push(b'"');
    }

    /// The first implementation's number formatting (Rust's shortest digits, which round a tie
    /// differently from ECMAScript).
    pub fn number(x: f64) -> String {
        if x == 0.0 || !x.is_finite() {
            return "0".into();
        }
        let sign = if x < 0.0 { "-" } else { "" };
        let sci = format!("{:e}", x.abs());
        let (mant, exp) = sci.split_once('e').expect("exponent");
        let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
        let k = digits.len() as i32;
        let n = exp.parse::<i32>().expect("exponent") + 1;
        let body = if k <= n && n <= 21 {
            format!("{digits}{}", "0".repeat((n - k) as usize))
        } else if 0 < n && n <= 21 {
            format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
        } else if -6 < n && n <= 0 {
            format!("0.{}{digits}", "0".repeat((-n) as usize))
        } else {
            let e = n - 1;
            let es = if e >= 0 { format!("+{e}") } else { e.to_string() };
            if k == 1 { format!("{digits}e{es}") } else { format!("{}.{}e{es}", &digits[..1], &digits[1..]) }
        };
        format!("{sign}{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(bits: u64) -> String {
        String::from_utf8(canonical(&serde_json::json!(f64::from_bits(bits)))).unwrap()
    }

    /// RFC 8785 Appendix B: IEEE 754 doubles and their canonical spellings.
    #[test]
    fn rfc8785_appendix_b_number_vectors() {
        for (bits, want) in [
            (0x0000000000000000u64, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ] {
            assert_eq!(num(bits), want, "{bits:#018x}");
        }
    }

    /// RFC 8785 §3.2.3: the sorting and string example.
    #[test]
    fn rfc8785_example_document() {
        let v: Value = serde_json::from_str(
            r#"{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"string":"\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/","literals":[null,true,false]}"#,
        )
        .unwrap();
        let c = String::from_utf8(canonical(&v)).unwrap();
        assert_eq!(
            c,
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
        let sorting: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let want = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(String::from_utf8(canonical(&sorting)).unwrap(), want);
    }

    #[test]
    fn the_tie_the_first_serialiser_got_wrong() {
        let x = 253.69631958007812f64;
        assert_eq!(String::from_utf8(canonical(&serde_json::json!(x))).unwrap(), "253.69631958007812");
        assert_eq!(legacy::number(x), "253.69631958007813");
        let v = serde_json::json!({"canonicalization": "RFC 8785 (JCS)", "x": x});
        assert_eq!(version_of(&v), Version::V1);
        assert_eq!(canonical_as(&v, Version::V1), br#"{"canonicalization":"RFC 8785 (JCS)","x":253.69631958007813}"#);
    }
}
