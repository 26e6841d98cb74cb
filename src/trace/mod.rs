//! Model traces as replayable artefacts (`mcx-authz trace`): a SIPp UAC scenario that plays the
//! SIP core towards an MCX server and checks every response the model predicts, the CSV of
//! freshly minted tokens it reads (SIPp `-inf`), and the trace in the Informal Trace Format (ITF,
//! as Apalache and Quint write it).
//!
//! Input is a model trace: the witness or counterexample of a property from `mcx-authz check
//! --json` ([`TraceSource::from_check_json`]), or a named scenario ([`TraceSource::from_scenario`]).
//! Only what the model *delivers* to its machine reaches the wire; UE-local steps (log-on,
//! queueing a request) become XML comments, clock ticks and restarts become lab-control calls
//! (or pauses and comments without them).
//!
//! What the replay assumes of the server (written to `server.toml` and the README): the model's
//! machine policy (RFC 3903 durations in ticks, `min_expires` 1), one tick = one second, the
//! SIPp host a trusted SIP core, `leeway_secs = 0`, and for an exact replay a manual clock at
//! the time base with lab controls (`--clock-url`).

pub mod itf;
pub mod sipp;
pub mod tokens;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};
use mcx_model::env::RequestKind;
use mcx_model::{McxModel, ModelConfig, Service, TokenProtection, TraceStep, Variant};

use crate::token::LabIdms;

/// A model trace with the configuration it was found in.
#[derive(Clone, Debug)]
pub struct TraceSource {
    /// The model configuration (sizes, services, attacker, policy).
    pub config: ModelConfig,
    /// The steps, as `McxModel::trace` renders them.
    pub steps: Vec<TraceStep>,
    /// What the trace shows: `property <name> (<kind>, <verdict>)` or `scenario <name>`.
    pub title: String,
}

impl TraceSource {
    /// Picks a trace out of `mcx-authz check --json` output: one variant object or an array of
    /// them (`--variant all`). `variant` is required when the output holds several.
    pub fn from_check_json(
        text: &str,
        variant: Option<Variant>,
        property: &str,
    ) -> anyhow::Result<TraceSource> {
        let value: serde_json::Value =
            serde_json::from_str(text).context("not JSON (expected `mcx-authz check --json`)")?;
        let reports: Vec<&serde_json::Value> = match &value {
            serde_json::Value::Array(a) => a.iter().collect(),
            v @ serde_json::Value::Object(_) => vec![v],
            _ => bail!("expected a `check --json` object or array"),
        };
        let names: Vec<&str> = reports
            .iter()
            .filter_map(|r| r.get("variant")?.as_str())
            .collect();
        let report = match variant {
            Some(v) => reports
                .iter()
                .find(|r| r.get("variant").and_then(|x| x.as_str()) == Some(v.name()))
                .with_context(|| format!("no variant {v} in the input (has {names:?})"))?,
            None if reports.len() == 1 => reports[0],
            None => bail!("the input holds variants {names:?}: pick one with --variant"),
        };
        let variant: Variant = report
            .get("variant")
            .and_then(|v| v.as_str())
            .context("a report without \"variant\"")?
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        let config = match report.get("config") {
            Some(c) => serde_json::from_value::<ModelConfig>(c.clone())
                .context("the report's \"config\" is not a model configuration")?,
            None => ModelConfig::for_variant(variant),
        };
        let props = report
            .get("properties")
            .and_then(|p| p.as_array())
            .context("a report without \"properties\"")?;
        let with_trace: Vec<&str> = props
            .iter()
            .filter(|p| p.get("trace").is_some_and(|t| !t.is_null()))
            .filter_map(|p| p.get("name")?.as_str())
            .collect();
        let prop = props
            .iter()
            .find(|p| p.get("name").and_then(|n| n.as_str()) == Some(property))
            .with_context(|| {
                format!("no property {property:?} for {variant}; with a trace: {with_trace:?}")
            })?;
        let trace = prop.get("trace").filter(|t| !t.is_null()).with_context(|| {
            format!(
                "property {property:?} has no trace for {variant} (no witness or counterexample); with a trace: {with_trace:?}"
            )
        })?;
        let steps: Vec<TraceStep> =
            serde_json::from_value(trace.clone()).context("the trace's steps")?;
        let field = |k: &str| prop.get(k).and_then(|v| v.as_str()).unwrap_or("?");
        Ok(TraceSource {
            title: format!(
                "{variant}: property {property} ({}, verdict {}, expected {})",
                field("kind"),
                field("verdict"),
                field("expected")
            ),
            config,
            steps,
        })
    }

