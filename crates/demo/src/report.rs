//! How the demo talks to a person: steps, outcomes, and the audit trail as a table.

use std::io::IsTerminal;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use super::Stage;

pub(super) struct Report {
    color: bool,
}

impl Report {
    pub(super) fn new() -> Self {
        Self { color: std::io::stdout().is_terminal() }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }

    pub(super) fn heading(&self, text: &str) {
        println!("\n{}", self.paint("1", text));
    }

    pub(super) fn item(&self, text: &str) {
        println!("   {text}");
    }

    pub(super) fn note(&self, text: &str) {
        println!("{}", self.paint("2", text));
    }

    /// Prints git's outcome; true when it matched what the story expects.
    pub(super) fn expect(&self, success: bool, output: &Output) -> bool {
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            println!("   {}", self.paint("2", &format!("│ {}", mayfly_core::sanitize_for_terminal(line))));
        }
        let ok = output.status.success() == success;
        let verdict = match (output.status.success(), ok) {
            (true, true) => self.paint("32", "✓ git succeeded"),
            (false, true) => self.paint("32", "✓ git was refused, as it should be"),
            (true, false) => self.paint("31", "✗ git succeeded, but it should have been refused"),
            (false, false) => self.paint("31", "✗ git failed"),
        };
        println!("   {verdict}");
        ok
    }

    /// The helper's newest audit line for an operation, in one sentence.
    pub(super) fn last_decision(&self, stage: &Stage, operation: &str) {
        let log = stage.home.join(".local/state/mayfly/audit.jsonl");
        let Some(line) = read_lines(&log).into_iter().rev().find(|l| l["operation"] == operation) else {
            return;
        };
        let text = format!(
            "{} {} token {} for `{}`, expires {}",
            line["outcome"].as_str().unwrap_or("?"),
            operation,
            line["fingerprint"].as_str().unwrap_or("?"),
            line["scope"].as_str().unwrap_or("?"),
            line["expires"].as_str().unwrap_or("?"),
        );
        println!("   {}", self.paint("36", &format!("→ {text}")));
    }

    pub(super) fn audit_trail(&self, client_log: &Path, sts_log: &Path) {
        self.heading("Audit trail (the helper's log: one line per decision, never a token)");
        println!("   {:<10} {:<9} {:<6} {:<22} {:<26} command", "time", "outcome", "op", "scope", "fingerprint");
        for line in read_lines(client_log) {
            let time = line["time"].as_str().unwrap_or("").get(11..19).unwrap_or("");
            let command = line["process"]
                .as_array()
                .and_then(|chain| {
                    chain.iter().rev().find(|p| p["argv"][0].as_str().is_some_and(|a| a.ends_with("git")))
                })
                .and_then(|p| p["argv"].as_array())
                .map(|argv| argv.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            println!(
                "   {:<10} {:<9} {:<6} {:<22} {:<26} {}",
                time,
                line["outcome"].as_str().unwrap_or(""),
                line["operation"].as_str().unwrap_or(""),
                line["scope"].as_str().unwrap_or(""),
                line["fingerprint"].as_str().unwrap_or("-"),
                mayfly_core::sanitize_for_terminal(&command),
            );
        }
        self.heading("mayfly-sts decisions (the exchange's own log)");
        for line in read_lines(sts_log) {
            println!(
                "   {:<9} {:<22} rule: {}  subject: {}",
                line["outcome"].as_str().unwrap_or(""),
                line["scope"].as_str().unwrap_or(""),
                line["rule"].as_str().or(line["reason"].as_str()).unwrap_or(""),
                line["subject"].as_str().unwrap_or(""),
            );
        }
    }

    /// Scans every file the demo wrote for anything shaped like a JWT.
    pub(super) fn no_tokens_on_disk(&self, root: &Path, home: &Path) -> bool {
        self.heading("6. Nothing on disk: every file under the demo's HOME, work tree and servers, scanned");
        let (files, leaks) = mayfly_core::scan_for_jwts(root);
        for leak in &leaks {
            println!("   {}", self.paint("31", &format!("✗ token-shaped bytes in {}", leak.display())));
        }
        if leaks.is_empty() {
            println!(
                "   {}",
                self.paint(
                    "32",
                    &format!(
                        "✓ {files} files, no token in any of them (cache entries under {} are age-encrypted)",
                        home.join(".cache/mayfly").display()
                    )
                )
            );
        }
        leaks.is_empty()
    }

    pub(super) fn summary(&self, ok: bool, root: &Path) {
        if ok {
            self.heading(&self.paint("32", "Every step ended as it should."));
            println!(
                "Next, for your own hosts: write ~/.config/mayfly/config.toml (the README's Configuration section),\n\
                 check it with `mayfly explain git https://HOST/ORG/REPO`, then wire your tools with `mayfly setup`."
            );
        } else {
            self.heading(&self.paint("31", &format!("Something went wrong; files are in {}", root.display())));
        }
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}
