//! BER-TLV (as PIV uses it) and ISO 7816-4 command/response APDU codecs.
//!
//! Owns: parsing and encoding of tags of 1–3 bytes, lengths `00`–`7F`, `81 xx`, `82 xx xx`;
//! command APDUs of cases 1–4 (short, and extended on input); response APDUs (data + SW).
//! Every parser is defensive: malformed or truncated input is a [`TlvError`] / [`ApduError`],
//! never a panic. It does NOT know what any tag means (that is [`super::vcard`] and
//! [`super::piv`]), and does not do chaining or GET RESPONSE.

use thiserror::Error;

/// Failures while parsing BER-TLV data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlvError {
    /// The input ended inside a tag.
    #[error("TLV truncated inside a tag")]
    TruncatedTag,
    /// A multi-byte tag was longer than the 3 bytes PIV uses.
    #[error("TLV tag longer than 3 bytes")]
    TagTooLong,
    /// The input ended inside a length field.
    #[error("TLV truncated inside a length")]
    TruncatedLength,
    /// A length form other than `00`–`7F`, `81 xx`, `82 xx xx` was found.
    #[error("unsupported TLV length byte {0:#04x}")]
    BadLength(u8),
    /// The value is shorter than the length announced.
    #[error("TLV value truncated: need {need} bytes, have {have}")]
    TruncatedValue {
        /// Bytes announced by the length field.
        need: usize,
        /// Bytes left in the input.
        have: usize,
    },
    /// A value too long to encode with a 3-byte length was given to an encoder.
    #[error("TLV value of {0} bytes is too long to encode")]
    ValueTooLong(usize),
}

/// One parsed TLV, borrowing its value from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag, its bytes big-endian in a `u32` (`5F C1 05` is `0x5FC105`).
    pub tag: u32,
    /// The value bytes.
    pub value: &'a [u8],
}

/// Parses one TLV from the front of `input`; returns it and the rest of the input.
pub fn parse_one(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), TlvError> {
    let (&first, mut rest) = input.split_first().ok_or(TlvError::TruncatedTag)?;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        // Subsequent tag bytes follow while bit 8 is set; PIV uses at most 3 bytes in all.
        let mut n = 1;
        loop {
            let (&b, r) = rest.split_first().ok_or(TlvError::TruncatedTag)?;
            rest = r;
            n += 1;
            if n > 3 {
                return Err(TlvError::TagTooLong);
            }
            tag = (tag << 8) | u32::from(b);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let (&l0, r) = rest.split_first().ok_or(TlvError::TruncatedLength)?;
    rest = r;
    let len = match l0 {
        0x00..=0x7F => usize::from(l0),
        0x81 => {
            let (&b, r) = rest.split_first().ok_or(TlvError::TruncatedLength)?;
            rest = r;
            usize::from(b)
        }
        0x82 => match rest {
            [hi, lo, r @ ..] => {
                rest = r;
                usize::from(*hi) << 8 | usize::from(*lo)
            }
            _ => return Err(TlvError::TruncatedLength),
        },
        other => return Err(TlvError::BadLength(other)),
    };
    if rest.len() < len {
        return Err(TlvError::TruncatedValue {
            need: len,
            have: rest.len(),
        });
    }
    let (value, rest) = rest.split_at(len);
    Ok((Tlv { tag, value }, rest))
}

/// Parses a whole buffer as a sequence of TLVs.
pub fn parse_all(mut input: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tlv, rest) = parse_one(input)?;
        out.push(tlv);
        input = rest;
    }
    Ok(out)
}

/// Finds the first TLV with `tag` at the top level of `input`.
pub fn find(input: &[u8], tag: u32) -> Result<Option<&[u8]>, TlvError> {
    Ok(parse_all(input)?
        .into_iter()
        .find(|t| t.tag == tag)
        .map(|t| t.value))
}

/// Appends the encoding of a length to `out`.
pub fn push_len(out: &mut Vec<u8>, len: usize) -> Result<(), TlvError> {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xFFFF => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        _ => return Err(TlvError::ValueTooLong(len)),
    }
    Ok(())
}

/// Appends tag, length and value to `out`.
pub fn push(out: &mut Vec<u8>, tag: u32, value: &[u8]) -> Result<(), TlvError> {
    let tag_bytes = tag.to_be_bytes();
    let skip = tag_bytes.iter().take(3).take_while(|&&b| b == 0).count();
    out.extend_from_slice(tag_bytes.get(skip..).unwrap_or(&[0]));
    push_len(out, value.len())?;
    out.extend_from_slice(value);
    Ok(())
}

/// Encodes one TLV.
pub fn encode(tag: u32, value: &[u8]) -> Result<Vec<u8>, TlvError> {
    let mut out = Vec::with_capacity(value.len() + 6);
    push(&mut out, tag, value)?;
    Ok(out)
}

