//! Metrics and tracing show what fieldseal does and never what it protects.
//!
//! One test (a metrics recorder and a tracing subscriber are process-wide):
//! a subscriber at TRACE and a metrics recorder capture everything while every
//! operation runs with marker root keys and plaintexts; the tenant keys are
//! captured at the provider boundary. No marker and no tenant key appears in
//! any captured output, raw, in hex, base64 or base64url, or as a byte list.
//! Then the metrics say what happened, with bounded labels, and the seal/open
//! hot path logs nothing above TRACE.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldseal::{
    Context, Error, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer, async_trait,
    provider::{KeyProvider, TenantKey, WrapContext, WrappedKey},
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tracing_subscriber::fmt::format::FmtSpan;

const ROOT_1: &[u8; 32] = b"MARKER-ROOT-ONE-0123456789abcdef";
const ROOT_2: &[u8; 32] = b"MARKER-ROOT-TWO-0123456789abcdef";
const PLAINTEXT: &[u8] = b"MARKER-PLAINTEXT-1//0gRefreshToken-sk_live_51Hx9";

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.0.lock().unwrap())).into_owned()
    }
}

/// Records the bytes of every tenant key that crosses the provider boundary,
/// and of every wrapped key it makes.
#[derive(Debug)]
struct KeyCapture {
    inner: LocalKeyProvider,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

#[async_trait]
impl KeyProvider for KeyCapture {
    fn current_root_key_id(&self) -> &str {
        self.inner.current_root_key_id()
    }
    async fn wrap(&self, key: &TenantKey, ctx: &WrapContext<'_>) -> Result<WrappedKey, Error> {
        self.seen.lock().unwrap().push(key.expose_secret().to_vec());
        self.inner.wrap(key, ctx).await
    }
    async fn unwrap(&self, w: &WrappedKey, ctx: &WrapContext<'_>) -> Result<TenantKey, Error> {
        let key = self.inner.unwrap(w, ctx).await?;
        self.seen.lock().unwrap().push(key.expose_secret().to_vec());
        Ok(key)
    }
}

fn ctx(tenant: &str, row: i64) -> Context {
    common::ctx(tenant, row)
}

fn provider(id: &str, root: &[u8; 32], seen: &Arc<Mutex<Vec<Vec<u8>>>>) -> KeyCapture {
    KeyCapture {
        inner: LocalKeyProvider::new(id, RootKey::from_bytes(&mut root.clone())).unwrap(),
        seen: Arc::clone(seen),
    }
}

/// Every operation, good and bad, through a sealer and its admin.
async fn every_operation(seen: &Arc<Mutex<Vec<Vec<u8>>>>) {
    let store = MemoryKeyStore::new();
    let sealer = Sealer::builder(provider("root-1", ROOT_1, seen), store.clone())
        .cache_capacity(1)
        .revalidate_after(Duration::ZERO)
        .min_audit_retention(Duration::ZERO)
        .build();
    let admin = sealer.admin().actor("telemetry-test");
    let sealed = sealer.seal(&ctx("acme", 1), PLAINTEXT).await.unwrap();
    seen.lock().unwrap().push(sealed.as_bytes().to_vec());
    seen.lock().unwrap().push(sealed.to_text().into_bytes());
    sealer.open(&ctx("acme", 1), &sealed).await.unwrap();
    // Failures: another row, a bit flip, an unknown tenant, a bad context.
    assert!(sealer.open(&ctx("acme", 2), &sealed).await.is_err());
    let mut bytes = sealed.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let flipped = fieldseal::SealedValue::from_bytes(bytes).unwrap();
    assert!(sealer.open(&ctx("acme", 1), &flipped).await.is_err());
    assert!(sealer.open(&ctx("nobody", 1), &sealed).await.is_err());
    assert!(Context::builder("acme\u{0}", "t", "c").build().is_err());
    // Another tenant evicts acme (capacity 1); acme reloads.
    sealer.seal(&ctx("globex", 1), PLAINTEXT).await.unwrap();
    sealer.open(&ctx("acme", 1), &sealed).await.unwrap();
    // Lifecycle.
    admin.rotate("acme").await.unwrap();
    let resealed = sealer
        .reseal(&ctx("acme", 1), &sealed)
        .await
        .unwrap()
        .unwrap();
    let handle = sealer.tenant("acme").await.unwrap();
    handle.open(&ctx("acme", 1), &resealed).unwrap();
    handle.seal(&ctx("acme", 3), PLAINTEXT).unwrap();
    handle.reseal(&ctx("acme", 1), &resealed).unwrap();
    admin.disable_version("acme", 1).await.unwrap();
    assert!(sealer.open(&ctx("acme", 1), &sealed).await.is_err());
    admin.enable_version("acme", 1).await.unwrap();
    admin.set_min_decryption_version("acme", 2).await.unwrap();
    admin.set_min_decryption_version("acme", 0).await.unwrap();
    admin.destroy_version("acme", 1).await.unwrap();
    assert!(sealer.open(&ctx("acme", 1), &sealed).await.is_err());
    assert!(admin.destroy_version("acme", 2).await.is_err());
    admin.shred_tenant("globex").await.unwrap();
    admin.recreate_tenant("globex").await.unwrap();
    // The root key moves; a process without it fails to unwrap.
    let moved = LocalKeyProvider::new("root-2", RootKey::from_bytes(&mut ROOT_2.clone()))
        .unwrap()
        .with_previous("root-1", RootKey::from_bytes(&mut ROOT_1.clone()))
        .unwrap();
    let during = Sealer::builder(
        KeyCapture {
            inner: moved,
            seen: Arc::clone(seen),
        },
        store.clone(),
    )
    .min_audit_retention(Duration::ZERO)
    .build();
    during.admin().rewrap_all("root-2").await.unwrap();
    let stranger = Sealer::builder(provider("root-1", ROOT_1, seen), store.clone()).build();
    assert!(stranger.open(&ctx("acme", 1), &resealed).await.is_err());
    assert!(during.admin().verify_audit().await.unwrap().is_intact());
    during.admin().prune_audit(Duration::ZERO).await.unwrap();

    // Opted in: a tenant label on this sealer's metrics.
    let labelled = Sealer::builder(provider("root-2", ROOT_2, seen), store)
        .metrics_tenant_label(true)
        .build();
    labelled
        .seal(&ctx("labelled-tenant", 1), PLAINTEXT)
        .await
        .unwrap();
}

/// A recorded metric: its name, its labels and its value.
type Recorded = (String, Vec<(String, String)>, DebugValue);

fn metric(snapshot: &[Recorded], name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, value)| match value {
            DebugValue::Counter(n) => *n,
            DebugValue::Histogram(samples) => samples.len() as u64,
            DebugValue::Gauge(_) => 1,
        })
        .sum()
}

