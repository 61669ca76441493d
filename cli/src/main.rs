//! `sightline`: the command-line tool for site teams. Decides nothing itself: it reads
//! files and arguments, calls the `tracking-plan` rules (the same code the SDK and the
//! collector run) and prints their answers.
//!
//! Exit status: 0 all good, 1 the plan or some events are invalid, 2 bad arguments or an
//! unreadable file (one line on stderr).

use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;
use tracking_plan::identifiers::{
    hash_email, hash_phone, normalize_email, normalize_phone, EmailVariant, PhoneVariant,
};
use tracking_plan::{Message, Plan};

#[derive(Parser)]
#[command(
    name = "sightline",
    version,
    about = "Sightline tracking plans and identifier hashing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tracking plans.
    Plan {
        #[command(subcommand)]
        command: PlanCommand,
    },
    /// Normalize an identifier and print it with its SHA-256.
    Hash {
        #[command(subcommand)]
        command: HashCommand,
    },
    /// Advertising costs, for attribution's ROAS and CAC.
    Costs {
        #[command(subcommand)]
        command: CostsCommand,
    },
    /// Segment audiences, for the ad platforms' customer lists.
    Audience {
        #[command(subcommand)]
        command: AudienceCommand,
    },
}

#[derive(Subcommand)]
enum AudienceCommand {
    /// Write a segment's members as a hashed customer list (Meta Custom Audiences:
    /// `email,phone`; Google Customer Match: `Email,Phone`) to stdout or --out; the
    /// admin token is read from SIGHTLINE_ADMIN_TOKEN.
    Export {
        segment: String,
        #[arg(long)]
        write_key: String,
        /// meta or google.
        #[arg(long, default_value = "meta")]
        format: String,
        #[arg(long)]
        out: Option<String>,
        /// The collector's URL.
        #[arg(long, default_value = "http://127.0.0.1:8787")]
        url: String,
    },
}

#[derive(Subcommand)]
enum CostsCommand {
    /// Import a CSV of `date,source,medium,campaign,cost,currency` into a source; the
    /// admin token is read from SIGHTLINE_ADMIN_TOKEN (never an argument).
    Import {
        csv: String,
        #[arg(long)]
        write_key: String,
        /// A JSON object of exchange rates into the source's report currency
        /// (`{"USD": 0.92}`), for rows in other currencies.
        #[arg(long)]
        rates: Option<String>,
        /// The collector's URL.
        #[arg(long, default_value = "http://127.0.0.1:8787")]
        url: String,
    },
}

#[derive(Subcommand)]
enum PlanCommand {
    /// Check a plan file; prints every problem with its JSON path.
    Lint { plan: String },
    /// Validate newline-delimited JSON events against a plan; one verdict per line.
    Validate { plan: String, events: String },
}

#[derive(Subcommand)]
enum HashCommand {
    /// trim + lowercase (Meta's rule); --google also drops dots of gmail.com addresses.
    Email {
        value: String,
        #[arg(long, conflicts_with = "meta")]
        google: bool,
        #[arg(long)]
        meta: bool,
    },
    /// E.164 (Google's form, the default) or digits without `+` (--meta).
    Phone {
        value: String,
        /// Default country for national numbers (US, CA, GB, DE, FR, RU, KZ, UA, IN, BR).
        #[arg(long, default_value = "US")]
        country: String,
        #[arg(long, conflicts_with = "meta")]
        google: bool,
        #[arg(long)]
        meta: bool,
    },
}

/// A failure that ends the command with status 2 and one line on stderr.
struct Fatal(String);

fn read(path: &str) -> Result<String, Fatal> {
    std::fs::read_to_string(path).map_err(|e| Fatal(format!("cannot read {path}: {e}")))
}

fn load_plan(path: &str) -> Result<Plan, Fatal> {
    Plan::from_json(&read(path)?).map_err(|errs| {
        let first = errs.first().map(ToString::to_string).unwrap_or_default();
        Fatal(format!(
            "{path} is not a valid plan ({} problems; first: {first}); run `sightline plan lint`",
            errs.len()
        ))
    })
}

