//! Progress on stderr (a bar on a terminal, plain lines otherwise), and the
//! final report: lines on stdout, or JSON with `--json`.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fieldseal::jobs::{JobReport, Progress};
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
