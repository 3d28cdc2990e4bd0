//! How a leaked secret would look in text output, for the tests that search
//! logs, errors and responses for one.
#![allow(dead_code, unreachable_pub)]

/// The forms in which a leaked secret would show up in text output: raw
/// (and its first 16 characters, to catch a truncation), hex, base64 and
/// base64url, and Rust's byte-slice and `Vec` debug forms.
pub fn secret_forms(secret: &[u8]) -> Vec<String> {
    use base64::Engine as _;

    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut out = vec![
        hex::encode(secret),
        hex::encode_upper(secret),
        format!("{secret:?}"),
        format!("{:?}", secret.to_vec()),
    ];
    out.extend(engines.iter().map(|e| e.encode(secret)));
    if let Ok(text) = std::str::from_utf8(secret) {
        out.push(text.to_string());
        // Long enough to be unambiguous, short enough to catch a truncation.
        out.push(text[..16.min(text.len())].to_string());
    }
    out
}
