//! [`Command`], and the RESP framing the proxy needs to see commands and
//! replies one by one.
//!
//! Only framing: a request is split into complete commands (arrays of bulk
//! strings, or inline lines) so each can be numbered and matched by a rule;
//! a reply is only measured, so it can be paired with its command by order
//! and delivered, delayed or swallowed whole. Nothing is decoded beyond
//! that, and bytes that are not RESP pass through as one frame.

use std::fmt;

/// One command a client sent through the proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    /// Its number on this proxy, from 1, in arrival order.
    pub n: u64,
    /// The proxied connection it came on (from 1, per proxy).
    pub conn: u64,
    /// Its arguments, the command name first.
    pub args: Vec<Vec<u8>>,
}

impl Command {
    /// The command name in upper case; for container commands (`SCRIPT`,
    /// `CLIENT`, `CONFIG`, `CLUSTER`, `OBJECT`) with the subcommand, e.g.
    /// `SCRIPT LOAD`.
    pub fn name(&self) -> String {
        let word = |i: usize| {
            self.args
                .get(i)
                .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
                .unwrap_or_default()
        };
        let name = word(0);
        match name.as_str() {
            "SCRIPT" | "CLIENT" | "CONFIG" | "CLUSTER" | "OBJECT" => format!("{name} {}", word(1)),
            _ => name,
        }
    }

    /// Argument `i` (0 is the name), if present.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        self.args.get(i).map(Vec::as_slice)
    }

    /// The key of a keyed command: argument 1 for most, argument 3 for
    /// `EVAL`/`EVALSHA` with at least one key.
    pub fn key(&self) -> Option<String> {
        let at = match self.name().as_str() {
            "EVAL" | "EVALSHA" if self.arg(2) != Some(b"0") => 3,
            "EVAL" | "EVALSHA" => return None,
            _ => 1,
        };
        self.arg(at)
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} (conn {}) {}", self.n, self.conn, self.name())
    }
}

/// One complete command at the start of `buf`: its length and arguments.
/// RESP arrays of bulk strings, or an inline command (a line).
pub(super) fn parse_command(buf: &[u8]) -> Option<(usize, Vec<Vec<u8>>)> {
    if buf.first() != Some(&b'*') {
        let end = buf.iter().position(|&b| b == b'\n')?;
        let line = String::from_utf8_lossy(&buf[..end]);
        let args = line
            .split_whitespace()
            .map(|w| w.as_bytes().to_vec())
            .collect();
        return Some((end + 1, args));
    }
    let (count, mut at) = line_number(buf, 1)?;
    let mut args = Vec::with_capacity(usize::try_from(count.max(0)).unwrap_or(0));
    for _ in 0..count.max(0) {
        if buf.get(at) != Some(&b'$') {
            // Not a bulk string: take the rest of the frame as opaque.
            return Some((buf.len(), args));
        }
        let (len, start) = line_number(buf, at + 1)?;
        let len = usize::try_from(len).ok()?;
        let stop = start + len;
        if buf.len() < stop + 2 {
            return None;
        }
        args.push(buf[start..stop].to_vec());
        at = stop + 2;
    }
    Some((at, args))
}

/// The number on the line starting at `from`, and where the next line
/// starts.
fn line_number(buf: &[u8], from: usize) -> Option<(i64, usize)> {
    let rest = buf.get(from..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let number = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((number, from + end + 2))
}

/// The length of the complete reply at the start of `buf`, and whether it
/// is a RESP3 push (not the reply to a command); `None` while incomplete.
pub(super) fn reply_len(buf: &[u8]) -> Option<(usize, bool)> {
    let push = buf.first() == Some(&b'>');
    value_len(buf, 0).map(|end| (end, push))
}

fn value_len(buf: &[u8], at: usize) -> Option<usize> {
    let kind = *buf.get(at)?;
    let line_end = |from: usize| -> Option<usize> {
        let rest = buf.get(from..)?;
        rest.windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p + 2)
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => line_end(at + 1),
        b'$' | b'=' | b'!' => {
            let (len, start) = line_number(buf, at + 1)?;
            if len < 0 {
                return Some(start);
            }
            let stop = start + usize::try_from(len).ok()? + 2;
            (buf.len() >= stop).then_some(stop)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let (count, mut next) = line_number(buf, at + 1)?;
            if count < 0 {
                return Some(next);
            }
            let items = if matches!(kind, b'%' | b'|') {
                count * 2
            } else {
                count
            };
            for _ in 0..items {
                next = value_len(buf, next)?;
            }
            // An attribute precedes the value it describes.
            if kind == b'|' {
                return value_len(buf, next);
            }
            Some(next)
        }
        // Not RESP: pass the rest through as one frame.
        _ => Some(buf.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_split_out_of_a_pipeline_and_partial_frames_wait() {
        let two = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$2\r\n25\r\n";
        let (len, args) = parse_command(two).unwrap();
        assert_eq!(args, vec![b"GET".to_vec(), b"k".to_vec()]);
        let (rest, wait) = parse_command(&two[len..]).unwrap();
        assert_eq!(wait[0], b"WAIT");
        assert_eq!(len + rest, two.len());
        assert_eq!(parse_command(&two[..len - 1]), None);
        let (_, inline) = parse_command(b"PING\r\n").unwrap();
        assert_eq!(inline, vec![b"PING".to_vec()]);
    }

    #[test]
    fn binary_arguments_with_crlf_inside_are_kept_whole() {
        let frame = b"*2\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n";
        let (len, args) = parse_command(frame).unwrap();
        assert_eq!(len, frame.len());
        assert_eq!(args[1], b"a\r\nb");
    }

    #[test]
    fn replies_of_every_kind_are_measured_and_partial_ones_wait() {
        for reply in [
            &b"+OK\r\n"[..],
            b"-NOSCRIPT No matching script\r\n",
            b":1\r\n",
            b"$-1\r\n",
            b"$5\r\nab\r\nc\r\n",
            b"*2\r\n$1\r\na\r\n:2\r\n",
            b"*-1\r\n",
            b"%1\r\n+k\r\n*1\r\n_\r\n",
            b"|1\r\n+a\r\n+b\r\n:3\r\n",
        ] {
            let mut buf = reply.to_vec();
            buf.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(reply_len(&buf), Some((reply.len(), false)), "{reply:?}");
            assert_eq!(reply_len(&reply[..reply.len() - 1]), None, "{reply:?}");
        }
        assert_eq!(reply_len(b">2\r\n+a\r\n+b\r\n"), Some((12, true)));
    }

    #[test]
    fn names_and_keys_are_read_from_the_arguments() {
        let command = |args: &[&str]| Command {
            n: 1,
            conn: 1,
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        };
        assert_eq!(command(&["script", "load", "x"]).name(), "SCRIPT LOAD");
        assert_eq!(command(&["set", "k", "v"]).key().as_deref(), Some("k"));
        let evalsha = command(&["EVALSHA", "abc", "1", "rec", "a"]);
        assert_eq!(evalsha.key().as_deref(), Some("rec"));
        assert_eq!(command(&["EVAL", "s", "0"]).key(), None);
    }
}
