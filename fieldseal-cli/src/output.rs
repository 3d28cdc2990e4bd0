//! Progress on stderr (a bar on a terminal, plain lines otherwise), and the
//! final report: lines on stdout, or JSON with `--json`.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fieldseal::jobs::{JobReport, Plan, Progress, RetireReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

/// Progress of a job, shown on stderr.
pub(crate) struct Bars {
    terminal: bool,
    quiet: bool,
    state: Mutex<State>,
}

struct State {
    bar: Option<ProgressBar>,
    table: String,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl Bars {
    pub(crate) fn new(quiet: bool) -> Self {
        let now = Instant::now();
        Self {
            terminal: std::io::stderr().is_terminal(),
            quiet,
            state: Mutex::new(State {
                bar: None,
                table: String::new(),
                total: 0,
                done: 0,
                started: now,
                last_line: now,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn rate(done: u64, since: Instant) -> f64 {
    done as f64 / since.elapsed().as_secs_f64().max(1e-3)
}

impl Progress for Bars {
    fn start(&self, table: &str, rows: u64) {
        let mut s = self.state();
        s.table = table.to_string();
        s.total = rows;
        s.done = 0;
        s.started = Instant::now();
        s.last_line = s.started;
        if self.quiet {
            return;
        }
        if self.terminal {
            let bar = ProgressBar::with_draw_target(Some(rows), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>16} [{bar:30}] {pos}/{len} rows  {per_sec}  eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(table.to_string());
            s.bar = Some(bar);
        } else {
            eprintln!("{table}: {rows} rows");
        }
    }

    fn advance(&self, _table: &str, rows: u64) {
        let mut s = self.state();
        s.done += rows;
        if let Some(bar) = &s.bar {
            bar.inc(rows);
        } else if !self.quiet && s.last_line.elapsed() >= Duration::from_secs(5) {
            s.last_line = Instant::now();
            let r = rate(s.done, s.started);
            let left = s.total.saturating_sub(s.done);
            eprintln!(
                "{}: {}/{} rows looked at by this process, {r:.0} rows/s, about {}s left",
                s.table,
                s.done,
                s.total,
                (left as f64 / r.max(1.0)).round()
            );
        }
    }

    fn finish(&self, table: &str) {
        let mut s = self.state();
        if let Some(bar) = s.bar.take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            eprintln!(
                "{table}: this process looked at {} rows in {:.1}s",
                s.done,
                s.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// A job report as JSON.
pub(crate) fn job_json(report: &JobReport) -> Value {
    json!({
        "dry_run": report.dry_run,
        "tables": report.tables.iter().map(|t| json!({
            "table": t.table,
            "job": t.job.as_ref().map(|(id, run)| json!({ "id": id, "run": run })),
            "complete": t.complete,
            "scanned": t.counts.scanned,
            "written": t.counts.written,
            "current": t.counts.current,
            "changed_meanwhile": t.counts.changed,
            "failed": t.counts.failed,
            "nulls": t.counts.nulls,
            "plaintext": t.counts.legacy,
            "shredded": t.counts.shredded,
            "failures_by_kind": t.failures_by_kind.iter()
                .map(|(kind, n)| (kind.as_str().to_string(), Value::from(*n)))
                .collect::<serde_json::Map<_, _>>(),
            "failures": t.failures.iter().map(|f| json!({
                "column": f.column,
                "key": f.key,
                "kind": f.kind.as_str(),
                "message": f.message,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// A job report as lines.
pub(crate) fn print_job(verb: &str, report: &JobReport) {
    let dry = if report.dry_run {
        " (dry run: would be)"
    } else {
        ""
    };
    for t in &report.tables {
        let c = &t.counts;
        let job = t
            .job
            .as_ref()
            .map(|(id, run)| {
                format!(
                    " [job {id}, run {run}{}]",
                    if t.complete { ", complete" } else { "" }
                )
            })
            .unwrap_or_default();
        println!(
            "{}: {} values, {} {verb}{dry}, {} already current, {} changed by the \
             application meanwhile, {} failed, {} NULL, {} plaintext{job}",
            t.table, c.scanned, c.written, c.current, c.changed, c.failed, c.nulls, c.legacy
        );
        print_shredded(t);
        print_failures(t);
    }
}

/// A verify report as lines: what opened, and every row that did not.
pub(crate) fn print_verify(report: &JobReport) {
    for t in &report.tables {
        let c = &t.counts;
        let opened = c
            .scanned
            .saturating_sub(c.failed + c.nulls + c.legacy + c.shredded);
        println!(
            "{}: {} values, {opened} opened, {} failed, {} NULL, {} plaintext",
            t.table, c.scanned, c.failed, c.nulls, c.legacy
        );
        print_shredded(t);
        print_failures(t);
    }
}

/// Values of shredded tenants: not failures, the same count from every
/// command.
fn print_shredded(t: &fieldseal::jobs::TableReport) {
    if t.counts.shredded > 0 {
        println!(
            "  {} values of shredded tenants: erased on purpose, never opened or \
             re-sealed again; delete their rows when convenient",
            t.counts.shredded
        );
    }
}

/// The first 50 rows that failed, with their key and reason (never a value).
fn print_failures(t: &fieldseal::jobs::TableReport) {
    for f in t.failures.iter().take(50) {
        println!(
            "  {}.{} key {}: {} ({})",
            t.table, f.column, f.key, f.kind, f.message
        );
    }
    if t.counts.failed > 50 {
        println!(
            "  … and {} more (--json lists up to 1,000)",
            t.counts.failed - 50
        );
    }
}

pub(crate) fn plan_json(plan: &Plan) -> Value {
    let mut columns = Vec::new();
    for ((table, column), tenants) in &plan.columns {
        for (tenant, u) in tenants {
            columns.push(json!({
                "table": table,
                "column": column,
                "tenant": tenant,
                "primary": u.primary,
                "by_version": u.by_version.iter().map(|(v, n)| (v.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "not_primary": u.not_primary,
                "plaintext": u.legacy,
                "nulls": u.nulls,
                "malformed": u.malformed,
                "shredded": u.shredded,
            }));
        }
    }
    json!({
        "command": "plan",
        "rows": plan.rows,
        "columns": columns,
        "not_primary": plan.not_primary(),
        "plaintext": plan.legacy(),
        "estimated_reseal_secs": plan.estimated_reseal.as_secs_f64(),
        "estimated_migrate_secs": plan.estimated_migrate.as_secs_f64(),
    })
}

pub(crate) fn output_plan(plan: &Plan) {
    for (table, rows) in &plan.rows {
        println!("{table}: {rows} rows");
    }
    println!(
        "{:<24} {:<20} {:<16} {:>8} {:>22} {:>11} {:>10} {:>8} {:>9}",
        "table",
        "column",
        "tenant",
        "primary",
        "values per version",
        "not primary",
        "plaintext",
        "NULL",
        "malformed"
    );
    for ((table, column), tenants) in &plan.columns {
        for (tenant, u) in tenants {
            let versions = u
                .by_version
                .iter()
                .map(|(v, n)| format!("v{v}:{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            let primary = if u.shredded {
                "shredded".to_string()
            } else {
                u.primary.to_string()
            };
            println!(
                "{table:<24} {column:<20} {tenant:<16} {primary:>8} {versions:>22} {:>11} {:>10} {:>8} {:>9}",
                u.not_primary, u.legacy, u.nulls, u.malformed
            );
        }
    }
    // Totals per column, over every tenant.
    for ((table, column), tenants) in &plan.columns {
        let mut by_version: std::collections::BTreeMap<u32, u64> = Default::default();
        let (mut sealed, mut shredded) = (0u64, 0u64);
        for u in tenants.values() {
            for (v, n) in &u.by_version {
                *by_version.entry(*v).or_insert(0) += n;
                sealed += n;
                if u.shredded {
                    shredded += n;
                }
            }
        }
        let sum =
            |f: fn(&fieldseal::jobs::ColumnUsage) -> u64| tenants.values().map(f).sum::<u64>();
        let versions = by_version
            .iter()
            .map(|(v, n)| format!("v{v}:{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "total {table}.{column}: {} tenants, {sealed} sealed ({}), {} not under their \
             tenant's primary, {} plaintext, {} NULL, {} malformed, {shredded} of shredded \
             tenants",
            tenants.len(),
            if versions.is_empty() {
                "none"
            } else {
                versions.as_str()
            },
            sum(|u| u.not_primary),
            sum(|u| u.legacy),
            sum(|u| u.nulls),
            sum(|u| u.malformed),
        );
    }
    println!(
        "reseal would write {} values (about {} with one worker); migrate would seal {} \
         (about {})",
        plan.not_primary(),
        humantime::format_duration(round(plan.estimated_reseal)),
        plan.legacy(),
        humantime::format_duration(round(plan.estimated_migrate)),
    );
}

/// To the millisecond, for printing.
pub(crate) fn round(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn retire_json(report: &RetireReport) -> Value {
    json!({
        "command": "retire",
        "dry_run": report.dry_run,
        "tenants": report.tenants.iter().map(|(tenant, t)| (tenant.clone(), json!({
            "destroyed": t.destroyed,
            "in_use": t.in_use.iter().map(|(v, c)| (v.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
            "primary_too_young_secs": t.primary_too_young.map(|d| d.as_secs()),
            "jobs_running": t.jobs_running,
            "min_decryption_version": t.min_decryption_version,
            "unreadable": t.unreadable.iter().map(|(v, c)| (v.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
        }))).collect::<serde_json::Map<_, _>>(),
    })
}

pub(crate) fn output_retire(report: &RetireReport) {
    let would = if report.dry_run {
        "would destroy"
    } else {
        "destroyed"
    };
    if report.tenants.is_empty() {
        println!("no tenant has a version older than its primary");
    }
    for (tenant, t) in &report.tenants {
        if let Some(age) = t.primary_too_young {
            println!(
                "{tenant}: nothing destroyed: the primary is {} old, younger than the cache \
                 time to live (processes may still seal under the previous version)",
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            );
        }
        if !t.jobs_running.is_empty() {
            println!(
                "{tenant}: nothing destroyed: {} still running (a worker may be writing a batch \
                 it sealed before the last rotation); run retire again once it is over",
                t.jobs_running.join(", ")
            );
        }
        for v in &t.destroyed {
            println!("{tenant}: {would} key version {v}");
        }
        if let Some(v) = t.min_decryption_version {
            let set = if report.dry_run { "would set" } else { "set" };
            println!(
                "{tenant}: {set} the minimum decryption version to {v}: every older version \
                 is destroyed (blind index searches stop at it)"
            );
        }
        for (v, uses) in &t.in_use {
            let uses = uses
                .iter()
                .map(|(col, n)| format!("{n} in {col}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!("{tenant}: kept key version {v}: values still use it ({uses}); run reseal");
        }
        for (v, uses) in &t.unreadable {
            let uses = uses
                .iter()
                .map(|(col, n)| format!("{n} in {col}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "{tenant}: values under key version {v} can no longer open ({uses}): the \
                 version is destroyed or unknown to the key store"
            );
        }
    }
}
