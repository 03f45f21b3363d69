//! `[site.premises]` and a camera's device ids: the facts a case needs about who runs the place
//! and which registered device recorded it, validated at load.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[site.premises]`: the operator of the premises, as a case file names it. Every key is
/// optional (a demo site has none); what is given is validated and written into every manifest
/// and event.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PremisesConfig {
    /// Operator (legal person or business) name, e.g. "某某餐饮管理有限公司".
    #[schemars(length(max = 256))]
    pub operator_name: Option<String>,
    /// Unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters, the last a
    /// check character that is verified.
    #[schemars(length(max = 18))]
    pub credit_code: Option<String>,
    /// Food business licence number (食品经营许可证编号): "JY" and 14 digits.
    #[schemars(length(max = 16))]
    pub food_licence: Option<String>,
    /// Address of the premises.
    #[schemars(length(max = 512))]
    pub address: Option<String>,
    /// Administrative area code of the premises (GB/T 2260, 6 digits), e.g. "320106".
    #[schemars(length(max = 6))]
    pub area_code: Option<String>,
    /// The regulator responsible for the premises, e.g. "南京市鼓楼区卫生健康委员会".
    #[schemars(length(max = 256))]
    pub regulator: Option<String>,
}

impl PremisesConfig {
    /// Problems with the given values, as (key under `site.premises`, problem).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(c) = &self.credit_code
            && let Err(p) = check_credit_code(c)
        {
            out.push(("credit_code", p));
        }
        if let Some(l) = &self.food_licence {
            let digits = l.strip_prefix("JY").unwrap_or("");
            if digits.len() != 14 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                out.push((
                    "food_licence",
                    format!("{l:?} is not a food business licence number (\"JY\" and 14 digits)"),
                ));
            }
        }
        if let Some(a) = &self.area_code
            && (a.len() != 6 || !a.bytes().all(|b| b.is_ascii_digit()))
        {
            out.push(("area_code", format!("{a:?} is not an administrative area code (6 digits, GB/T 2260)")));
        }
        out
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        *self == PremisesConfig::default()
    }
}

/// The characters of a unified social credit code (no I, O, S, V, Z).
const CREDIT_CHARS: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";

/// GB 32100-2015: 18 characters of [`CREDIT_CHARS`]; character 18 = (31 − Σ cᵢ·3ⁱ mod 31) mod 31.
pub fn check_credit_code(code: &str) -> Result<(), String> {
    let vals: Option<Vec<usize>> = code.chars().map(|c| CREDIT_CHARS.find(c)).collect();
    let Some(vals) = vals.filter(|v| v.len() == 18) else {
        return Err(format!(
            "{code:?} is not a unified social credit code (18 characters of 0-9 and A-Y without I, O, S, V, Z)"
        ));
    };
    let mut weight = 1;
    let mut sum = 0;
    for v in &vals[..17] {
        sum += v * weight;
        weight = weight * 3 % 31;
    }
    let want = (31 - sum % 31) % 31;
    if vals[17] != want {
        let c = CREDIT_CHARS.as_bytes()[want] as char;
        return Err(format!("{code:?}: check character is wrong (the first 17 characters give {c:?})"));
    }
    Ok(())
}

/// A GB/T 28181 device id: 20 digits (centre code, industry, type, network, serial). Type codes
/// 131 (camera) and 132 (network camera) are what a camera registers as; another type is allowed
/// (an NVR channel) but returned as a warning.
pub fn check_national_device_id(id: &str) -> Result<Option<String>, String> {
    if id.len() != 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{id:?} is not a GB/T 28181 device id (20 digits)"));
    }
    let kind = &id[10..13];
    Ok(if kind == "131" || kind == "132" {
        None
    } else {
        Some(format!("GB/T 28181 id {id:?} has type code {kind}, not 131 (camera) or 132 (network camera)"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_codes_of_real_companies_pass_and_a_changed_character_fails() {
        // published codes of two large companies
        for c in ["914403001922038216", "91110000802100433B"] {
            assert_eq!(check_credit_code(c), Ok(()), "{c}");
        }
        let e = check_credit_code("914403001922038217").unwrap_err();
        assert!(e.contains("check character is wrong") && e.contains("'6'"), "{e}");
        assert!(check_credit_code("91440300192203821").unwrap_err().contains("18 characters"));
        assert!(check_credit_code("9144030019220382I6").unwrap_err().contains("18 characters"));
        // every single-character change of a valid code is caught
        let good: Vec<char> = "914403001922038216".chars().collect();
        for i in 0..18 {
            for c in CREDIT_CHARS.chars().filter(|c| *c != good[i]) {
                let mut v = good.clone();
                v[i] = c;
                assert!(check_credit_code(&v.iter().collect::<String>()).is_err(), "{i} {c}");
            }
        }
    }

    #[test]
    fn premises_and_device_ids_are_checked() {
        let p = PremisesConfig {
            credit_code: Some("91110000802100433A".into()),
            food_licence: Some("JY1320106000123".into()),
            area_code: Some("32010".into()),
            ..Default::default()
        };
        let keys: Vec<&str> = p.problems().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["credit_code", "food_licence", "area_code"]);
        let ok = PremisesConfig {
            credit_code: Some("91110000802100433B".into()),
            food_licence: Some("JY13201060001234".into()),
            area_code: Some("320106".into()),
            ..Default::default()
        };
        assert!(ok.problems().is_empty());
        assert_eq!(check_national_device_id("32010600001320000001"), Ok(None));
        assert!(check_national_device_id("32010600001180000001").unwrap().unwrap().contains("type code 118"));
        assert!(check_national_device_id("3201060000132000000").is_err());
    }
}
