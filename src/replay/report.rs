//! The divergence report of `mcx-authz replay`, in Markdown (for people) and JSON (for
//! scripts): a summary table of the cases, then per case its steps, expected against observed.

use std::fmt::Write as _;

use super::{CaseResult, CaseVerdict, Expected, Observed, ReplayReport, StepVerdict};

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\r', '\n'], " ")
}

fn expected_text(e: &Option<Expected>) -> String {
    match e {
        None => "-".into(),
        Some(e) => {
            let mut t = e.status.to_string();
            if let Some(w) = e.warning {
                let _ = write!(t, " W{w}");
            }
            if e.etag {
                t.push_str(" ETag");
            }
            t
        }
    }
}

fn observed_text(o: &Option<Observed>) -> String {
    match o {
        None => "-".into(),
        Some(Observed { status: None, .. }) => "no response".into(),
        Some(o) => {
            let mut t = o.status.map(|s| s.to_string()).unwrap_or_default();
            match (o.warning, &o.warning_text) {
                (Some(w), _) => {
                    let _ = write!(t, " W{w}");
                }
                (None, Some(_)) => t.push_str(" W(other)"),
                _ => {}
            }
            if o.etag.is_some() {
                t.push_str(" ETag");
            }
            t
        }
    }
}

fn verdict_text(v: &StepVerdict) -> String {
    match v {
        StepVerdict::Match => "match".into(),
        StepVerdict::Diverges(d) => format!("**diverges**: {}", d.join("; ")),
        StepVerdict::NotSent => "not sent (forged identity straight to the server)".into(),
        StepVerdict::NotReplayed => "not replayed (no lab controls)".into(),
    }
}

/// A case's verdict in words.
pub fn case_verdict(c: &CaseResult) -> String {
    let mut t = match &c.verdict {
        CaseVerdict::Conforms => "conforms".to_owned(),
        CaseVerdict::Diverges => "**diverges**".to_owned(),
        CaseVerdict::MatchesPolicy(alts) => format!(
            "matches policy {}",
            alts.iter()
                .map(|s| s
                    .iter()
                    .map(|s| format!("{} = {}", s.knob, s.value))
                    .collect::<Vec<_>>()
                    .join(" and "))
                .collect::<Vec<_>>()
                .join(", or ")
        ),
    };
    if c.incomplete {
        t.push_str(" (restart not replayed)");
    }
    t
}

impl ReplayReport {
    /// The report as JSON.
    pub fn json(&self) -> serde_json::Value {
        let (conforms, policy, diverges) = self.counts();
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        v["summary"] = serde_json::json!({
            "cases": self.cases.len(),
            "conforming": conforms,
            "matching_policy": policy,
            "diverging": diverges,
            "divergent_steps": self.divergent_steps(),
        });
        v
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let (conforms, policy, diverges) = self.counts();
        let mut t = String::new();
        let _ = writeln!(t, "# Replay against {}\n", self.target);
        let _ = writeln!(
            t,
            "`mcx-authz replay`, run `{}`: variant **{}**, {} cases (named scenarios, then the witnesses and counterexamples of `check --json`), sent to {} over UDP. Clock: {}. Tokens: {}.\n",
            self.run,
            self.variant,
            self.cases.len(),
            self.address,
            self.clock,
            self.protection
        );
        let _ = writeln!(
            t,
            "**{conforms} conform, {policy} match another policy setting, {diverges} diverge** ({} divergent steps against the model's own policy).\n",
            self.divergent_steps()
        );
        let _ = writeln!(
            t,
            "Each step compares the model machine's answer with the target's: status, TS 24.379 Warning code (`W101`), SIP-ETag present. `W(other)` is a Warning without an MC code.\n"
        );
        let _ = writeln!(t, "## Summary\n");
        let _ = writeln!(
            t,
            "| # | case | kind | verdict | first divergence | the model's reading there |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|");
        for (i, c) in self.cases.iter().enumerate() {
            let (first, reading) = match &c.first_divergence {
                None => ("-".to_owned(), "-".to_owned()),
                Some(f) => {
                    let knobs = if f.deciding_knobs.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; policy: {}",
                            f.deciding_knobs
                                .iter()
                                .map(|k| format!("{} (else {})", k.knob, k.value))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    (
                        format!("step {}: {}", f.step, f.differences.join("; ")),
                        format!(
                            "{}{}{}; {}",
                            f.outcome.as_deref().unwrap_or("-"),
                            f.warning
                                .as_deref()
                                .map(|w| format!(", {w}"))
                                .unwrap_or_default(),
                            knobs,
                            f.clause
                        ),
                    )
                }
            };
            let kind = serde_json::to_value(c.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} |",
                i + 1,
                cell(&c.name),
                kind,
                cell(&case_verdict(c)),
                cell(&first),
                cell(&reading)
            );
        }
        let _ = writeln!(t, "\n## Cases\n");
        for (i, c) in self.cases.iter().enumerate() {
            let _ = writeln!(t, "### {}. {} ({})\n", i + 1, c.name, case_verdict(c));
            let _ = writeln!(
                t,
                "{}. Property `{}` ({}). Names tagged `{}`.\n",
                cell(&c.meaning),
                c.property,
                cell(&c.clause),
                c.tag
            );
            let _ = writeln!(
                t,
                "| step | t | request | step in words | model's outcome | expected | observed | verdict |"
            );
            let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
            for s in &c.steps {
                let req = serde_json::to_value(s.request)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    s.step,
                    s.time,
                    req,
                    cell(&s.text),
                    cell(s.outcome.as_deref().unwrap_or("-")),
                    expected_text(&s.expected),
                    observed_text(&s.observed),
                    cell(&verdict_text(&s.verdict))
                );
            }
            t.push('\n');
        }
        t
    }
}