fn snapshot(snapshotter: &Snapshotter) -> Vec<Recorded> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            (key.name().to_string(), labels, value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_or_metrics_and_the_metrics_add_up() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
        .without_time()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let seen = Arc::new(Mutex::new(Vec::new()));
    every_operation(&seen).await;

    let logs = captured.take();
    let snap = snapshot(&snapshotter);
    let metrics_text = format!("{snap:?}");
    let mut secrets: Vec<Vec<u8>> = vec![ROOT_1.to_vec(), ROOT_2.to_vec(), PLAINTEXT.to_vec()];
    secrets.extend(seen.lock().unwrap().iter().cloned());
    assert!(secrets.len() > 5, "tenant keys were captured");
    for secret in &secrets {
        for form in common::secret_forms(secret) {
            assert!(!logs.contains(&form), "a secret ({form}) is in the logs");
            assert!(
                !metrics_text.contains(&form),
                "a secret ({form}) is in the metrics"
            );
        }
    }

    // Spans around provider, store and admin calls, with tenant and version.
    for span in ["fieldseal.provider", "fieldseal.store", "fieldseal.admin"] {
        assert!(logs.contains(span), "no {span} span in:\n{logs}");
    }
    assert!(
        logs.contains("op=\"unwrap\"") || logs.contains("op=unwrap"),
        "{logs}"
    );
    assert!(
        logs.contains("tenant=\"acme\"") || logs.contains("tenant=acme"),
        "{logs}"
    );

    // The metrics add up.
    let m = |name: &str, labels: &[(&str, &str)]| metric(&snap, name, labels);
    assert!(m("fieldseal_seals_total", &[]) >= 4);
    assert!(m("fieldseal_opens_total", &[]) >= 3);
    assert_eq!(
        m("fieldseal_open_failures_total", &[("kind", "open_failed")]),
        2
    );
    assert!(
        m(
            "fieldseal_open_failures_total",
            &[("kind", "unknown_tenant")]
        ) >= 1
    );
    assert!(
        m(
            "fieldseal_open_failures_total",
            &[("kind", "key_destroyed")]
        ) >= 1
    );
    assert!(m("fieldseal_reseals_total", &[("result", "resealed")]) >= 1);
    assert!(m("fieldseal_cache_hits_total", &[]) >= 1);
    assert!(m("fieldseal_cache_misses_total", &[]) >= 2);
    assert!(m("fieldseal_cache_evictions_total", &[("reason", "capacity")]) >= 1);
    assert!(m("fieldseal_cache_revalidations_total", &[]) >= 1);
    assert!(
        m(
            "fieldseal_provider_calls_total",
            &[("op", "wrap"), ("outcome", "ok")]
        ) >= 2
    );
    assert!(
        m(
            "fieldseal_provider_calls_total",
            &[("op", "unwrap"), ("outcome", "ok")]
        ) >= 1
    );
    assert!(
        m(
            "fieldseal_provider_calls_total",
            &[("op", "unwrap"), ("outcome", "root_key_not_configured")]
        ) >= 1
    );
    assert!(
        m(
            "fieldseal_provider_call_duration_seconds",
            &[("op", "unwrap")]
        ) >= 1
    );
    assert!(m("fieldseal_store_calls_total", &[("op", "load_tenant")]) >= 1);
    assert!(
        m(
            "fieldseal_store_call_duration_seconds",
            &[("op", "insert_key_version")]
        ) >= 1
    );
    for op in [
        "rotate",
        "disable_version",
        "enable_version",
        "destroy_version",
        "set_min_decryption_version",
        "shred_tenant",
        "recreate_tenant",
        "rewrap_all",
        "verify_audit",
        "prune_audit",
    ] {
        assert!(
            m(
                "fieldseal_admin_operations_total",
                &[("op", op), ("outcome", "ok")]
            ) >= 1,
            "{op}"
        );
    }
    assert_eq!(
        m(
            "fieldseal_admin_operations_total",
            &[("op", "destroy_version"), ("outcome", "refused")]
        ),
        1
    );
    // Labels are the documented ones only, and every metric is a documented one.
    let documented = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/OBSERVABILITY.md"
    ))
    .unwrap();
    for (name, labels, _) in &snap {
        assert!(
            documented.contains(&format!("`{name}`")),
            "{name} is not documented"
        );
        for (key, _) in labels {
            assert!(
                ["kind", "outcome", "op", "result", "reason", "tenant"].contains(&key.as_str()),
                "{name} has an undocumented label {key}"
            );
        }
    }
    // Tenant ids appear only where the application opted in.
    let tenants: Vec<&str> = snap
        .iter()
        .flat_map(|(_, labels, _)| labels.iter())
        .filter(|(k, _)| k == "tenant")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(!tenants.is_empty());
    assert!(
        tenants.iter().all(|t| *t == "labelled-tenant"),
        "{tenants:?}"
    );

    // The hot path: warm seals and opens log nothing above TRACE.
    let warm = Sealer::builder(provider("root-1", ROOT_1, &seen), MemoryKeyStore::new()).build();
    let value = warm.seal(&ctx("acme", 1), b"x").await.unwrap();
    let handle = warm.tenant("acme").await.unwrap();
    captured.take();
    for row in 0..100 {
        let c = ctx("acme", row);
        let v = warm.seal(&c, b"x").await.unwrap();
        warm.open(&c, &v).await.unwrap();
        handle.open(&c, &handle.seal(&c, b"y").unwrap()).unwrap();
    }
    warm.open(&ctx("acme", 1), &value).await.unwrap();
    let hot = captured.take();
    for line in hot.lines() {
        assert!(
            line.trim_start().starts_with("TRACE"),
            "above TRACE on the hot path: {line}"
        );
    }
}
