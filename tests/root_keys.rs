//! Root keys for the local provider: files, base64, rotation of the root.

mod common;

use common::ctx;
use fieldseal::{Error, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer};

#[tokio::test]
async fn a_key_file_is_private_never_overwritten_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.key");
    let created = RootKey::create_file(&path).unwrap();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key file is readable by its owner only");
    }
    let before = std::fs::read(&path).unwrap();
    let err = RootKey::create_file(&path).unwrap_err();
    assert!(matches!(err, Error::RootKeyFileExists { .. }), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the existing file is untouched"
    );

    // What one provider sealed, a provider loaded from the file opens.
    let store = MemoryKeyStore::new();
    let a = Sealer::builder(LocalKeyProvider::new("k", created).unwrap(), store.clone()).build();
    let sealed = a.seal(&ctx("acme", 1), b"x").await.unwrap();
    let loaded = RootKey::from_file(&path).unwrap();
    let b = Sealer::builder(LocalKeyProvider::new("k", loaded).unwrap(), store.clone()).build();
    assert!(b.open(&ctx("acme", 1), &sealed).await.is_ok());

    // The file's text is the same base64 an environment variable would hold.
    let text = std::fs::read_to_string(&path).unwrap();
    let from_text = RootKey::from_base64(&text).unwrap();
    let c = Sealer::builder(LocalKeyProvider::new("k", from_text).unwrap(), store).build();
    assert!(c.open(&ctx("acme", 1), &sealed).await.is_ok());
}

#[test]
fn bad_key_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = RootKey::from_file(dir.path().join("nope.key")).unwrap_err();
    assert!(
        missing.to_string().contains("cannot read the file"),
        "{missing}"
    );
    let private = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        set_mode(&path, 0o600);
        path
    };
    let err = RootKey::from_file(private("short.key", b"AAAA\n")).unwrap_err();
    assert!(err.to_string().contains("exactly 32 bytes"), "{err}");
    let err = RootKey::from_file(private("binary.key", &[0xff, 0xfe, 0x00])).unwrap_err();
    assert!(err.to_string().contains("not text"), "{err}");
    // Longer than a key file can be: refused without reading it all.
    let err = RootKey::from_file(private("big.key", &vec![b'A'; 1 << 20])).unwrap_err();
    assert!(err.to_string().contains("longer than 256 bytes"), "{err}");
    let err = RootKey::from_file(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("not a regular file") || err.to_string().contains("cannot read"),
        "{err}"
    );
    // A good key file that its group or others may read or write.
    let good = dir.path().join("good.key");
    RootKey::create_file(&good).unwrap();
    assert!(RootKey::from_file(&good).is_ok());
    set_mode(&good, 0o400);
    assert!(RootKey::from_file(&good).is_ok());
    for mode in [0o644, 0o666, 0o640, 0o604, 0o620] {
        set_mode(&good, mode);
        let err = RootKey::from_file(&good).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("mode is {mode:04o}")), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
    }
    let err = RootKey::from_env("FIELDSEAL_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
    assert!(err.to_string().contains("not set"), "{err}");
}

#[tokio::test]
async fn previous_root_keys_unwrap_but_never_wrap() {
    let store = MemoryKeyStore::new();
    let old = || RootKey::from_bytes(&mut [1; 32]);
    let new = || RootKey::from_bytes(&mut [2; 32]);
    let before = Sealer::builder(
        LocalKeyProvider::new("root-1", old()).unwrap(),
        store.clone(),
    )
    .build();
    let sealed = before.seal(&ctx("acme", 1), b"x").await.unwrap();

    let both = LocalKeyProvider::new("root-2", new())
        .unwrap()
        .with_previous("root-1", old())
        .unwrap();
    let after = Sealer::builder(both, store.clone()).build();
    assert!(after.open(&ctx("acme", 1), &sealed).await.is_ok());
    // A new tenant's key is wrapped under the current root only.
    after.seal(&ctx("globex", 1), b"y").await.unwrap();
    let admin = after.admin();
    let globex = admin.describe("globex").await.unwrap();
    assert_eq!(
        globex.keys[0].wrapped.as_ref().unwrap().root_key_id(),
        "root-2"
    );
    let acme = admin.describe("acme").await.unwrap();
    assert_eq!(
        acme.keys[0].wrapped.as_ref().unwrap().root_key_id(),
        "root-1"
    );
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
