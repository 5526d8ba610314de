//! Fuzz target: reading a CRL back (DER or PEM, issuer, ECDSA signature, CRL number, entries)
//! must answer any bytes with an error, never panic. The CA is fixed: the seed CRLs in
//! fuzz/corpus/crl_read are signed by it, so the issuer and signature checks run on real data.
#![no_main]

const CA: &str = include_str!("../seeds/crl-ca.pem");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = keyfleet::ca::crl_read::read_crl(data, CA);
});
