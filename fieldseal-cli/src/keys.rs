//! The key commands: rotate, rewrap-root, bind-root, retire-root, shred,
//! erasure-report and the shred ledger's replay, over `KeyAdmin`.

use std::path::Path;
use std::time::Duration;

use fieldseal::admin::{RootKeyFate, RotationOutcome};
use fieldseal::audit::ShredLedger;
use fieldseal::{Sealer, Timestamp};
use serde_json::{Value, json};

use crate::{Cli, DONE, FAILED, Failure, NOTHING, Outcome, emit};

pub(crate) async fn rotate(
    cli: &Cli,
    sealer: &Sealer,
    named: &[String],
    all: bool,
    older_than: Option<Duration>,
    dry_run: bool,
) -> Outcome {
    let admin = sealer.admin().actor("rotate (command line)");
    let tenants = if all {
        admin.tenants().await?
    } else {
        named.to_vec()
    };
    let mut rows = Vec::new();
    let mut rotated = 0usize;
    let mut refused = 0usize;
    // The policy (which tenants are due, which refusals are one tenant's
    // matter) is the library's: this loop reports it.
    for tenant in &tenants {
        let due = admin.rotate_if_due(tenant, older_than, dry_run).await?;
        let (primary, age) = (due.primary, due.primary_age.as_secs());
        rows.push(match due.outcome {
            RotationOutcome::NotDue => json!({
                "tenant": tenant, "primary": primary, "primary_age_secs": age,
                "rotated": false,
            }),
            RotationOutcome::WouldRotate => {
                rotated += 1;
                json!({
                    "tenant": tenant, "primary": primary, "primary_age_secs": age,
                    "rotated": false, "would_rotate": true,
                })
            }
            RotationOutcome::Rotated(rotation) => {
                rotated += 1;
                json!({
                    "tenant": tenant, "previous": rotation.previous, "primary": rotation.primary,
                    "primary_age_secs": age, "rotated": true, "created": rotation.created,
                })
            }
            RotationOutcome::Refused(e) => {
                refused += 1;
                json!({
                    "tenant": tenant, "primary": primary, "primary_age_secs": age,
                    "rotated": false, "error": e.to_string(),
                })
            }
            // An outcome this build does not know: reported, not guessed at.
            other => {
                refused += 1;
                json!({
                    "tenant": tenant, "primary": primary, "primary_age_secs": age,
                    "rotated": false, "error": format!("{other:?}"),
                })
            }
        });
    }
    emit(
        cli,
        json!({ "command": "rotate", "dry_run": dry_run, "tenants": rows }),
        || {
            for r in &rows {
                let tenant = r["tenant"].as_str().unwrap_or_default();
                let age = humantime::format_duration(Duration::from_secs(
                    r["primary_age_secs"].as_u64().unwrap_or(0),
                ));
                if let Some(error) = r["error"].as_str() {
                    println!("{tenant}: not rotated: {error}");
                } else if r["rotated"] == true {
                    println!(
                        "{tenant}: rotated, primary version {} -> {} (the old primary was {age} old)",
                        r["previous"], r["primary"]
                    );
                } else if r["would_rotate"] == true {
                    println!(
                        "{tenant}: would rotate primary version {} ({age} old) (dry run)",
                        r["primary"]
                    );
                } else {
                    println!(
                        "{tenant}: primary version {} is {age} old, not due",
                        r["primary"]
                    );
                }
            }
            if rows.is_empty() {
                println!("no tenant has keys");
            }
        },
    );
    Ok(if refused > 0 {
        FAILED
    } else if rotated == 0 {
        NOTHING
    } else {
        DONE
    })
}

