//! PIN, PUK and management key: VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER, GENERAL
//! AUTHENTICATE (9B challenge-response, and signing/ECDH with a slot's key), SET MANAGEMENT
//! KEY and SET PIN RETRIES.

use super::keys::{ecdh, sign_raw};
use super::{DEFAULT_PIN, DEFAULT_PUK, Sw, VirtualCard, random_bytes, sw};
use crate::card::keys::{ManagementKey, MgmtAlg};
use crate::card::tlv::{self, CommandApdu};

impl VirtualCard {
    pub(super) fn verify(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if cmd.p2 != 0x80 {
            return Err(sw::REF_NOT_FOUND);
        }
        match (cmd.p1, cmd.data.len()) {
            (0xFF, 0) => {
                self.session.pin_verified = false;
                self.session.pin_always_ok = false;
                Ok(Vec::new())
            }
            (0x00, 0) => {
                if self.state.pin_retries_left == 0 {
                    Err(sw::BLOCKED)
                } else if self.session.pin_verified {
                    Ok(Vec::new())
                } else {
                    Err(retries_sw(self.state.pin_retries_left))
                }
            }
            (0x00, 8) => {
                if self.state.pin_retries_left == 0 {
                    return Err(sw::BLOCKED);
                }
                if ct_eq(&cmd.data, &self.state.pin) {
                    self.state.pin_retries_left = self.state.pin_retries_max;
                    self.session.pin_verified = true;
                    self.session.pin_always_ok = true;
                    Ok(Vec::new())
                } else {
                    self.state.pin_retries_left -= 1;
                    self.session.pin_verified = false;
                    self.session.pin_always_ok = false;
                    Err(retries_sw(self.state.pin_retries_left))
                }
            }
            (0x00, _) => Err(sw::BAD_DATA),
            _ => Err(sw::BAD_P1P2),
        }
    }

    pub(super) fn change_reference(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if cmd.p1 != 0 {
            return Err(sw::BAD_P1P2);
        }
        let is_pin = match cmd.p2 {
            0x80 => true,
            0x81 => false,
            _ => return Err(sw::REF_NOT_FOUND),
        };
        let (old, new) = split_16(&cmd.data)?;
        let st = &mut self.state;
        let (current, left, max) = if is_pin {
            (&mut st.pin, &mut st.pin_retries_left, st.pin_retries_max)
        } else {
            (&mut st.puk, &mut st.puk_retries_left, st.puk_retries_max)
        };
        if *left == 0 {
            return Err(sw::BLOCKED);
        }
        if !valid_reference_data(new) {
            return Err(sw::BAD_DATA);
        }
        if !ct_eq(old, current) {
            *left -= 1;
            if is_pin {
                self.session.pin_verified = false;
                self.session.pin_always_ok = false;
            }
            return Err(retries_sw(*left));
        }
        *current = new.to_vec();
        *left = max;
        if is_pin {
            st.pin_is_default = false;
        } else {
            st.puk_is_default = false;
        }
        Ok(Vec::new())
    }

    pub(super) fn reset_retry_counter(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if cmd.p1 != 0 {
            return Err(sw::BAD_P1P2);
        }
        if cmd.p2 != 0x80 {
            return Err(sw::REF_NOT_FOUND);
        }
        let (puk, new_pin) = split_16(&cmd.data)?;
        let st = &mut self.state;
        if st.puk_retries_left == 0 {
            return Err(sw::BLOCKED);
        }
        if !valid_reference_data(new_pin) {
            return Err(sw::BAD_DATA);
        }
        if !ct_eq(puk, &st.puk) {
            st.puk_retries_left -= 1;
            return Err(retries_sw(st.puk_retries_left));
        }
        st.puk_retries_left = st.puk_retries_max;
        st.pin = new_pin.to_vec();
        st.pin_retries_left = st.pin_retries_max;
        st.pin_is_default = false;
        self.session.pin_verified = false;
        self.session.pin_always_ok = false;
        Ok(Vec::new())
    }

    // ---- GENERAL AUTHENTICATE -------------------------------------------------------------

    pub(super) fn general_authenticate(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        let (outer, trailing) = tlv::parse_one(&cmd.data).map_err(|_| sw::BAD_DATA)?;
        if outer.tag != 0x7C || !trailing.is_empty() {
            return Err(sw::BAD_DATA);
        }
        let items = tlv::parse_all(outer.value).map_err(|_| sw::BAD_DATA)?;
        let get = |tag: u32| items.iter().find(|t| t.tag == tag).map(|t| t.value);
        let (witness, challenge, response, exponent) = (get(0x80), get(0x81), get(0x82), get(0x85));
        if cmd.p2 == 0x9B {
            return self.auth_9b(cmd.p1, witness, challenge, response);
        }
        let key = self.usable_key(cmd.p1, cmd.p2)?;
        let out = match (response, challenge, exponent) {
            (Some([]), Some(input), None) => sign_raw(&key, input)?,
            (Some([]), None, Some(point)) => ecdh(&key, point)?,
            _ => return Err(sw::BAD_DATA),
        };
        let mut inner = Vec::new();
        tlv::push(&mut inner, 0x82, &out).map_err(|_| sw::BAD_DATA)?;
        tlv::encode(0x7C, &inner).map_err(|_| sw::BAD_DATA)
    }