fn lint(path: &str, out: &mut impl Write) -> Result<u8, Fatal> {
    match Plan::from_json(&read(path)?) {
        Ok(plan) => {
            let _ = writeln!(out, "ok: {path}: plan version {}", plan.version);
            Ok(0)
        }
        Err(errors) => {
            for e in &errors {
                let _ = writeln!(out, "{path}: {e}");
            }
            let _ = writeln!(out, "{} problem(s)", errors.len());
            Ok(1)
        }
    }
}

fn validate(plan_path: &str, events_path: &str, out: &mut impl Write) -> Result<u8, Fatal> {
    let plan = load_plan(plan_path)?;
    let file = std::fs::File::open(events_path)
        .map_err(|e| Fatal(format!("cannot read {events_path}: {e}")))?;
    let (mut valid, mut invalid) = (0usize, 0usize);
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Fatal(format!("cannot read {events_path}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let problems: Vec<String> = match serde_json::from_str::<Message>(&line) {
            Err(e) => vec![format!("not a message: {e}")],
            Ok(m) => {
                let mut p: Vec<String> = Vec::new();
                if let Err(e) = m.check_shape() {
                    p.push(format!("shape: {}", e.describe()));
                }
                let violations = plan.validate(&m, line.len());
                let flags: Vec<String> = violations
                    .iter()
                    .filter(|v| !plan.is_blocking(v))
                    .map(|v| v.kind.as_str().to_string())
                    .collect();
                p.extend(
                    violations
                        .iter()
                        .filter(|v| plan.is_blocking(v))
                        .map(|v| format!("{} at {}: {}", v.kind.as_str(), v.path, v.message)),
                );
                if p.is_empty() {
                    valid += 1;
                    let note = if flags.is_empty() {
                        String::new()
                    } else {
                        format!(" (flagged: {})", flags.join(", "))
                    };
                    let _ = writeln!(out, "{n}: valid{note}");
                    continue;
                }
                p
            }
        };
        invalid += 1;
        let _ = writeln!(out, "{n}: invalid: {}", problems.join("; "));
    }
    let _ = writeln!(out, "{valid} valid, {invalid} invalid");
    Ok(u8::from(invalid > 0))
}

fn hash(cmd: HashCommand, out: &mut impl Write) -> Result<u8, Fatal> {
    let (normalized, digest) = match cmd {
        HashCommand::Email { value, google, .. } => {
            let variant = if google {
                EmailVariant::Google
            } else {
                EmailVariant::Standard
            };
            let n =
                normalize_email(&value, variant).map_err(|e| Fatal(format!("{value:?}: {e}")))?;
            let h = hash_email(&value, variant).map_err(|e| Fatal(format!("{value:?}: {e}")))?;
            (n, h)
        }
        HashCommand::Phone {
            value,
            country,
            meta,
            ..
        } => {
            let variant = if meta {
                PhoneVariant::Meta
            } else {
                PhoneVariant::E164
            };
            let n =
                normalize_phone(&value, &country).map_err(|e| Fatal(format!("{value:?}: {e}")))?;
            let h = hash_phone(&value, &country, variant)
                .map_err(|e| Fatal(format!("{value:?}: {e}")))?;
            let shown = if meta {
                n.trim_start_matches('+').to_string()
            } else {
                n
            };
            (shown, h)
        }
    };
    let _ = writeln!(out, "{normalized}\t{digest}");
    Ok(0)
}

