//! Keeps docs/findings.md and docs/discussion-paper.md honest: every `mcx-authz check …`
//! command the two documents print must be listed in their ```` ```claims ```` block with the
//! exit code and the verdicts the text states, and every claim not marked `[slow]` is re-run here
//! against the release binary.
//!
//! A claims line reads
//! `mcx-authz check <args> => exit <code>; <property>=<holds|violated> … [slow]`.
//! Besides each named verdict, the `always`/`eventually` properties the run violates must be
//! exactly those the line names as violated (so a new violation cannot slip in unnoticed).
//!
//! Run with `cargo test --release --test docs_claims` (about a minute and a half on 2 shared
//! cores; the `[slow]` claims are left to a manual run).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// One line of a claims block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claim {
    args: Vec<String>,
    exit: i32,
    verdicts: BTreeMap<String, String>,
    slow: bool,
}

fn normalize(args: &str) -> Vec<String> {
    args.split_whitespace().map(str::to_owned).collect()
}

fn parse_claim(line: &str) -> Result<Claim, String> {
    let rest = line
        .strip_prefix("mcx-authz check ")
        .ok_or_else(|| format!("claim must start with `mcx-authz check `: {line}"))?;
    let (args, outcome) = rest
        .split_once(" => ")
        .ok_or_else(|| format!("claim without ` => `: {line}"))?;
    let (outcome, slow) = match outcome.trim_end().strip_suffix("[slow]") {
        Some(o) => (o.trim_end(), true),
        None => (outcome.trim_end(), false),
    };
    let (exit, verdicts) = outcome
        .split_once(';')
        .ok_or_else(|| format!("claim without `;` after the exit code: {line}"))?;
    let exit = exit
        .trim()
        .strip_prefix("exit ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("claim without `exit <code>`: {line}"))?;
    let mut map = BTreeMap::new();
    for v in verdicts.split_whitespace() {
        let (name, verdict) = v
            .split_once('=')
            .ok_or_else(|| format!("verdict without `=`: {v} in {line}"))?;
        if verdict != "holds" && verdict != "violated" {
            return Err(format!("verdict must be holds or violated: {v} in {line}"));
        }
        if map.insert(name.to_owned(), verdict.to_owned()).is_some() {
            return Err(format!("{name} named twice in {line}"));
        }
    }
    Ok(Claim {
        args: normalize(args),
        exit,
        verdicts: map,
        slow,
    })
}

/// The claims blocks of a document.
fn claims_of(text: &str) -> Result<Vec<Claim>, String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if !inside && t == "```claims" {
            inside = true;
        } else if inside && t == "```" {
            inside = false;
        } else if inside && !t.is_empty() {
            out.push(parse_claim(t)?);
        }
    }
    if inside {
        return Err("unterminated claims block".into());
    }
    Ok(out)
}

/// Every `` `mcx-authz check …` `` printed in the document (inline code spans).
fn commands_of(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if inside {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("`mcx-authz check") {
            let after = &rest[i + 1..];
            let Some(end) = after.find('`') else { break };
            let args = normalize(after[..end].trim_start_matches("mcx-authz check"));
            // A bare `mcx-authz check` names the command, it is not a run.
            if !args.is_empty() {
                out.push(args);
            }
            rest = &after[end + 1..];
        }
    }
    out
}

fn read_doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const DOCS: [&str; 2] = ["findings.md", "discussion-paper.md"];

#[test]
fn claims_lines_parse() {
    let c = parse_claim(
        "mcx-authz check --variant pre-cr --impus 1 => exit 0; no-impersonation=violated s5-user-switch-isolation=holds [slow]",
    )
    .unwrap();
    assert_eq!(c.args, ["--variant", "pre-cr", "--impus", "1"]);
    assert_eq!(c.exit, 0);
    assert!(c.slow);
    assert_eq!(c.verdicts["no-impersonation"], "violated");
    assert!(parse_claim("mcx-authz check --variant pre-cr => exit 0; x=maybe").is_err());
    assert!(parse_claim("mcx-authz check --variant pre-cr exit 0").is_err());
    assert_eq!(
        commands_of("a `mcx-authz check --variant post-cr` b `other` `mcx-authz check` `mcx-authz check  --x 1`"),
        vec![normalize("--variant post-cr"), normalize("--x 1")]
    );
}

#[test]
fn every_printed_command_has_a_claim() {
    for doc in DOCS {
        let text = read_doc(doc);
        let claims = claims_of(&text).unwrap_or_else(|e| panic!("{doc}: {e}"));
        assert!(
            claims.len() >= 5,
            "{doc}: expected a claims block with the commands the text prints, found {}",
            claims.len()
        );
        let listed: BTreeSet<_> = claims.iter().map(|c| c.args.clone()).collect();
        for cmd in commands_of(&text) {
            assert!(
                listed.contains(&cmd),
                "{doc} prints `mcx-authz check {}` but its claims block does not list it",
                cmd.join(" ")
            );
        }
    }
}

#[test]
fn claims_match_the_checker() {
    let mut claims: Vec<Claim> = Vec::new();
    for doc in DOCS {
        for c in claims_of(&read_doc(doc)).unwrap_or_else(|e| panic!("{doc}: {e}")) {
            if let Some(other) = claims.iter().find(|x| x.args == c.args) {
                assert_eq!(
                    (other.exit, &other.verdicts),
                    (c.exit, &c.verdicts),
                    "the two documents claim different results for `mcx-authz check {}`",
                    c.args.join(" ")
                );
            } else {
                claims.push(c);
            }
        }
    }
    let fast: Vec<_> = claims.iter().filter(|c| !c.slow).collect();
    assert!(fast.len() >= 5, "too few claims to re-run: {}", fast.len());
    let mut failures = Vec::new();
    for c in fast {
        let out = Command::new(env!("CARGO_BIN_EXE_mcx-authz"))
            .arg("check")
            .args(&c.args)
            .args(["--json", "--quiet"])
            .output()
            .expect("run mcx-authz check");
        let cmd = format!("mcx-authz check {}", c.args.join(" "));
        let code = out.status.code().unwrap_or(-1);
        if code != c.exit {
            failures.push(format!("{cmd}: exit {code}, the docs say {}", c.exit));
        }
        let json: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{cmd}: no JSON on stdout ({e})"));
                continue;
            }
        };
        let reports = match json {
            serde_json::Value::Array(a) => a,
            v => vec![v],
        };
        let mut seen = BTreeMap::new();
        let mut violated_safety = BTreeSet::new();
        for r in &reports {
            for p in r["properties"].as_array().expect("properties") {
                let name = p["name"].as_str().expect("name").to_owned();
                let verdict = p["verdict"].as_str().expect("verdict").to_owned();
                if p["kind"] != "sometimes" && verdict == "violated" {
                    violated_safety.insert(name.clone());
                }
                seen.insert(name, verdict);
            }
        }
        for (name, want) in &c.verdicts {
            match seen.get(name) {
                Some(got) if got == want => {}
                Some(got) => failures.push(format!("{cmd}: {name} {got}, the docs say {want}")),
                None => failures.push(format!("{cmd}: no property {name}")),
            }
        }
        let claimed: BTreeSet<_> = c
            .verdicts
            .iter()
            .filter(|(n, v)| *v == "violated" && violated_safety.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        let unclaimed: Vec<_> = violated_safety.difference(&claimed).collect();
        if !unclaimed.is_empty() {
            failures.push(format!(
                "{cmd}: violates {unclaimed:?}, which the docs do not name"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
