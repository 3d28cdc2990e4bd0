//! Parsing the binary form never panics, and whatever parses serializes back
//! to the same bytes (and through the text form to the same value).
#![no_main]

use fieldseal::SealedValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = SealedValue::from_bytes(data) {
        assert_eq!(value.as_bytes(), data);
        let text = value.to_text();
        let again = SealedValue::from_text(&text).expect("a value's own text form parses");
        assert_eq!(again, value);
        assert_eq!(value.plaintext_len() + fieldseal::OVERHEAD, data.len());
    }
});
