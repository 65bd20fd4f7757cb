//! The report: a table for people, one JSON document for machines. Every value shown
//! passes through `sanitize_for_terminal`, since file names, keys and claims come from
//! files and tokens anyone may have written.

use std::fmt::Write;

use mayfly_core::sanitize_for_terminal as clean;
use serde_json::{Value, json};

use super::finding::{Finding, Severity};
use super::identity::{Claims, Source, rfc3339};

/// `{"clean", "findings": [{"severity", "kind", "where", "fingerprint", "fix"}],
/// "identity": {"sources": [...]}}`.
pub(crate) fn json(findings: &[Finding], sources: &[Source]) -> String {
    let passed = !findings.iter().any(|f| f.severity.fails());
    let findings: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "severity": f.severity.as_str(),
                "kind": f.kind,
                "where": clean(&f.location),
                "fingerprint": f.fingerprint.as_ref().map(|p| p.as_str()),
                "fix": clean(&f.fix),
            })
        })
        .collect();
    let sources: Vec<Value> = sources.iter().map(source_json).collect();
    let document = json!({
        "clean": passed,
        "findings": findings,
        "identity": {"sources": sources},
    });
    format!("{document:#}\n")
}

fn source_json(source: &Source) -> Value {
    json!({
        "name": source.name.as_deref().map(clean),
        "kind": source.kind,
        "source": clean(&source.origin),
        "available": source.available,
        "claims": source.claims.as_ref().map(claims_json),
        "detected": source.detected.as_ref().map(|d| json!({
            "used": d.chosen.as_deref().map(clean),
            "outranked": d.outranked.iter().map(|o| clean(o)).collect::<Vec<_>>(),
        })),
    })
}

fn claims_json(claims: &Claims) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ci: serde_json::Map<String, Value> = claims.ci.iter().map(|(k, v)| (clean(k), Value::from(clean(v)))).collect();
    json!({
        "issuer": claims.issuer.as_deref().map(clean),
        "subject": claims.subject.as_deref().map(clean),
        "audience": claims.audience.iter().map(|a| clean(a)).collect::<Vec<_>>(),
        "expires": claims.expires.map(rfc3339),
        "expired": claims.expires.map(|e| e <= now),
        "ci": ci,
    })
}

/// A line per finding and its fix under it, then the identity sources.
pub(crate) fn table(findings: &[Finding], sources: &[Source]) -> String {
    let mut out = String::new();
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings, infos) = (count(Severity::Error), count(Severity::Warning), count(Severity::Info));
    if errors + warnings == 0 {
        let _ = writeln!(out, "mayfly doctor: nothing to fix ({infos} note(s))");
    } else {
        let _ = writeln!(out, "mayfly doctor: {errors} error(s), {warnings} warning(s), {infos} note(s)");
    }
    let width = findings.iter().map(|f| f.kind.len()).max().unwrap_or(0);
    for f in findings {
        let fingerprint = f.fingerprint.as_ref().map(|p| format!("  [{p}]")).unwrap_or_default();
        let _ = writeln!(out, "\n{:<7}  {:<width$}  {}{fingerprint}", f.severity.as_str(), f.kind, clean(&f.location));
        let _ = writeln!(out, "{:<7}  fix: {}", "", clean(&f.fix));
    }
    let _ = writeln!(out, "\nidentity");
    if sources.is_empty() {
        let _ = writeln!(out, "  none configured or detected");
    }
    for source in sources {
        let name = source.name.as_deref().map_or_else(|| "(detected)".to_owned(), clean);
        let state = if source.available { "available" } else { "unavailable" };
        let _ = writeln!(out, "  {name}: {} {} ({state})", source.kind, clean(&source.origin));
        if let Some(detected) = &source.detected {
            let _ = writeln!(out, "    {:<10} {}", "detected", clean(&detected.to_string()));
        }
        if let Some(claims) = &source.claims {
            for (label, value) in claim_lines(claims) {
                let _ = writeln!(out, "    {label:<10} {}", clean(&value));
            }
        }
    }
    out
}

fn claim_lines(claims: &Claims) -> Vec<(String, String)> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut lines = Vec::new();
    let mut push = |label: &str, value: Option<String>| {
        if let Some(value) = value {
            lines.push((label.to_owned(), value));
        }
    };
    push("issuer", claims.issuer.clone());
    push("subject", claims.subject.clone());
    push("audience", (!claims.audience.is_empty()).then(|| claims.audience.join(", ")));
    push("expires", claims.expires.map(|e| format!("{}{}", rfc3339(e), if e <= now { " (expired)" } else { "" })));
    for (name, value) in &claims.ci {
        push(name, Some(value.clone()));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_schema_and_terminal_safety() {
        let findings = [
            Finding::secret("git-credentials", "f: https://h\u{1b}[2J", "s3cret", "remove it"),
            Finding::new(Severity::Info, "npm-token-reference", "n", "fine"),
        ];
        let text = json(&findings, &[]);
        let document: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(document["clean"], false);
        let first = &document["findings"][0];
        assert_eq!(first["severity"], "error");
        assert_eq!(first["where"], "f: https://h\u{fffd}[2J");
        assert_eq!(first["fingerprint"], mayfly_core::Fingerprint::of("s3cret").as_str());
        assert_eq!(document["findings"][1]["fingerprint"], Value::Null);
        assert_eq!(document["identity"]["sources"], json!([]));
        assert!(!text.contains("s3cret"));
        assert_eq!(serde_json::from_str::<Value>(&json(&findings[1..], &[])).unwrap()["clean"], true);
    }

    #[test]
    fn table_lists_each_finding_with_its_fix() {
        let findings = [Finding::new(Severity::Warning, "exchange-unreachable", "exchange `x`", "check it")];
        let text = table(&findings, &[]);
        assert!(text.starts_with("mayfly doctor: 0 error(s), 1 warning(s), 0 note(s)\n"), "{text}");
        assert!(text.contains("warning  exchange-unreachable  exchange `x`\n         fix: check it\n"), "{text}");
    }
}
