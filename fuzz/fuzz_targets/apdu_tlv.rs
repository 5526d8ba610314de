//! Fuzz target: the TLV and APDU parsers and the virtual card must never panic on any bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = keyfleet::card::tlv::parse_all(data);
    let _ = keyfleet::card::tlv::CommandApdu::parse(data);
    let _ = keyfleet::card::vcard::VirtualCard::in_memory().process_apdu(data);
});
