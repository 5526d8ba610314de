//! Windows security identifiers (SIDs) as Active Directory sends them in `objectSid`: parsed
//! from the binary form without trusting its length fields, and printed as `S-1-5-21-…`.
//!
//! Used to find a user's primary group (the user's domain SID with the `primaryGroupID` RID
//! as last sub-authority). This module only parses and compares SIDs; it does not read
//! directories or decide memberships.

use std::fmt;

/// Most sub-authorities a SID may carry (MS-DTYP 2.4.2).
const MAX_SUB_AUTHORITIES: usize = 15;

/// A parsed SID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid {
    /// The revision (always 1 in practice).
    pub revision: u8,
    /// The 48-bit identifier authority (5 = NT authority).
    pub authority: u64,
    /// The sub-authorities; the last one of an account or group is its RID.
    pub sub_authorities: Vec<u32>,
}

impl Sid {
    /// Parses the binary form: revision, sub-authority count, 6-byte big-endian authority,
    /// then that many little-endian 32-bit sub-authorities, and nothing after them. `None`
    /// for anything else (short, long, odd lengths, a count over 15, revision other than 1).
    pub fn from_bytes(b: &[u8]) -> Option<Sid> {
        let (&revision, rest) = b.split_first()?;
        let (&count, rest) = rest.split_first()?;
        let count = usize::from(count);
        if revision != 1 || count > MAX_SUB_AUTHORITIES {
            return None;
        }
        let (auth, rest) = rest.split_at_checked(6)?;
        if rest.len() != count * 4 {
            return None;
        }
        let authority = auth.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
        let sub_authorities = rest
            .chunks_exact(4)
            .map(|c| c.try_into().ok().map(u32::from_le_bytes))
            .collect::<Option<Vec<u32>>>()?;
        Some(Sid {
            revision,
            authority,
            sub_authorities,
        })
    }

    /// The binary form (the inverse of [`Sid::from_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + 4 * self.sub_authorities.len());
        b.push(self.revision);
        b.push(u8::try_from(self.sub_authorities.len()).unwrap_or(u8::MAX));
        b.extend_from_slice(&self.authority.to_be_bytes()[2..]);
        for s in &self.sub_authorities {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }

    /// An LDAP filter assertion value matching this SID's binary `objectSid` (every byte
    /// escaped as `\xx`, RFC 4515).
    pub fn filter_value(&self) -> String {
        self.to_bytes()
            .iter()
            .map(|b| format!("\\{b:02x}"))
            .collect()
    }

    /// The relative identifier: the last sub-authority.
    pub fn rid(&self) -> Option<u32> {
        self.sub_authorities.last().copied()
    }

    /// The SID with its last sub-authority replaced by `rid` (a user's SID gives the SID of
    /// their primary group this way). `None` when there is no sub-authority to replace.
    pub fn with_rid(&self, rid: u32) -> Option<Sid> {
        let mut sid = self.clone();
        *sid.sub_authorities.last_mut()? = rid;
        Some(sid)
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S-{}-{}", self.revision, self.authority)?;
        for s in &self.sub_authorities {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// S-1-5-21-1004336348-1177238915-682003330-513 (Domain Users of some domain).
    fn domain_users() -> Vec<u8> {
        let mut b = vec![1, 5, 0, 0, 0, 0, 0, 5];
        for s in [21u32, 1004336348, 1177238915, 682003330, 513] {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_and_prints() {
        let sid = Sid::from_bytes(&domain_users()).expect("valid SID");
        assert_eq!(
            sid.to_string(),
            "S-1-5-21-1004336348-1177238915-682003330-513"
        );
        assert_eq!(sid.rid(), Some(513));
        assert_eq!(sid.to_bytes(), domain_users());
        assert!(sid.filter_value().starts_with("\\01\\05\\00\\00"));
        assert_eq!(sid.filter_value().len(), 3 * domain_users().len());
        assert_eq!(
            sid.with_rid(1105).expect("has RID").to_string(),
            "S-1-5-21-1004336348-1177238915-682003330-1105"
        );
        // Well-known SIDs with few sub-authorities: Everyone (S-1-1-0), BUILTIN (S-1-5-32).
        let everyone = Sid::from_bytes(&[1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]).expect("S-1-1-0");
        assert_eq!(everyone.to_string(), "S-1-1-0");
        let null_authority = Sid::from_bytes(&[1, 0, 0, 0, 0, 0, 0, 5]).expect("no subs");
        assert_eq!(null_authority.rid(), None);
        assert_eq!(null_authority.with_rid(7), None);
    }

    #[test]
    fn short_long_and_odd_values_are_refused_without_panicking() {
        let good = domain_users();
        for len in 0..good.len() {
            assert!(
                Sid::from_bytes(&good[..len]).is_none(),
                "prefix of {len} bytes"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert!(Sid::from_bytes(&long).is_none(), "trailing byte");
        let mut too_many = good.clone();
        too_many[1] = 16;
        too_many.extend(std::iter::repeat_n(0u8, 11 * 4));
        assert!(Sid::from_bytes(&too_many).is_none(), "16 sub-authorities");
        let mut count_lies = good.clone();
        count_lies[1] = 255;
        assert!(Sid::from_bytes(&count_lies).is_none());
        let mut revision = good;
        revision[0] = 2;
        assert!(Sid::from_bytes(&revision).is_none());
        // The text form and random bytes are not binary SIDs.
        assert!(Sid::from_bytes(b"S-1-5-21-1-2-3-513").is_none());
        for seed in 0u8..=255 {
            let noise: Vec<u8> = (0..(seed % 40))
                .map(|i| seed.wrapping_mul(31).wrapping_add(i))
                .collect();
            let _ = Sid::from_bytes(&noise);
        }
    }
}
