//! Where the secrets go: sealed with fieldseal, or (only for the load test's
//! baseline) stored as they are.

use fieldseal::secrecy::{ExposeSecret, SecretSlice};
use fieldseal::{Context, Error, SealedValue, Sealer, TenantSealer};

use crate::db::SealedColumns;

/// The table whose columns are sealed.
const TABLE: &str = "integrations";

/// The service's secrets: sealed, or the plaintext baseline.
#[derive(Clone, Debug)]
pub(crate) enum Vault {
    Sealed(Sealer),
    /// The load test's baseline: the same service with plaintext columns.
    Plaintext,
}

/// One tenant's view of the vault, fetched before a transaction starts (so
/// that sealing inside it never waits on the key store).
#[derive(Debug)]
pub(crate) enum TenantVault {
    Sealed(TenantSealer),
    Plaintext,
}

/// The secrets of one integration, opened. Dropping it zeroizes them.
#[derive(Debug)]
pub(crate) struct OpenedIntegration {
    pub(crate) refresh_token: SecretSlice<u8>,
    pub(crate) api_secret: SecretSlice<u8>,
    /// Re-sealed columns, when some value was sealed under a key version that
    /// is no longer the tenant's primary (after a rotation): the caller
    /// writes them back, so rows move to the new key as they are used.
    pub(crate) resealed: Option<SealedColumns>,
}

/// Where a value lives: tenant, table, column, the row's id, and the provider
/// the row is for. The provider is in the context because the service picks
/// the row by it: a row whose provider column was swapped with another row's
/// (by someone with write access to the table) then fails to open, instead
/// of handing one provider's credentials to another.
fn context(tenant: &str, provider: &str, column: &str, id: i64) -> Result<Context, Error> {
    Context::builder(tenant, TABLE, column)
        .row(id)
        .extra("provider", provider)
        .build()
}

impl Vault {
    /// The tenant's sealer, with its keys loaded (from the cache after the
    /// first request).
    ///
    /// # Errors
    ///
    /// `Error::TenantShredded` once the tenant is erased;
    /// `Error::UnknownTenant` for a tenant the admin never created.
    pub(crate) async fn tenant(&self, tenant: &str) -> Result<TenantVault, Error> {
        match self {
            Self::Sealed(sealer) => Ok(TenantVault::Sealed(sealer.tenant(tenant).await?)),
            Self::Plaintext => Ok(TenantVault::Plaintext),
        }
    }

    /// Opens the secrets of one row, re-sealing them if they are under an old
    /// key version.
    ///
    /// # Errors
    ///
    /// `Error::OpenFailed` if a value was altered or copied from another row,
    /// column or tenant; the key state errors (`TenantShredded`,
    /// `KeyDestroyed`, …) otherwise.
    pub(crate) async fn open(
        &self,
        tenant: &str,
        provider: &str,
        id: i64,
        refresh_token: &[u8],
        api_secret: &[u8],
        secret_hint: &[u8],
    ) -> Result<OpenedIntegration, Error> {
        let Self::Sealed(sealer) = self else {
            return Ok(OpenedIntegration {
                refresh_token: refresh_token.to_vec().into(),
                api_secret: api_secret.to_vec().into(),
                resealed: None,
            });
        };
        let token_ctx = context(tenant, provider, "refresh_token", id)?;
        let secret_ctx = context(tenant, provider, "api_secret", id)?;
        let hint_ctx = context(tenant, provider, "secret_hint", id)?;
        let token = SealedValue::from_bytes(refresh_token)?;
        let secret = SealedValue::from_bytes(api_secret)?;
        // `Sealer::open` reloads the tenant's keys if the value names a
        // version this process has not seen yet (another replica rotated).
        let opened_token = sealer.open(&token_ctx, &token).await?;
        let opened_secret = sealer.open(&secret_ctx, &secret).await?;
        let resealed = if opened_token.is_stale() || opened_secret.is_stale() {
            let keys = sealer.tenant(tenant).await?;
            let hint = SealedValue::from_bytes(secret_hint)?;
            let hint = keys.open(&hint_ctx, &hint)?;
            Some(SealedColumns {
                refresh_token: keys
                    .seal(&token_ctx, opened_token.plaintext().expose_secret())?
                    .into_bytes(),
                api_secret: keys
                    .seal(&secret_ctx, opened_secret.plaintext().expose_secret())?
                    .into_bytes(),
                secret_hint: keys
                    .seal(&hint_ctx, hint.plaintext().expose_secret())?
                    .into_bytes(),
            })
        } else {
            None
        };
        Ok(OpenedIntegration {
            refresh_token: opened_token.into_plaintext(),
            api_secret: opened_secret.into_plaintext(),
            resealed,
        })
    }
}

impl Vault {
    /// Opens the hint of row `id` (the last four characters of its API
    /// secret, shown in listings). Sealed too, so that it is erased with the
    /// tenant.
    ///
    /// # Errors
    ///
    /// As [`Vault::open`].
    pub(crate) async fn open_hint(
        &self,
        tenant: &str,
        provider: &str,
        id: i64,
        secret_hint: &[u8],
    ) -> Result<String, Error> {
        let Self::Sealed(sealer) = self else {
            return Ok(String::from_utf8_lossy(secret_hint).into_owned());
        };
        let sealed = SealedValue::from_bytes(secret_hint)?;
        let opened = sealer
            .open(&context(tenant, provider, "secret_hint", id)?, &sealed)
            .await?;
        Ok(opened.into_secret_string()?.expose_secret().to_owned())
    }
}

impl TenantVault {
    /// Seals the three columns of row `id`.
    ///
    /// # Errors
    ///
    /// `Error::PlaintextTooLarge`; context errors.
    pub(crate) fn seal(
        &self,
        tenant: &str,
        provider: &str,
        id: i64,
        refresh_token: &[u8],
        api_secret: &[u8],
        secret_hint: &[u8],
    ) -> Result<SealedColumns, Error> {
        let Self::Sealed(keys) = self else {
            return Ok(SealedColumns {
                refresh_token: refresh_token.to_vec(),
                api_secret: api_secret.to_vec(),
                secret_hint: secret_hint.to_vec(),
            });
        };
        let seal = |column, plaintext| -> Result<Vec<u8>, Error> {
            Ok(keys
                .seal(&context(tenant, provider, column, id)?, plaintext)?
                .into_bytes())
        };
        Ok(SealedColumns {
            refresh_token: seal("refresh_token", refresh_token)?,
            api_secret: seal("api_secret", api_secret)?,
            secret_hint: seal("secret_hint", secret_hint)?,
        })
    }
}