/// Sends a cost CSV to the collector's admin API; 1 when it refuses lines of it.
fn import_costs(
    csv: &str,
    write_key: &str,
    rates: Option<&str>,
    url: &str,
    out: &mut impl Write,
) -> Result<u8, Fatal> {
    let token = std::env::var("SIGHTLINE_ADMIN_TOKEN")
        .map_err(|_| Fatal("set SIGHTLINE_ADMIN_TOKEN to the collector's admin token".into()))?;
    let rates: serde_json::Value = match rates {
        Some(path) => serde_json::from_str(&read(path)?)
            .map_err(|e| Fatal(format!("{path} is not JSON: {e}")))?,
        None => serde_json::json!({}),
    };
    let body = serde_json::json!({"csv": read(csv)?, "rates": rates});
    let endpoint = format!("{}/admin/v1/costs", url.trim_end_matches('/'));
    let answer = ureq::post(&endpoint)
        .query("writeKey", write_key)
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(body);
    let (status, reply): (u16, serde_json::Value) = match answer {
        Ok(r) => (r.status(), r.into_json().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or_default()),
        Err(e) => return Err(Fatal(format!("cannot reach {endpoint}: {e}"))),
    };
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(|e| Fatal(e.to_string()));
    match status {
        200 => {
            w(
                out,
                format!(
                    "imported {} rows, {:.2} {} in all",
                    reply["imported"],
                    reply["total"].as_f64().unwrap_or(0.0),
                    reply["currency"].as_str().unwrap_or("")
                ),
            )?;
            Ok(0)
        }
        400 if reply["error"]["code"] == "invalid_csv" => {
            for l in reply["lines"].as_array().into_iter().flatten() {
                w(
                    out,
                    format!(
                        "{csv}:{}: {}",
                        l["line"],
                        l["message"].as_str().unwrap_or("")
                    ),
                )?;
            }
            Ok(1)
        }
        _ => Err(Fatal(format!(
            "{endpoint} answered {status}: {}",
            reply["error"]["message"].as_str().unwrap_or("no message")
        ))),
    }
}

/// Fetches a segment's export from the admin API and writes it.
fn export_audience(
    segment: &str,
    write_key: &str,
    format: &str,
    out_path: Option<&str>,
    url: &str,
    out: &mut impl Write,
) -> Result<u8, Fatal> {
    let token = std::env::var("SIGHTLINE_ADMIN_TOKEN")
        .map_err(|_| Fatal("set SIGHTLINE_ADMIN_TOKEN to the collector's admin token".into()))?;
    let endpoint = format!(
        "{}/admin/v1/audiences/{segment}.csv",
        url.trim_end_matches('/')
    );
    let answer = ureq::get(&endpoint)
        .query("writeKey", write_key)
        .query("format", format)
        .set("Authorization", &format!("Bearer {token}"))
        .call();
    let resp = match answer {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let reply: serde_json::Value = r.into_json().unwrap_or_default();
            return Err(Fatal(format!(
                "{endpoint} answered {code}: {}",
                reply["error"]["message"].as_str().unwrap_or("no message")
            )));
        }
        Err(e) => return Err(Fatal(format!("cannot reach {endpoint}: {e}"))),
    };
    let header = |k: &str| resp.header(k).unwrap_or("0").to_string();
    let (rows, no_consent, no_keys) = (
        header("X-Rows"),
        header("X-Excluded-No-Consent"),
        header("X-Excluded-No-Keys"),
    );
    let csv = resp
        .into_string()
        .map_err(|e| Fatal(format!("reading {endpoint}: {e}")))?;
    match out_path {
        Some(p) => std::fs::write(p, &csv).map_err(|e| Fatal(format!("cannot write {p}: {e}")))?,
        None => write!(out, "{csv}").map_err(|e| Fatal(e.to_string()))?,
    }
    eprintln!("{rows} rows; left out: {no_consent} without consent, {no_keys} without a hash");
    Ok(0)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("error: bad arguments");
            eprintln!("{first} (see `sightline --help`)");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::Plan {
            command: PlanCommand::Lint { plan },
        } => lint(&plan, &mut out),
        Command::Plan {
            command: PlanCommand::Validate { plan, events },
        } => validate(&plan, &events, &mut out),
        Command::Hash { command } => hash(command, &mut out),
        Command::Costs {
            command:
                CostsCommand::Import {
                    csv,
                    write_key,
                    rates,
                    url,
                },
        } => import_costs(&csv, &write_key, rates.as_deref(), &url, &mut out),
        Command::Audience {
            command:
                AudienceCommand::Export {
                    segment,
                    write_key,
                    format,
                    out: path,
                    url,
                },
        } => export_audience(
            &segment,
            &write_key,
            &format,
            path.as_deref(),
            &url,
            &mut out,
        ),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Fatal(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