pub(crate) async fn rewrap_root(cli: &Cli, sealer: &Sealer, target: &str) -> Outcome {
    const PASSES: usize = 5;
    let admin = sealer.admin().actor("rotate rewrap-root (command line)");
    let mut total_rewrapped = 0;
    let mut audit_key_rewrapped = false;
    let mut passes = Vec::new();
    let mut complete = false;
    // A pass skips keys that change under it (a concurrent rotation or
    // re-wrap); the next pass takes them. A key under a root key this
    // configuration does not have is an error, not a skip.
    for pass in 1..=PASSES {
        let report = admin.rewrap_all(target).await?;
        total_rewrapped += report.rewrapped;
        audit_key_rewrapped |= report.audit_key_rewrapped;
        complete = report.is_complete();
        if !cli.quiet {
            eprintln!(
                "pass {pass}: {} keys examined, {} re-wrapped under {target} (or their tenant's \
                 own root key), {} already under it, {} changed during the pass, {} left under \
                 their tenant's own root key ({} of them refused by it){}",
                report.examined,
                report.rewrapped,
                report.already_current,
                report.skipped,
                report.own_root_keys,
                report.own_root_unavailable,
                if report.audit_key_skipped {
                    ", the audit key changed during the pass"
                } else {
                    ""
                }
            );
        }
        passes.push(json!({
            "examined": report.examined,
            "rewrapped": report.rewrapped,
            "already_current": report.already_current,
            "skipped": report.skipped,
            "own_root_keys": report.own_root_keys,
            "own_root_unavailable": report.own_root_unavailable,
            "audit_key_rewrapped": report.audit_key_rewrapped,
            "audit_key_skipped": report.audit_key_skipped,
            "unbound_refused": report.unbound_refused,
            "complete": complete,
        }));
        if report.unbound_refused && !cli.quiet {
            eprintln!(
                "every key is bound to this key store: it no longer accepts keys wrapped \
                 without its id"
            );
        }
        if complete {
            break;
        }
    }
    emit(
        cli,
        json!({ "command": "rewrap-root", "target": target, "complete": complete, "passes": passes }),
        || {
            if complete {
                let own = passes
                    .last()
                    .and_then(|p| p["own_root_keys"].as_u64())
                    .unwrap_or(0);
                println!(
                    "every tenant key and the audit key are under root key {target}{} \
                     ({total_rewrapped} tenant keys re-wrapped now{})",
                    if own > 0 {
                        format!(", but {own} under their tenants' own root keys")
                    } else {
                        String::new()
                    },
                    if audit_key_rewrapped {
                        ", and the audit key"
                    } else {
                        ""
                    }
                );
            } else {
                println!(
                    "keys kept changing during {PASSES} passes (concurrent rotations or \
                     re-wraps); run rewrap-root again"
                );
            }
        },
    );
    let unbound_refused = passes.iter().any(|p| p["unbound_refused"] == true);
    Ok(if !complete {
        FAILED
    } else if total_rewrapped == 0 && !audit_key_rewrapped && !unbound_refused {
        NOTHING
    } else {
        DONE
    })
}

pub(crate) async fn bind_root(cli: &Cli, sealer: &Sealer, tenant: &str) -> Outcome {
    let report = sealer
        .admin()
        .actor("rotate bind-root (command line)")
        .bind_tenant_root(tenant)
        .await?;
    let complete = report.is_complete();
    emit(
        cli,
        json!({
            "command": "bind-root",
            "tenant": tenant,
            "examined": report.examined,
            "rewrapped": report.rewrapped,
            "already_current": report.already_current,
            "skipped": report.skipped,
            "complete": complete,
        }),
        || {
            println!(
                "tenant {tenant}: {} keys re-wrapped under its own root key, {} already under \
                 it{}",
                report.rewrapped,
                report.already_current,
                if complete {
                    String::new()
                } else {
                    format!(
                        "; {} changed meanwhile: run bind-root again",
                        report.skipped
                    )
                }
            );
        },
    );
    Ok(if !complete {
        FAILED
    } else if report.rewrapped == 0 {
        NOTHING
    } else {
        DONE
    })
}

pub(crate) async fn shred(
    cli: &Cli,
    sealer: &Sealer,
    tenant: &str,
    yes: bool,
    has_ledger: bool,
) -> Outcome {
    if !yes {
        return Err(Failure::Usage(format!(
            "shred destroys every key of tenant `{tenant}`, so none of its values can be opened \
             again, ever; pass --yes to confirm"
        )));
    }
    let at = sealer
        .admin()
        .actor("rotate shred (command line)")
        .shred_tenant(tenant)
        .await?;
    if !has_ledger {
        eprintln!(
            "note: no shred_ledger is configured: restoring a backup taken before now brings \
             tenant `{tenant}` back while its root key exists (see OPERATIONS.md, \"Erasure and \
             backups\")"
        );
    }
    emit(
        cli,
        json!({ "command": "shred", "tenant": tenant, "shredded_at": at.to_string() }),
        || println!("tenant {tenant}: every key version destroyed at {at}"),
    );
    Ok(DONE)
}

/// `erasure-report --tenant T [--retention AGE]`.
pub(crate) async fn erasure_report(
    cli: &Cli,
    sealer: &Sealer,
    tenant: &str,
    retention: Option<Duration>,
) -> Outcome {
    let r = sealer.admin().erasure_report(tenant, retention).await?;
    let fate = |f: &RootKeyFate| match f {
        RootKeyFate::InUse => ("in use".to_string(), None),
        RootKeyFate::Unused { since } => ("unused".to_string(), Some(since.to_string())),
        RootKeyFate::Destroyed { gone } => ("destroyed".to_string(), Some(gone.to_string())),
        RootKeyFate::TenantOwned => ("the tenant's own".to_string(), None),
        _ => ("unknown".to_string(), None),
    };
    let keys: Vec<Value> = r
        .root_keys
        .iter()
        .map(|(id, f)| {
            let (state, at) = fate(f);
            json!({ "root_key": id, "state": state, "at": at })
        })
        .collect();
    let when = |t: Option<Timestamp>| t.map(|t| t.to_string());
    emit(
        cli,
        json!({
            "command": "erasure-report",
            "tenant": tenant,
            "shredded_at": when(r.shredded_at),
            "root_keys": keys,
            "unrecoverable_from": when(r.unrecoverable_from),
            "expected_from": when(r.expected_from),
        }),
        || {
            let Some(shred) = r.shredded_at else {
                println!("tenant {tenant} is not shredded");
                return;
            };
            println!("tenant {tenant}: shredded at {shred}");
            for (id, f) in &r.root_keys {
                match fate(f) {
                    (state, Some(at)) => println!("  root key {id}: {state} since {at}"),
                    (state, None) => println!("  root key {id}: {state}"),
                }
            }
            match (r.unrecoverable_from, r.expected_from) {
                (Some(at), _) => println!("unrecoverable from every backup since {at}"),
                (None, Some(at)) => println!(
                    "unrecoverable from every backup once retire-root destroys the keys above, \
                     from {at}"
                ),
                (None, None) => println!(
                    "recoverable from backups while a root key above is in use: run rotate-root, \
                     then retire-root"
                ),
            }
        },
    );
    Ok(DONE)
}

