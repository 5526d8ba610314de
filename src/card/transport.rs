//! How APDUs reach a card: the [`Transport`] trait and the in-process transport.
//!
//! Owns: moving one C-APDU to a card and its R-APDU (data ‖ SW) back. It does NOT interpret
//! status words, chain commands or fetch GET RESPONSE data (that is [`super::piv::PivClient`]).
//! A PC/SC transport (real readers, vpcd) implements the same trait elsewhere.

use thiserror::Error;

use super::vcard::VirtualCard;

/// Failures moving APDUs.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The card answered fewer than the 2 status bytes.
    #[error("card answered {0} bytes, fewer than a status word")]
    ShortResponse(usize),
    /// The card is gone (removed, reader detached, connection lost).
    #[error("card not present: {0}")]
    NoCard(String),
    /// Any other failure of the underlying reader stack.
    #[error("transport failure: {0}")]
    Other(String),
}

/// Something that can send a command APDU to a card and return its response APDU.
pub trait Transport {
    /// Sends `apdu`; returns the response including SW1 SW2.
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError>;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(apdu)
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(apdu)
    }
}

/// A transport that owns a [`VirtualCard`] and calls it directly.
#[derive(Debug)]
pub struct InProcess {
    card: VirtualCard,
    apdus: u64,
}

impl InProcess {
    /// Wraps a card (powered on).
    pub fn new(mut card: VirtualCard) -> Self {
        card.power_on();
        InProcess { card, apdus: 0 }
    }

    /// The card.
    pub fn card(&self) -> &VirtualCard {
        &self.card
    }

    /// The card, mutably (e.g. to simulate power events).
    pub fn card_mut(&mut self) -> &mut VirtualCard {
        &mut self.card
    }

    /// Gives the card back.
    pub fn into_card(self) -> VirtualCard {
        self.card
    }

    /// How many APDUs were transmitted.
    pub fn apdu_count(&self) -> u64 {
        self.apdus
    }
}

impl Transport for InProcess {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.apdus += 1;
        let r = self.card.process_apdu(apdu);
        if r.len() < 2 {
            return Err(TransportError::ShortResponse(r.len()));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_answers_and_counts() {
        let mut t = InProcess::new(VirtualCard::in_memory());
        let r = t.transmit(&[0, 0xFD, 0, 0, 0]).unwrap();
        assert_eq!(r, vec![5, 4, 3, 0x90, 0]);
        let r = t.transmit(&[0x80, 0xFD, 0, 0]).unwrap();
        assert_eq!(r, vec![0x6E, 0]);
        assert_eq!(t.apdu_count(), 2);
    }
}
