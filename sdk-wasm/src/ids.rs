//! Random identifiers: decides the form of anonymous ids and messageIds (UUID v4).
//!
//! Hand-written rather than the `uuid` crate: formatting 16 random bytes is a few lines,
//! and the crate with its `js` feature adds getrandom glue to the SDK's wasm.

/// A random (version 4, RFC 9562) UUID from the browser's CSPRNG.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    crate::browser::random_bytes(&mut b);
    format_uuid_v4(b)
}

pub fn format_uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[usize::from(byte >> 4)] as char);
        s.push(HEX[usize::from(byte & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn sets_version_and_variant() {
        assert_eq!(
            super::format_uuid_v4([0xff; 16]),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        assert_eq!(
            super::format_uuid_v4([0; 16]),
            "00000000-0000-4000-8000-000000000000"
        );
    }
}