/// Failures while parsing a command APDU.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApduError {
    /// Fewer than the 4 header bytes.
    #[error("APDU shorter than its 4-byte header")]
    TooShort,
    /// The body's length does not match any of the cases 2–4 (short or extended).
    #[error("APDU body of {0} bytes matches no APDU case")]
    BadBody(usize),
    /// A command's data is too long for a short APDU (the caller must chain).
    #[error("command data of {0} bytes does not fit a short APDU")]
    DataTooLong(usize),
    /// A response APDU without its 2 status bytes.
    #[error("response APDU shorter than its 2 status bytes")]
    NoStatus,
}

/// A parsed command APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandApdu {
    /// Class byte (`00`, or `10` for a chained chunk).
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data (empty for cases 1 and 2).
    pub data: Vec<u8>,
    /// Expected response length Ne: `None` if absent, `Some(256)` for short `Le = 00`,
    /// `Some(65536)` for extended `Le = 00 00`.
    pub le: Option<usize>,
    /// Whether the APDU used extended length fields.
    pub extended: bool,
}

impl CommandApdu {
    /// A command with the given header and data, no Le.
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8, data: Vec<u8>) -> Self {
        CommandApdu {
            cla,
            ins,
            p1,
            p2,
            data,
            le: None,
            extended: false,
        }
    }

    /// Parses a command APDU (cases 1–4, short or extended).
    pub fn parse(bytes: &[u8]) -> Result<Self, ApduError> {
        let (header, body) = match bytes {
            [cla, ins, p1, p2, body @ ..] => ([*cla, *ins, *p1, *p2], body),
            _ => return Err(ApduError::TooShort),
        };
        let [cla, ins, p1, p2] = header;
        let short_ne = |b: u8| if b == 0 { 256 } else { usize::from(b) };
        let ext_ne = |hi: u8, lo: u8| {
            let n = usize::from(hi) << 8 | usize::from(lo);
            if n == 0 { 65536 } else { n }
        };
        let (data, le, extended) = match body {
            // Case 1.
            [] => (Vec::new(), None, false),
            // Case 2 short.
            [le] => (Vec::new(), Some(short_ne(*le)), false),
            // Case 2 extended.
            [0, hi, lo] => (Vec::new(), Some(ext_ne(*hi, *lo)), true),
            [lc, rest @ ..] if *lc != 0 => {
                let lc = usize::from(*lc);
                if rest.len() == lc {
                    (rest.to_vec(), None, false)
                } else if rest.len() == lc + 1 {
                    let le = rest.get(lc).copied().map(short_ne);
                    (rest.get(..lc).unwrap_or_default().to_vec(), le, false)
                } else {
                    return Err(ApduError::BadBody(body.len()));
                }
            }
            [0, hi, lo, rest @ ..] => {
                let lc = usize::from(*hi) << 8 | usize::from(*lo);
                if lc == 0 {
                    return Err(ApduError::BadBody(body.len()));
                }
                if rest.len() == lc {
                    (rest.to_vec(), None, true)
                } else if rest.len() == lc + 2 {
                    let le = match rest.get(lc..) {
                        Some([hi, lo]) => Some(ext_ne(*hi, *lo)),
                        _ => return Err(ApduError::BadBody(body.len())),
                    };
                    (rest.get(..lc).unwrap_or_default().to_vec(), le, true)
                } else {
                    return Err(ApduError::BadBody(body.len()));
                }
            }
            _ => return Err(ApduError::BadBody(body.len())),
        };
        Ok(CommandApdu {
            cla,
            ins,
            p1,
            p2,
            data,
            le,
            extended,
        })
    }

    /// Encodes as a short APDU (`le` of 256 is written as `00`; anything above is an error).
    pub fn to_short_bytes(&self) -> Result<Vec<u8>, ApduError> {
        if self.data.len() > 255 {
            return Err(ApduError::DataTooLong(self.data.len()));
        }
        let mut out = vec![self.cla, self.ins, self.p1, self.p2];
        if !self.data.is_empty() {
            out.push(self.data.len() as u8);
            out.extend_from_slice(&self.data);
        }
        match self.le {
            None => {}
            Some(n @ 1..=255) => out.push(n as u8),
            Some(_) => out.push(0),
        }
        Ok(out)
    }
}

/// A response APDU: data followed by the status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseApdu {
    /// Response data.
    pub data: Vec<u8>,
    /// Status word (`0x9000` on success).
    pub sw: u16,
}

