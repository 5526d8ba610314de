//! Finding keys and certificates on a token by the URI's `id` and `object` (label), the
//! mechanisms a token supports, and signing with a mechanism the caller chooses (for callers, such
//! as a TLS client key, that prepare the input themselves).
//!
//! Read-only sessions live here too: a card whose module marks it write-protected (OpenSC on
//! PIV cards) still logs in and signs in one.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};

use super::{Module, P11Error, Token};

/// The PKCS#11 return code of a failed call, as the standard names it (`CKR_PIN_INCORRECT`),
/// if the failure came from the module.
pub fn return_code(err: &CkError) -> Option<String> {
    match err {
        CkError::Pkcs11(rv, _) => Some(rv_name(*rv)),
        _ => None,
    }
}

/// `CKR_` and the variant name in upper snake case (`PinIncorrect` → `CKR_PIN_INCORRECT`).
pub fn rv_name(rv: RvError) -> String {
    let debug = format!("{rv:?}");
    let mut out = String::from("CKR_");
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

impl Module {
    /// A read-only session to the token with `serial`: enough to log in as the user, read
    /// objects and sign.
    pub fn open_token_read_only(&self, serial: &str) -> Result<Token, P11Error> {
        let info = self.token(serial)?;
        let session = self
            .context()
            .open_ro_session(info.slot)
            .map_err(|source| P11Error::Call {
                serial: serial.to_string(),
                op: "C_OpenSession",
                source,
            })?;
        Ok(Token {
            module: self.clone(),
            session,
            info,
        })
    }
}

impl Token {
    /// Which of `wanted` the token supports (asked one by one with C_GetMechanismInfo: the
    /// whole C_GetMechanismList would make cryptoki log every vendor mechanism it does not
    /// know as an error).
    pub fn supported_mechanisms(
        &self,
        wanted: &[MechanismType],
    ) -> Result<Vec<MechanismType>, P11Error> {
        let mut out = Vec::new();
        for m in wanted {
            match self.module.context().get_mechanism_info(self.info.slot, *m) {
                Ok(_) => out.push(*m),
                Err(CkError::Pkcs11(RvError::MechanismInvalid, _)) => {}
                Err(e) => return Err(self.call("C_GetMechanismInfo")(e)),
            }
        }
        Ok(out)
    }

    fn ids_and_labels(&self, found: &[ObjectHandle]) -> Result<Vec<(Vec<u8>, String)>, P11Error> {
        let mut out = Vec::with_capacity(found.len());
        for h in found {
            let attrs = self
                .session
                .get_attributes(*h, &[AttributeType::Id, AttributeType::Label])
                .map_err(self.call("C_GetAttributeValue"))?;
            let (mut id, mut label) = (Vec::new(), String::new());
            for a in attrs {
                match a {
                    Attribute::Id(v) => id = v,
                    Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
                    _ => {}
                }
            }
            out.push((id, label));
        }
        Ok(out)
    }

    fn objects(
        &self,
        class: ObjectClass,
        id: Option<&[u8]>,
        label: Option<&str>,
    ) -> Result<Vec<(Vec<u8>, String)>, P11Error> {
        let mut template = vec![Attribute::Class(class)];
        if let Some(id) = id {
            template.push(Attribute::Id(id.to_vec()));
        }
        if let Some(label) = label {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        let found = self.find(&template)?;
        self.ids_and_labels(&found)
    }

    /// The CKA_IDs and labels of the private keys with this id and/or label (every private
    /// key visible in the session when both are None; private keys are visible only after
    /// login on most tokens).
    pub fn private_keys(
        &self,
        id: Option<&[u8]>,
        label: Option<&str>,
    ) -> Result<Vec<(Vec<u8>, String)>, P11Error> {
        self.objects(ObjectClass::PRIVATE_KEY, id, label)
    }

    /// The CKA_IDs and labels of the certificates with this id and/or label.
    pub fn certificates(
        &self,
        id: Option<&[u8]>,
        label: Option<&str>,
    ) -> Result<Vec<(Vec<u8>, String)>, P11Error> {
        self.objects(ObjectClass::CERTIFICATE, id, label)
    }

    /// Signs `data` as it is with the private key `id` and `mechanism` (the caller hashes and
    /// pads as the mechanism needs).
    pub fn sign_with(
        &self,
        id: &[u8],
        mechanism: &Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, P11Error> {
        let key = self.private_key(id)?;
        self.session
            .sign(mechanism, key, data)
            .map_err(self.call("C_Sign"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_codes_are_named_as_the_standard_does() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(rv_name(RvError::PinLocked), "CKR_PIN_LOCKED");
        assert_eq!(
            return_code(&CkError::Pkcs11(
                RvError::TokenNotPresent,
                cryptoki::context::Function::Login
            )),
            Some("CKR_TOKEN_NOT_PRESENT".to_string())
        );
        assert_eq!(return_code(&CkError::NotSupported), None);
    }
}
