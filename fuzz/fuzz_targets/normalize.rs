//! The blind index normalisers on arbitrary bytes: never a panic; `exact` is
//! the identity; `trim` returns a slice of its input; `email` returns
//! `local@domain` with an ASCII domain of non-empty labels; and any output of
//! `trim`, `casefold` or `email` is UTF-8.
#![no_main]

use fieldseal::blind_index::Normalizer;
use fieldseal::secrecy::ExposeSecret as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let exact = Normalizer::exact()
        .normalize(input)
        .expect("exact refuses nothing");
    assert_eq!(exact.expose_secret(), input);

    if let Ok(out) = Normalizer::trim().normalize(input) {
        let out = out.expose_secret();
        assert!(input.windows(out.len().max(1)).any(|w| w == out) || out.is_empty());
        assert!(std::str::from_utf8(out).is_ok());
    }
    if let Ok(out) = Normalizer::case_fold().normalize(input) {
        assert!(std::str::from_utf8(out.expose_secret()).is_ok());
    }
    if let Ok(out) = Normalizer::email().normalize(input) {
        let text = std::str::from_utf8(out.expose_secret()).expect("UTF-8");
        let (local, domain) = text.rsplit_once('@').expect("an @");
        assert!(!local.is_empty());
        assert!(domain.is_ascii());
        assert!(domain.split('.').all(|label| !label.is_empty()));
    }
});