impl ResponseApdu {
    /// Parses data ‖ SW1 SW2.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApduError> {
        match bytes {
            [data @ .., sw1, sw2] => Ok(ResponseApdu {
                data: data.to_vec(),
                sw: u16::from_be_bytes([*sw1, *sw2]),
            }),
            _ => Err(ApduError::NoStatus),
        }
    }

    /// Encodes as data ‖ SW1 SW2.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_piv_tags_and_lengths() {
        let bytes = [0x5C, 0x03, 0x5F, 0xC1, 0x05, 0x7F, 0x49, 0x81, 0x01, 0xAA];
        let tlvs = parse_all(&bytes).unwrap();
        assert_eq!(tlvs.len(), 2);
        assert_eq!(tlvs[0].tag, 0x5C);
        assert_eq!(tlvs[0].value, &[0x5F, 0xC1, 0x05]);
        assert_eq!(tlvs[1].tag, 0x7F49);
        assert_eq!(tlvs[1].value, &[0xAA]);
        let (t, rest) = parse_one(&[0x5F, 0xC1, 0x05, 0x00]).unwrap();
        assert_eq!((t.tag, t.value.len(), rest.len()), (0x5FC105, 0, 0));
    }

    #[test]
    fn round_trips_long_lengths() {
        for len in [0usize, 1, 127, 128, 255, 256, 1000, 65535] {
            let value = vec![0xAB; len];
            let enc = encode(0x53, &value).unwrap();
            let (t, rest) = parse_one(&enc).unwrap();
            assert_eq!(t.tag, 0x53);
            assert_eq!(t.value, &value[..]);
            assert!(rest.is_empty());
        }
        assert_eq!(
            encode(0x5FC102, &[1]).unwrap(),
            vec![0x5F, 0xC1, 0x02, 1, 1]
        );
        assert_eq!(encode(0x7F49, &[]).unwrap(), vec![0x7F, 0x49, 0]);
        assert!(matches!(
            encode(0x53, &vec![0; 70000]),
            Err(TlvError::ValueTooLong(70000))
        ));
    }

    #[test]
    fn rejects_malformed_tlv() {
        assert_eq!(parse_one(&[]), Err(TlvError::TruncatedTag));
        assert_eq!(parse_one(&[0x5F]), Err(TlvError::TruncatedTag));
        assert_eq!(parse_one(&[0x5F, 0xC1]), Err(TlvError::TruncatedTag));
        assert_eq!(
            parse_one(&[0x5F, 0xC1, 0x85, 0x01]),
            Err(TlvError::TagTooLong)
        );
        assert_eq!(parse_one(&[0x53]), Err(TlvError::TruncatedLength));
        assert_eq!(
            parse_one(&[0x53, 0x82, 0x01]),
            Err(TlvError::TruncatedLength)
        );
        assert_eq!(
            parse_one(&[0x53, 0x83, 0, 0, 1]),
            Err(TlvError::BadLength(0x83))
        );
        assert_eq!(
            parse_one(&[0x53, 0x05, 1, 2]),
            Err(TlvError::TruncatedValue { need: 5, have: 2 })
        );
    }

    #[test]
    fn parses_apdu_cases() {
        let c1 = CommandApdu::parse(&[0, 0x20, 0, 0x80]).unwrap();
        assert_eq!((c1.data.len(), c1.le), (0, None));
        let c2 = CommandApdu::parse(&[0, 0xC0, 0, 0, 0]).unwrap();
        assert_eq!(c2.le, Some(256));
        let c3 = CommandApdu::parse(&[0, 0xCB, 0x3F, 0xFF, 2, 0x5C, 0]).unwrap();
        assert_eq!((c3.data, c3.le), (vec![0x5C, 0], None));
        let c4 = CommandApdu::parse(&[0, 0xA4, 4, 0, 2, 0xA0, 0, 0]).unwrap();
        assert_eq!((c4.data.clone(), c4.le), (vec![0xA0, 0], Some(256)));
        let ext = CommandApdu::parse(&[0, 0xDB, 0x3F, 0xFF, 0, 0, 2, 9, 9, 0, 0]).unwrap();
        assert_eq!(
            (ext.data, ext.le, ext.extended),
            (vec![9, 9], Some(65536), true)
        );
        assert_eq!(CommandApdu::parse(&[0, 1, 2]), Err(ApduError::TooShort));
        assert_eq!(
            CommandApdu::parse(&[0, 1, 2, 3, 5, 1]),
            Err(ApduError::BadBody(2))
        );
        assert_eq!(
            c4.to_short_bytes().unwrap(),
            vec![0, 0xA4, 4, 0, 2, 0xA0, 0, 0]
        );
        assert_eq!(c1.to_short_bytes().unwrap(), vec![0, 0x20, 0, 0x80]);
        let long = CommandApdu::new(0, 0xDB, 0x3F, 0xFF, vec![0; 256]);
        assert_eq!(long.to_short_bytes(), Err(ApduError::DataTooLong(256)));
    }

    #[test]
    fn parses_response() {
        let r = ResponseApdu::parse(&[1, 2, 0x90, 0]).unwrap();
        assert_eq!((r.data.as_slice(), r.sw), (&[1u8, 2][..], 0x9000));
        assert_eq!(r.to_bytes(), vec![1, 2, 0x90, 0]);
        assert_eq!(ResponseApdu::parse(&[0x90]), Err(ApduError::NoStatus));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_all(&bytes);
            let _ = find(&bytes, 0x5C);
            let _ = CommandApdu::parse(&bytes);
            let _ = ResponseApdu::parse(&bytes);
        }

        #[test]
        fn encode_then_parse_round_trips(tag in prop_oneof![Just(0x53u32), Just(0x5FC105), Just(0x7F49)],
                                         value in proptest::collection::vec(any::<u8>(), 0..400)) {
            let enc = encode(tag, &value).unwrap();
            let (t, rest) = parse_one(&enc).unwrap();
            prop_assert_eq!(t.tag, tag);
            prop_assert_eq!(t.value, &value[..]);
            prop_assert!(rest.is_empty());
        }
    }
}
