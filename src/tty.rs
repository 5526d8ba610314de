//! Asking a secret on the controlling terminal (`/dev/tty`) with echo off: the PIN of an
//! operator's PKCS#11 identity, the holder's PIN for `keyfleet apply --holder-pin`.
//!
//! Never read from standard input (which may be a pipe or a file), never echoed, never
//! logged; the answer lives only in a [`Zeroizing`] buffer. It does not decide what the
//! secret is for.

use std::io::{Read as _, Write as _};

use zeroize::Zeroizing;

/// Whether the process has a controlling terminal to ask on.
pub fn has_terminal() -> bool {
    open().is_ok()
}

fn open() -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
}

/// Shows `prompt` on /dev/tty and reads one line with echo off (echo is restored before
/// returning); the line without its ending. End of input before a line is an error.
pub fn ask_secret(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let tty = open()?;
    let saved = tcgetattr(&tty)?;
    let mut quiet = saved.clone();
    quiet.local_modes -= LocalModes::ECHO;
    quiet.local_modes |= LocalModes::ECHONL;
    // Echo goes off before the prompt shows (as getpass does): nothing typed after the
    // prompt is echoed; what was typed before it is discarded.
    tcsetattr(&tty, OptionalActions::Flush, &quiet)?;
    let mut line = Zeroizing::new(Vec::new());
    let mut out = &tty;
    let read = write!(out, "{prompt}")
        .and_then(|()| out.flush())
        .and_then(|()| read_line(&tty, &mut line));
    let restored = tcsetattr(&tty, OptionalActions::Now, &saved);
    let ended = read?;
    restored?;
    if !ended && line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "nothing entered (end of input)",
        ));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let text = std::str::from_utf8(&line)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))?;
    Ok(Zeroizing::new(text.to_string()))
}

/// Reads up to a newline (not kept) byte by byte, so that no buffer but `line` ever holds
/// the secret. Returns whether a newline ended it.
fn read_line(mut tty: &std::fs::File, line: &mut Zeroizing<Vec<u8>>) -> std::io::Result<bool> {
    let mut byte = Zeroizing::new([0u8; 1]);
    loop {
        match tty.read(&mut byte[..]) {
            Ok(0) => return Ok(false),
            Ok(_) if byte[0] == b'\n' => return Ok(true),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