    /// The trace of named scenario `name` (`mcx_model::env::SCENARIOS`) in configuration `cfg`.
    pub fn from_scenario(name: &str, cfg: ModelConfig) -> anyhow::Result<TraceSource> {
        cfg.validate().map_err(|e| anyhow::anyhow!(e))?;
        let variant = cfg.variant;
        let model = cfg.clone().into_model();
        let Some(actions) = model.scenario(name) else {
            let known: Vec<&str> = mcx_model::env::SCENARIOS.iter().map(|s| s.0).collect();
            if known.contains(&name) {
                bail!("scenario {name:?} cannot happen in this configuration of {variant}");
            }
            bail!("unknown scenario {name:?} (known: {known:?})");
        };
        Ok(TraceSource {
            steps: model.trace(&actions).steps,
            config: cfg,
            title: format!("{variant}: scenario {name}"),
        })
    }
}

/// How the replay is rendered.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Without [`ReplayOptions::clock_url`]: a tick becomes a pause of this many milliseconds.
    pub tick_ms: u64,
    /// Base URL of the server's admin view with lab controls (`http://127.0.0.1:8080`): a tick
    /// becomes `POST /clock/advance?secs=1`, a restart `POST /restart`.
    pub clock_url: Option<String>,
    /// Pause after each lab-control call (SIPp runs `<exec>` in the background).
    pub settle_ms: u64,
    /// Unix time of model tick 0 (the server's `manual_clock_start`).
    pub time_base: u64,
    /// How long SIPp waits for each response, in milliseconds.
    pub response_timeout_ms: u64,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            tick_ms: 1000,
            clock_url: None,
            settle_ms: 300,
            time_base: 0,
            response_timeout_ms: 5000,
        }
    }
}

/// The generated artefacts.
#[derive(Clone, Debug)]
pub struct Replay {
    /// `scenario.xml`.
    pub scenario_xml: String,
    /// `tokens.csv` (SIPp `-inf`: `SEQUENTIAL`, then one line of tokens).
    pub tokens_csv: String,
    /// `trace.itf.json`.
    pub itf: serde_json::Value,
    /// `server.toml`: the mcx-authz configuration the replay assumes (listeners left to edit).
    pub server_toml: String,
    /// The `jti` of each CSV field, in field order.
    pub token_ids: Vec<String>,
    /// Requests that cannot be replayed from the SIPp source (sent straight to the server with
    /// a forged P-Asserted-Identity), by step number.
    pub skipped_direct: Vec<usize>,
    /// Requests the scenario sends (including the attacker's set-up registration).
    pub requests: usize,
    /// Things the reader must know (a restart without lab controls, protection on the wire).
    pub notes: Vec<String>,
    /// The title of the trace.
    pub title: String,
}

