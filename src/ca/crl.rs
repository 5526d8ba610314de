//! CRL signing for the local CA: turns the list of revoked and held certificates into an
//! RFC 5280 v2 CRL (AKI, CRL number, thisUpdate/nextUpdate, one reason code per entry).
//!
//! This module does NOT choose which certificates are listed, keep the CRL number, or publish
//! the CRL: [`super::local::LocalCa`] does the first two, callers the last.

use time::OffsetDateTime;

use super::{CaError, RevocationReason};

/// One entry of a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Serial number bytes (big-endian, positive).
    pub serial: Vec<u8>,
    /// When it was revoked or put on hold.
    pub at: OffsetDateTime,
    /// Why (`CertificateHold` for held certificates).
    pub reason: RevocationReason,
}

fn rcgen_reason(r: RevocationReason) -> rcgen::RevocationReason {
    match r {
        RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
        RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
        RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
        RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
        RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold => rcgen::RevocationReason::CertificateHold,
    }
}

/// The minimal big-endian bytes of `n` (at least one byte).
fn be_bytes(n: u64) -> Vec<u8> {
    let b = n.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count().min(7);
    b.get(skip..).map(<[u8]>::to_vec).unwrap_or_default()
}

/// Signs a CRL with `issuer`. Returns DER.
pub fn sign_crl(
    issuer: &rcgen::Issuer<'_, impl rcgen::SigningKey>,
    revoked: &[RevokedEntry],
    crl_number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<Vec<u8>, CaError> {
    let params = rcgen::CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: rcgen::SerialNumber::from_slice(&be_bytes(crl_number)),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|e| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&e.serial),
                revocation_time: e.at,
                reason_code: Some(rcgen_reason(e.reason)),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(issuer)
        .map_err(|e| CaError::Signing(e.to_string()))?;
    Ok(crl.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crl_numbers_are_minimal_big_endian() {
        assert_eq!(be_bytes(0), vec![0]);
        assert_eq!(be_bytes(1), vec![1]);
        assert_eq!(be_bytes(0x1234), vec![0x12, 0x34]);
        assert_eq!(be_bytes(u64::MAX), vec![0xff; 8]);
    }

    #[test]
    fn refuses_next_update_not_after_this_update() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.key_usages = vec![rcgen::KeyUsagePurpose::CrlSign];
        let issuer = rcgen::Issuer::new(params, &key);
        let t = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        assert!(matches!(
            sign_crl(&issuer, &[], 1, t, t),
            Err(CaError::Signing(_))
        ));
        assert!(sign_crl(&issuer, &[], 1, t, t + time::Duration::hours(1)).is_ok());
    }
}
