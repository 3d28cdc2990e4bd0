//! Parsing the text form never panics, and whatever parses serializes back to
//! exactly the same text (the encoding is canonical).
#![no_main]

use fieldseal::SealedValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(value) = SealedValue::from_text(text) {
        assert_eq!(value.to_text(), text);
        assert_eq!(
            SealedValue::from_bytes(value.as_bytes()).expect("bytes parse"),
            value
        );
    }
});