    pub(super) fn auth_9b(
        &mut self,
        p1: u8,
        witness: Option<&[u8]>,
        challenge: Option<&[u8]>,
        response: Option<&[u8]>,
    ) -> Sw<Vec<u8>> {
        let key = self.state.mgmt().ok_or(sw::CONDITIONS)?;
        if p1 != 0 && p1 != key.alg.id() {
            return Err(sw::BAD_P1P2);
        }
        let bs = key.alg.block_len();
        let wrap = |tag: u32, v: &[u8]| -> Sw<Vec<u8>> {
            let inner = tlv::encode(tag, v).map_err(|_| sw::BAD_DATA)?;
            tlv::encode(0x7C, &inner).map_err(|_| sw::BAD_DATA)
        };
        match (witness, challenge, response) {
            // Mutual authentication, step 1: send an encrypted witness.
            (Some([]), None, None) => {
                let w = random_bytes(bs);
                let enc = key.encrypt(&w).map_err(|_| sw::BAD_DATA)?;
                self.session.witness = Some(w);
                self.session.mgmt_authed = false;
                wrap(0x80, &enc)
            }
            // Mutual authentication, step 2: check the decrypted witness, answer the challenge.
            (Some(w), Some(c), None) if !w.is_empty() && !c.is_empty() => {
                let expected = self.session.witness.take();
                if expected.as_deref().is_none_or(|e| !ct_eq(e, w)) {
                    self.session.mgmt_authed = false;
                    return Err(sw::SECURITY);
                }
                if c.len() != bs {
                    return Err(sw::BAD_DATA);
                }
                let enc = key.encrypt(c).map_err(|_| sw::BAD_DATA)?;
                self.session.mgmt_authed = true;
                wrap(0x82, &enc)
            }
            // External authentication step 1, or GET CHALLENGE: send a plain challenge.
            (None, Some([]), None) => {
                let c = random_bytes(bs);
                self.session.challenge = Some(c.clone());
                self.session.mgmt_authed = false;
                wrap(0x81, &c)
            }
            // External authentication step 2: the host proves the key by encrypting it.
            (None, None, Some(r)) if !r.is_empty() => {
                let expected = self.session.challenge.take().ok_or(sw::SECURITY)?;
                let enc = key.encrypt(&expected).map_err(|_| sw::BAD_DATA)?;
                if !ct_eq(&enc, r) {
                    self.session.mgmt_authed = false;
                    return Err(sw::SECURITY);
                }
                self.session.mgmt_authed = true;
                Ok(Vec::new())
            }
            _ => Err(sw::BAD_DATA),
        }
    }

    pub(super) fn set_management_key(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if cmd.p1 != 0xFF || !matches!(cmd.p2, 0xFF | 0xFE) {
            return Err(sw::BAD_P1P2);
        }
        if !self.session.mgmt_authed {
            return Err(sw::SECURITY);
        }
        let (alg, key) = match cmd.data.as_slice() {
            [alg, 0x9B, len, key @ ..] if usize::from(*len) == key.len() => (*alg, key),
            _ => return Err(sw::BAD_DATA),
        };
        let alg = MgmtAlg::from_id(alg).ok_or(sw::BAD_DATA)?;
        let key = ManagementKey::new(alg, key.to_vec()).map_err(|_| sw::BAD_DATA)?;
        self.state.mgmt_is_default = key == ManagementKey::factory_default();
        self.state.mgmt_alg = alg.id();
        self.state.mgmt_key = key.key;
        Ok(Vec::new())
    }

    /// SET PIN RETRIES (Yubico `00 FA <pin tries> <puk tries>`): needs 9B authentication and
    /// a verified PIN; sets both counters and, as on a YubiKey, puts PIN and PUK back to their
    /// factory values. Tries are 1..=15 (what a `63Cx` answer can show).
    pub(super) fn set_pin_retries(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if !(1..=15).contains(&cmd.p1) || !(1..=15).contains(&cmd.p2) {
            return Err(sw::BAD_P1P2);
        }
        if !cmd.data.is_empty() {
            return Err(sw::BAD_DATA);
        }
        if !self.session.mgmt_authed || !self.session.pin_verified {
            return Err(sw::SECURITY);
        }
        let st = &mut self.state;
        (st.pin_retries_max, st.pin_retries_left) = (cmd.p1, cmd.p1);
        (st.puk_retries_max, st.puk_retries_left) = (cmd.p2, cmd.p2);
        st.pin = DEFAULT_PIN.to_vec();
        st.puk = DEFAULT_PUK.to_vec();
        st.pin_is_default = true;
        st.puk_is_default = true;
        self.session.pin_verified = false;
        self.session.pin_always_ok = false;
        Ok(Vec::new())
    }
}

/// `63Cx` with x = tries left (capped at 15).
pub(super) fn retries_sw(left: u8) -> u16 {
    0x63C0 | u16::from(left.min(15))
}

/// Constant-time comparison of equal-length slices (false on different lengths).
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

pub(super) fn split_16(data: &[u8]) -> Sw<(&[u8], &[u8])> {
    if data.len() != 16 {
        return Err(sw::BAD_DATA);
    }
    Ok(data.split_at(8))
}

/// PIN/PUK as sent: 6–8 bytes, right-padded with FF to 8, no FF inside.
pub(super) fn valid_reference_data(b: &[u8]) -> bool {
    let len = b.iter().position(|&x| x == 0xFF).unwrap_or(b.len());
    b.len() == 8 && (6..=8).contains(&len) && b.iter().skip(len).all(|&x| x == 0xFF)
}