impl Replay {
    /// Builds the artefacts for `src`, minting the tokens with `lab` (forged ones with a
    /// throw-away key under the lab's `kid`).
    pub fn build(src: &TraceSource, lab: &LabIdms, opts: &ReplayOptions) -> anyhow::Result<Replay> {
        src.config.validate().map_err(|e| anyhow::anyhow!(e))?;
        let model = src.config.clone().into_model();
        let plan = sipp::Plan::new(&model, &src.steps)?;
        let minted = tokens::mint_all(&model, lab, &plan.tokens, opts.time_base)?;
        let mut notes = Vec::new();
        let protection = wire_protection(&src.config, &src.steps)?;
        if protection == TokenProtection::Optional
            && src.config.machine_policy().token_protection == TokenProtection::Required
        {
            notes.push(
                "the model's tokens are protected (TS 33.180 clause 9); they go in clear here and the server runs with token_protection = \"optional\", which decides every request of this trace as the model's machine does".into(),
            );
        }
        if opts.clock_url.is_none() {
            if src.steps.iter().any(|s| s.action == "restart") {
                notes.push("the trace restarts the server but no --clock-url was given: the restart is only a comment, and later responses may differ".into());
            }
            if src.steps.iter().any(|s| s.action == "tick") {
                notes.push(format!(
                    "ticks are pauses of {} ms: exact only against a server whose clock runs one second per tick from the time base",
                    opts.tick_ms
                ));
            }
        }
        let scenario_xml = sipp::render(&model, &plan, src, opts)?;
        let tokens_csv = tokens::csv(&minted)?;
        Ok(Replay {
            scenario_xml,
            tokens_csv,
            itf: itf::trace(src, opts.time_base),
            server_toml: server_toml(&src.config, protection, opts.time_base)?,
            token_ids: plan.tokens.iter().map(|t| t.id()).collect(),
            skipped_direct: plan.skipped_direct.clone(),
            requests: plan.requests,
            notes,
            title: src.title.clone(),
        })
    }

    /// The SIPp command line that replays this against `target` (`HOST:PORT`) over UDP.
    pub fn sipp_command(&self, target: &str) -> String {
        format!(
            "sipp -sf scenario.xml {target} -inf tokens.csv -m 1 -nostdin -timeout 60s -timeout_error -default_behaviors all,-bye -i 127.0.0.1 -p 15070 -trace_err -trace_msg"
        )
    }

    /// The README: what the trace is, the command, the server it assumes.
    pub fn readme(&self, opts: &ReplayOptions) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "Replay of the model trace {}", self.title);
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "  {}   # add -t t1 for TCP",
            self.sipp_command("127.0.0.1:5060")
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "SIPp exits 0 only if every response is the one the model predicts (status, TS 24.379 Warning code, SIP-ETag)."
        );
        let _ = writeln!(
            t,
            "{} requests; {} tokens in tokens.csv (jti: {}); time base {} (model tick 0; one tick = one second).",
            self.requests,
            self.token_ids.len(),
            self.token_ids.join(", "),
            opts.time_base
        );
        match &opts.clock_url {
            Some(u) => {
                let _ = writeln!(t, "Clock ticks and restarts call the lab controls at {u} (curl must be installed).");
            }
            None => {
                let _ = writeln!(
                    t,
                    "Clock ticks are pauses of {} ms (no --clock-url).",
                    opts.tick_ms
                );
            }
        }
        if !self.skipped_direct.is_empty() {
            let _ = writeln!(
                t,
                "Not sent: steps {:?} go straight to the server with a forged P-Asserted-Identity from an untrusted address; SIPp's source is a trusted core, so they appear as comments (the machine refuses untrusted identities, so they change no state).",
                self.skipped_direct
            );
        }
        for n in &self.notes {
            let _ = writeln!(t, "Note: {n}");
        }
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "The server must run as server.toml says (mcx-authz: mcx-authz serve --config server.toml --data-dir <the lab dir the tokens were minted with>):"
        );
        t.push_str(&self.server_toml);
        t
    }

    /// Writes `scenario.xml`, `tokens.csv`, `trace.itf.json`, `server.toml` and `README` into
    /// `dir` (created if missing).
    pub fn write(&self, dir: &Path, opts: &ReplayOptions) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let files: [(&str, String); 5] = [
            ("scenario.xml", self.scenario_xml.clone()),
            ("tokens.csv", self.tokens_csv.clone()),
            (
                "trace.itf.json",
                serde_json::to_string_pretty(&self.itf)? + "\n",
            ),
            ("server.toml", self.server_toml.clone()),
            ("README", self.readme(opts)),
        ];
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// The `token_protection` the server must run with so that it decides the trace's requests as
/// the model's machine does, given that tokens go in clear on the wire (clause 9 protection is
/// not implemented).
fn wire_protection(cfg: &ModelConfig, steps: &[TraceStep]) -> anyhow::Result<TokenProtection> {
    let policy = cfg.machine_policy().token_protection;
    if steps.iter().any(|s| s.action == "crash") {
        bail!("the trace has a server crash (kill -9 and a restart from the durable store): the replay's POST /restart empties an in-memory server, which is not what a crash does; tests/durability.rs kills a real server instead");
    }
    if steps
        .iter()
        .any(|s| s.actor == "Attacker" && s.token.as_ref().is_some_and(|t| t.protected))
    {
        bail!("the trace's attacker resends a protected PUBLISH: its answer rests on the CSK tie and the I_MESSAGE replay cache (TS 33.180 5.4), which a replay without clause 9 and MIKEY-SAKKE on the wire cannot reproduce");
    }
    let sent = steps
        .iter()
        .filter(|s| sipp::is_delivery(s) && s.via.as_deref() == Some("sip-core"));
    let (mut protected, mut clear) = (false, false);
    for s in sent {
        if let Some(t) = &s.token {
            if t.protected {
                protected = true;
            } else if s.request == RequestKind::PublishAuth {
                clear = true;
            }
        }
    }
    if policy == TokenProtection::Required && protected && clear {
        bail!("the trace presents both protected and unprotected tokens under token_protection = required; without TS 33.180 clause 9 on the wire the server cannot tell them apart");
    }
    Ok(if protected {
        TokenProtection::Optional
    } else {
        policy
    })
}