/// `retire-root --retention AGE`.
pub(crate) async fn retire_root(cli: &Cli, sealer: &Sealer, retention: Duration) -> Outcome {
    let r = sealer
        .admin()
        .actor("rotate retire-root (command line)")
        .retire_root_keys(retention)
        .await?;
    let pairs = |v: &[(String, Timestamp)]| -> Vec<Value> {
        v.iter()
            .map(|(id, at)| json!({ "root_key": id, "at": at.to_string() }))
            .collect()
    };
    emit(
        cli,
        json!({
            "command": "retire-root",
            "destroyed": pairs(&r.destroyed),
            "marked_unused": r.marked_unused,
            "waiting": pairs(&r.waiting),
            "in_use": r.in_use.iter().map(|(id, n)| json!({ "root_key": id, "keys": n })).collect::<Vec<_>>(),
            "blocked": r.blocked.iter().map(|(id, why)| json!({ "root_key": id, "reason": why })).collect::<Vec<_>>(),
            "not_this_stores": r.not_this_stores,
        }),
        || {
            for (id, at) in &r.destroyed {
                println!("root key {id}: destroyed; it unwraps nothing from {at}");
            }
            for id in &r.marked_unused {
                println!("root key {id}: no key is wrapped under it; its retention starts now");
            }
            for (id, at) in &r.waiting {
                println!("root key {id}: unused; destroyed by a run from {at}");
            }
            for (id, n) in &r.in_use {
                println!("root key {id}: {n} keys still wrapped under it (run rewrap-root)");
            }
            for (id, why) in &r.blocked {
                println!("root key {id}: not destroyed: {why}");
            }
            for id in &r.not_this_stores {
                eprintln!(
                    "warning: root key {id}: left alone: this store's audit log never names it (another \
                     store's key, or one this store never used; if it is this store's old root \
                     key and its log entries were pruned, destroy it by hand)"
                );
            }
        },
    );
    Ok(if r.destroyed.is_empty() && r.marked_unused.is_empty() {
        NOTHING
    } else {
        DONE
    })
}

/// `shred --replay LEDGER`: after a restore, erases again every tenant the
/// ledger says was shredded. Exit 0 if it erased any, 3 if the ledger was
/// already in effect, 1 if a line was refused (the others are applied).
pub(crate) async fn replay(cli: &Cli, sealer: &Sealer, ledger: &Path, yes: bool) -> Outcome {
    if !yes {
        return Err(Failure::Usage(
            "shred --replay destroys the keys of every tenant the ledger names as shredded, \
             so none of their values can be opened again; pass --yes to confirm"
                .into(),
        ));
    }
    let report = sealer
        .admin()
        .actor("rotate shred --replay (command line)")
        .replay_shred_ledger(&ShredLedger::new(ledger))
        .await?;
    let rejected: Vec<Value> = report
        .rejected
        .iter()
        .map(|r| json!({ "line": r.line, "reason": r.reason }))
        .collect();
    emit(
        cli,
        json!({
            "command": "shred --replay",
            "entries": report.entries,
            "shredded": report.shredded,
            "already": report.already,
            "absent": report.absent,
            "other_stores": report.other_stores,
            "rejected": rejected,
        }),
        || {
            for tenant in &report.shredded {
                println!("tenant {tenant}: shredded again (the restore had brought its keys back)");
            }
            println!(
                "{} entries: {} tenants shredded again, {} already in effect, {} of tenants \
                 this store does not know, {} of other key stores",
                report.entries,
                report.shredded.len(),
                report.already,
                report.absent,
                report.other_stores
            );
            for r in &report.rejected {
                eprintln!("line {}: refused: {}", r.line, r.reason);
            }
        },
    );
    if !report.is_clean() {
        return Err(Failure::Failed(format!(
            "{} ledger lines were refused (see above): nothing was done for them",
            report.rejected.len()
        )));
    }
    Ok(if report.shredded.is_empty() {
        NOTHING
    } else {
        DONE
    })
}
