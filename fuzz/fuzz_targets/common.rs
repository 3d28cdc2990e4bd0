//! Shared set-up for the fuzz targets: a provider that "wraps" by copying (so
//! fuzzed key store records can name any key), and a key store that serves
//! whatever record and audit log a target gives it.
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

use fieldseal::{
    Context, Error, Sealer, Timestamp, async_trait,
    audit::{AUDIT_MAC_LEN, AuditAppend, AuditEntry},
    provider::{KeyProvider, TenantKey, WrapContext, WrappedKey},
    store::{InsertOutcome, KeyRecord, KeyState, KeyStore, NewKeyVersion, StoredKey, TenantRecord},
};

pub const TENANT: &str = "fuzz";
pub const TENANT_KEY: [u8; 32] = [0x42; 32];

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Wrapping is the identity: the "wrapped" bytes are the key.
#[derive(Debug)]
pub struct CopyProvider;

#[async_trait]
impl KeyProvider for CopyProvider {
    fn current_root_key_id(&self) -> &str {
        "copy"
    }
    async fn wrap(&self, key: &TenantKey, _: &WrapContext<'_>) -> Result<WrappedKey, Error> {
        Ok(WrappedKey::new("copy", key.expose_secret().to_vec()))
    }
    async fn unwrap(&self, wrapped: &WrappedKey, _: &WrapContext<'_>) -> Result<TenantKey, Error> {
        if wrapped.root_key_id() != "copy" {
            return Err(Error::RootKeyNotConfigured {
                id: wrapped.root_key_id().to_string(),
            });
        }
        TenantKey::from_slice(wrapped.as_bytes())
    }
}

/// Serves one fixed tenant record and audit log; refuses every change.
#[derive(Debug, Default)]
pub struct FixedStore {
    pub record: Option<TenantRecord>,
    pub audit: Mutex<Vec<AuditEntry>>,
}

fn refused() -> Error {
    Error::Refused {
        reason: "the fuzz store is read-only".into(),
    }
}

#[async_trait]
impl KeyStore for FixedStore {
    async fn load_tenant(&self, tenant: &str) -> Result<Option<TenantRecord>, Error> {
        Ok(self.record.clone().filter(|r| r.tenant == tenant))
    }
    async fn tenant_generation(&self, tenant: &str) -> Result<Option<u64>, Error> {
        Ok(self
            .record
            .as_ref()
            .filter(|r| r.tenant == tenant)
            .map(|r| r.generation))
    }
    async fn insert_key_version(
        &self,
        _: &str,
        _: NewKeyVersion,
        _: &AuditAppend<'_>,
    ) -> Result<InsertOutcome, Error> {
        Err(refused())
    }
    async fn update_key_state(
        &self,
        _: &str,
        _: u32,
        _: KeyState,
        _: KeyState,
        _: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        Err(refused())
    }
    async fn set_min_decryption_version(
        &self,
        _: &str,
        _: u32,
        _: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        Err(refused())
    }
    async fn shred_tenant(&self, _: &str, _: &AuditAppend<'_>) -> Result<bool, Error> {
        Err(refused())
    }
    async fn recreate_tenant(
        &self,
        _: &str,
        _: NewKeyVersion,
        _: &AuditAppend<'_>,
    ) -> Result<InsertOutcome, Error> {
        Err(refused())
    }
    async fn list_wrapped_keys(
        &self,
        _: Option<(&str, u32)>,
        _: usize,
    ) -> Result<Vec<StoredKey>, Error> {
        Ok(Vec::new())
    }
    async fn rewrap_key(
        &self,
        _: &str,
        _: u32,
        _: &WrappedKey,
        _: WrappedKey,
        _: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        Err(refused())
    }
    async fn load_audit_key(&self) -> Result<Option<WrappedKey>, Error> {
        Ok(Some(WrappedKey::new("copy", vec![7; 32])))
    }
    async fn insert_audit_key(&self, _: WrappedKey) -> Result<bool, Error> {
        Err(refused())
    }
    async fn rewrap_audit_key(
        &self,
        _: &WrappedKey,
        _: WrappedKey,
        _: &AuditAppend<'_>,
    ) -> Result<bool, Error> {
        Err(refused())
    }
    async fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let log = self.audit.lock().map_err(|_| refused())?;
        let start = log.iter().position(|e| e.seq > after).unwrap_or(log.len());
        Ok(log.iter().skip(start).take(limit).cloned().collect())
    }
    async fn prune_audit(
        &self,
        _: u64,
        _: &[u8; AUDIT_MAC_LEN],
        _: &AuditAppend<'_>,
    ) -> Result<u64, Error> {
        Err(refused())
    }
}

/// The record of tenant `fuzz` with one active version 1 under `TENANT_KEY`.
pub fn fixed_record() -> TenantRecord {
    let mut record = TenantRecord::new(TENANT, 1);
    record.keys = vec![KeyRecord::new(
        1,
        KeyState::Active,
        Timestamp::from_unix_seconds(0),
        Some(WrappedKey::new("copy", TENANT_KEY.to_vec())),
    )];
    record
}

/// A sealer over `store` with the copying provider.
pub fn sealer(store: FixedStore, algorithm: fieldseal::Algorithm) -> Sealer {
    Sealer::builder(CopyProvider, store)
        .algorithm(algorithm)
        .build()
}

/// A cached handle for tenant `fuzz` (key version 1 = `TENANT_KEY`).
pub fn tenant(algorithm: fieldseal::Algorithm) -> fieldseal::TenantSealer {
    let store = FixedStore {
        record: Some(fixed_record()),
        ..FixedStore::default()
    };
    runtime()
        .block_on(sealer(store, algorithm).tenant(TENANT))
        .expect("tenant")
}

/// The context every fuzzed value is opened under.
pub fn fixed_context() -> Context {
    Context::builder(TENANT, "integrations", "refresh_token")
        .row(1)
        .build()
        .expect("context")
}
