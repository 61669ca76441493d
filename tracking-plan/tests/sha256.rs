//! The hand-written SHA-256 against the FIPS 180-2 examples and, on random inputs of every
//! padding length, against the `sha2` crate.
#![cfg(not(target_arch = "wasm32"))]

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use tracking_plan::sha256::sha256;

fn hex(d: [u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn fips_180_2_examples() {
    assert_eq!(
        hex(sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hex(sha256(
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
        )),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    assert_eq!(
        hex(sha256(&vec![b'a'; 1_000_000])),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
    assert_eq!(
        hex(sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn every_padding_length_matches_sha2() {
    for len in 0..=300 {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        assert_eq!(
            sha256(&data),
            <[u8; 32]>::from(Sha256::digest(&data)),
            "length {len}"
        );
    }
}

proptest! {
    #[test]
    fn random_inputs_match_sha2(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert_eq!(sha256(&data), <[u8; 32]>::from(Sha256::digest(&data)));
    }
}