/// The server configuration the replay assumes.
fn server_toml(
    cfg: &ModelConfig,
    protection: TokenProtection,
    time_base: u64,
) -> anyhow::Result<String> {
    let mut policy = cfg.machine_policy();
    policy.token_protection = protection;
    let table = toml::Value::try_from(&policy).context("policy as TOML")?;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# mcx-authz serve configuration for this replay (the model's machine policy, one tick = one second)."
    );
    let _ = writeln!(
        t,
        "[sip]\nudp = [\"127.0.0.1:5060\"]\ntcp = [\"127.0.0.1:5060\"]\ntrusted_cores = [\"127.0.0.0/8\", \"::1/128\"]   # the SIPp host plays the SIP core\n"
    );
    let _ = writeln!(
        t,
        "[admin]\nlisten = \"127.0.0.1:8080\"\nlab_controls = true\nmanual_clock_start = {time_base}   # model tick 0\n"
    );
    let _ = writeln!(
        t,
        "[http]\nenabled = false   # the replay exercises the SIP leg only\n"
    );
    let _ = writeln!(
        t,
        "[store]\nbackend = \"memory\"   # a replay starts from an empty server (POST /restart empties it)\n"
    );
    let _ = writeln!(
        t,
        "[token]\nleeway_secs = 0   # the model's validator has no clock-skew leeway\n"
    );
    let _ = writeln!(t, "[policy]\nvariant = \"{}\"", cfg.variant.name());
    t.push_str(&toml::to_string(&table).context("policy as TOML")?);
    Ok(t)
}

/// The model's services by name.
pub(crate) fn service_named(name: &str) -> anyhow::Result<Service> {
    Service::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .with_context(|| format!("unknown service {name:?} in the trace"))
}

