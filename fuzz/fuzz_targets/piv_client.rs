//! Fuzz target: the PIV client's parsing of card answers (the client side of TLV) must never
//! panic. The input is a script of card answers (each a 1-byte length and that many bytes),
//! replayed to every client operation that parses what a card says: identity (CHUID, serial),
//! certificates, mutual authentication, key generation, signatures, PIN status.
#![no_main]

use keyfleet::card::keys::{KeyAlg, ManagementKey};
use keyfleet::card::piv::PivClient;
use keyfleet::card::transport::{Transport, TransportError};

/// A "card" that answers with the next scripted response (9000 when the script ends).
struct Scripted<'a>(&'a [u8]);

impl Transport for Scripted<'_> {
    fn transmit(&mut self, _apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let Some((&n, rest)) = self.0.split_first() else {
            return Ok(vec![0x90, 0x00]);
        };
        let n = usize::from(n).min(rest.len());
        let (answer, rest) = rest.split_at(n);
        self.0 = rest;
        Ok(answer.to_vec())
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut c = PivClient::new(Scripted(data));
    let _ = keyfleet::card::pcsc::identify_with(&mut c, "fuzz", &[], true);
    let _ = c.read_certificate(0x9A);
    let _ = c.authenticate(&ManagementKey::factory_default());
    let _ = c.generate_key(0x9A, KeyAlg::EccP256);
    let _ = c.generate_key(0x9C, KeyAlg::Rsa2048);
    let _ = c.sign_digest(0x9C, KeyAlg::EccP256, &[0u8; 32]);
    let _ = c.pin_retries();
    let _ = c.version();
});
