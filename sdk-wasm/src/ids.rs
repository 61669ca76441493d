//! Random identifiers: decides the form of anonymous ids, session ids and messageIds
//! (UUID v4).
//!
//! Hand-written rather than the `uuid` and `rand` crates: ids only need to be unique, so
//! a xoshiro128++ generator seeded once from the browser's CSPRNG (`crypto.getRandomValues`,
//! 16 bytes) is enough, and it is a dozen lines against the crates' getrandom glue.

use alloc::string::String;

pub struct Rng([u32; 4]);

impl Rng {
    pub fn new(seed: &[u8]) -> Rng {
        let mut s = [0x9e37_79b9u32, 0x7f4a_7c15, 0xf39c_c060, 0x5ced_c834];
        for (i, b) in seed.iter().enumerate() {
            s[(i / 4) % 4] ^= u32::from(*b) << ((i % 4) * 8);
        }
        let mut r = Rng(s);
        for _ in 0..8 {
            r.next();
        }
        r
    }

    pub fn next(&mut self) -> u32 {
        let s = &mut self.0;
        let out = s[0].wrapping_add(s[3]).rotate_left(7).wrapping_add(s[0]);
        let t = s[1] << 9;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(11);
        out
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        f64::from(self.next()) / 4_294_967_296.0
    }

    pub fn uuid_v4(&mut self) -> String {
        let mut b = [0u8; 16];
        for chunk in b.chunks_mut(4) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        format_uuid_v4(b)
    }
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
    use super::*;

    #[test]
    fn sets_version_and_variant() {
        assert_eq!(
            format_uuid_v4([0xff; 16]),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        assert_eq!(
            format_uuid_v4([0; 16]),
            "00000000-0000-4000-8000-000000000000"
        );
    }

    #[test]
    fn seeds_give_distinct_streams() {
        let mut a = Rng::new(&[1; 16]);
        let mut b = Rng::new(&[2; 16]);
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| a.uuid_v4()).collect();
        assert_eq!(ids.len(), 1000);
        assert_ne!(a.uuid_v4(), b.uuid_v4());
        assert!((0.0..1.0).contains(&a.unit()));
    }
}