/// Ensures the model knows this IMPU (the trace and the configuration belong together).
pub(crate) fn check_impu(model: &McxModel, impu: &str) -> anyhow::Result<()> {
    if model.impu_index(&mcx_model::Impu::new(impu)).is_none() {
        bail!("IMPU {impu} is not one of the configuration's: the trace and its \"config\" do not match");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcx_model::env::EnvAction;

    fn lab() -> LabIdms {
        LabIdms::ephemeral(&[jsonwebtoken::Algorithm::ES256]).unwrap()
    }

    /// The attacker's forged-PAI PUBLISH straight to the server is a comment, not a request; the
    /// tokens the UE presents are in the CSV in order; ticks are pauses without lab controls.
    #[test]
    fn direct_requests_are_comments_and_ticks_pauses() {
        let cfg = ModelConfig::for_variant(Variant::Ct1Rel18);
        let model = cfg.clone().into_model();
        let mut s = model.init_state();
        let mut actions = Vec::new();
        let intents = [
            EnvAction::LogOn {
                ue: 0,
                user: 0,
                kind: mcx_model::TokenKind::Valid,
            },
            EnvAction::Register(0),
            EnvAction::ForgePai {
                impu: model.ue_impu(0, 0),
            },
            EnvAction::Tick,
        ];
        for a in intents {
            s = model.apply(&s, &a).unwrap().0;
            actions.push(a);
            while let Some(d) = model.enabled(&s).into_iter().find(|a| {
                matches!(
                    a,
                    EnvAction::Deliver {
                        keep_copy: false,
                        ..
                    }
                )
            }) {
                s = model.apply(&s, &d).unwrap().0;
                actions.push(d);
            }
        }
        let src = TraceSource {
            steps: model.trace(&actions).steps,
            config: cfg,
            title: "test".into(),
        };
        let opts = ReplayOptions {
            tick_ms: 777,
            ..ReplayOptions::default()
        };
        let r = Replay::build(&src, &lab(), &opts).unwrap();
        assert_eq!(r.skipped_direct.len(), 1, "{:?}", src.steps);
        assert!(r.scenario_xml.contains("NOT SENT"));
        // The companion UE's set-up REGISTER and PUBLISH (step 0 of the default configuration),
        // the attacker's set-up REGISTER, the UE's REGISTER; not the forged PUBLISH.
        assert_eq!(r.requests, 4);
        assert_eq!(r.scenario_xml.matches("<send ").count(), 4);
        assert_eq!(r.scenario_xml.matches("PUBLISH sip:").count(), 1);
        assert_eq!(
            r.scenario_xml
                .matches("<pause milliseconds=\"777\"/>")
                .count(),
            1
        );
        assert_eq!(r.token_ids, vec!["tok-A-t0-valid".to_owned()]);
        assert!(r.tokens_csv.starts_with("SEQUENTIAL\n"));
        assert_eq!(r.tokens_csv.lines().nth(1).unwrap().split('.').count(), 3);
        assert!(r.readme(&opts).contains("Not sent: steps"));
    }

    /// `check --json` input: the variant and property pick the trace; clear errors otherwise.
    #[test]
    fn check_json_selection() {
        let cfg = ModelConfig::for_variant(Variant::PreCr);
        let model = cfg.clone().into_model();
        let steps = model.trace(&model.scenario("bound").unwrap()).steps;
        let doc = serde_json::json!([{
            "variant": "pre-cr",
            "config": cfg,
            "properties": [
                {"name": "bound", "kind": "sometimes", "verdict": "holds", "expected": "holds", "trace": steps},
                {"name": "s1-authenticated-binding", "kind": "always", "verdict": "holds", "expected": "holds", "trace": null},
            ],
        }])
        .to_string();
        let src = TraceSource::from_check_json(&doc, Some(Variant::PreCr), "bound").unwrap();
        assert_eq!(src.steps, steps);
        assert_eq!(src.config, cfg);
        let e =
            TraceSource::from_check_json(&doc, Some(Variant::PreCr), "s1-authenticated-binding")
                .unwrap_err();
        assert!(e.to_string().contains("has no trace"), "{e}");
        let e = TraceSource::from_check_json(&doc, Some(Variant::PostCr), "bound").unwrap_err();
        assert!(e.to_string().contains("no variant post-cr"), "{e}");
        assert!(TraceSource::from_check_json("[1", None, "bound").is_err());
    }

    /// Protected tokens go in clear with `token_protection = "optional"`, said in the notes.
    #[test]
    fn post_cr_protection_is_noted() {
        let src =
            TraceSource::from_scenario("bound", ModelConfig::for_variant(Variant::PostCr)).unwrap();
        assert!(src
            .steps
            .iter()
            .any(|s| s.token.as_ref().is_some_and(|t| t.protected)));
        let r = Replay::build(&src, &lab(), &ReplayOptions::default()).unwrap();
        assert!(r.server_toml.contains("token_protection = \"optional\""));
        assert!(r.notes.iter().any(|n| n.contains("clause 9")));
    }
}
