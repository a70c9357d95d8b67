//! The CRI container log format that containerd writes to a container's
//! `log_path`: one record per line, `<RFC3339Nano timestamp> <stream> <tags> <msg>`,
//! where the tags are `F` (full line) or `P` (partial: the runtime split a long
//! line, or the process has not written its newline yet). `logs` must join the
//! partial records of a stream back into the line the container wrote.
//!
//! Work on bytes, not strings: a container may print anything.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn parse(s: &str) -> Option<Stream> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// One parsed record of the log file.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp: &'a [u8],
    pub stream: Stream,
    pub partial: bool,
    pub msg: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub struct BadLine(pub String);

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid CRI log line: {}", self.0)
    }
}

/// Parses one line (without its newline).
pub fn parse_record(line: &[u8]) -> Result<Record<'_>, BadLine> {
    let bad = |why: &str| BadLine(format!("{why}: {:?}", String::from_utf8_lossy(line)));
    let (timestamp, rest) = split_space(line).ok_or_else(|| bad("no stream"))?;
    let (stream, rest) = split_space(rest).ok_or_else(|| bad("no tags"))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(bad("unknown stream")),
    };
    // The message may be empty (an empty line): "ts stdout F" is valid too.
    let (tags, msg) = split_space(rest).unwrap_or((rest, &[][..]));
    // Tags are ':'-separated; only the first one (P or F) is defined so far.
    let partial = match tags.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(bad("unknown tag")),
    };
    if timestamp.is_empty() {
        return Err(bad("empty timestamp"));
    }
    Ok(Record {
        timestamp,
        stream,
        partial,
        msg,
    })
}

fn split_space(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == b' ')?;
    Some((&s[..i], &s[i + 1..]))
}

/// A line the container wrote, partial records joined. `newline` is false only
/// for a stream's trailing partial record at the end of the file.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    pub stream: Stream,
    pub text: Vec<u8>,
    pub newline: bool,
}

/// Decodes a whole log file: the joined lines, in the order their last record
/// appears, of `only` stream or of both; plus the lines that did not parse
/// (reported, not fatal: one torn line should not hide the rest).
pub fn decode(data: &[u8], only: Option<Stream>) -> (Vec<Line>, Vec<BadLine>) {
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    // Partial records are joined per stream: stdout and stderr interleave.
    let mut pending: [Option<Vec<u8>>; 2] = [None, None];
    for raw in data.split(|&b| b == b'\n') {
        if raw.is_empty() {
            continue;
        }
        let rec = match parse_record(raw) {
            Ok(rec) => rec,
            Err(e) => {
                bad.push(e);
                continue;
            }
        };
        if only.is_some_and(|s| s != rec.stream) {
            continue;
        }
        let buf = pending[rec.stream.index()].get_or_insert_with(Vec::new);
        buf.extend_from_slice(rec.msg);
        if !rec.partial {
            let text = pending[rec.stream.index()].take().unwrap_or_default();
            lines.push(Line {
                stream: rec.stream,
                text,
                newline: true,
            });
        }
    }
    // A partial record not yet completed: show what there is, without a newline.
    for stream in [Stream::Stdout, Stream::Stderr] {
        if let Some(text) = pending[stream.index()].take() {
            lines.push(Line {
                stream,
                text,
                newline: false,
            });
        }
    }
    (lines, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2024-01-02T03:04:05.123456789Z";

    /// A test line that outlives the record borrowing it.
    fn line(s: String) -> &'static [u8] {
        s.into_bytes().leak()
    }

    fn texts(lines: &[Line]) -> Vec<(Stream, String, bool)> {
        lines
            .iter()
            .map(|l| {
                (
                    l.stream,
                    String::from_utf8_lossy(&l.text).into_owned(),
                    l.newline,
                )
            })
            .collect()
    }

    #[test]
    fn parses_a_full_record() {
        let line = format!("{TS} stdout F hello world");
        let rec = parse_record(line.as_bytes()).unwrap();
        assert_eq!(rec.timestamp, TS.as_bytes());
        assert_eq!(rec.stream, Stream::Stdout);
        assert!(!rec.partial);
        // Only the first three spaces separate fields: the message keeps its own.
        assert_eq!(rec.msg, b"hello world");
    }

    #[test]
    fn parses_empty_messages_and_extra_tags() {
        let rec = parse_record(line(format!("{TS} stderr F"))).unwrap();
        assert_eq!(
            (rec.stream, rec.partial, rec.msg),
            (Stream::Stderr, false, &b""[..])
        );
        let rec = parse_record(line(format!("{TS} stdout F  two spaces"))).unwrap();
        assert_eq!(
            rec.msg, b" two spaces",
            "only one space separates tag and message"
        );
        let rec = parse_record(line(format!("{TS} stdout P:future x"))).unwrap();
        assert!(rec.partial);
        assert_eq!(rec.msg, b"x");
    }

    #[test]
    fn rejects_malformed_records() {
        assert!(parse_record(b"garbage").is_err());
        assert!(parse_record(line(format!("{TS} stdin F x"))).is_err());
        assert!(parse_record(line(format!("{TS} stdout X x"))).is_err());
        assert!(parse_record(b" stdout F x").is_err());
    }

    #[test]
    fn joins_partial_lines_per_stream() {
        let data = format!(
            "{TS} stdout P abc\n{TS} stderr P err-\n{TS} stdout P def\n{TS} stdout F ghi\n\
             {TS} stderr F tail\n{TS} stdout F next\n"
        );
        let (lines, bad) = decode(data.as_bytes(), None);
        assert!(bad.is_empty());
        assert_eq!(
            texts(&lines),
            vec![
                (Stream::Stdout, "abcdefghi".into(), true),
                (Stream::Stderr, "err-tail".into(), true),
                (Stream::Stdout, "next".into(), true),
            ]
        );
    }

    #[test]
    fn filters_one_stream() {
        let data =
            format!("{TS} stdout F out\n{TS} stderr P e\n{TS} stderr F rr\n{TS} stdout F out2\n");
        let (lines, _) = decode(data.as_bytes(), Some(Stream::Stderr));
        assert_eq!(texts(&lines), vec![(Stream::Stderr, "err".into(), true)]);
        let (lines, _) = decode(data.as_bytes(), Some(Stream::Stdout));
        assert_eq!(
            texts(&lines),
            vec![
                (Stream::Stdout, "out".into(), true),
                (Stream::Stdout, "out2".into(), true)
            ]
        );
    }

    #[test]
    fn trailing_partial_has_no_newline_and_bad_lines_are_reported() {
        // A file being written: the last record is partial and has no '\n' yet.
        let data = format!("{TS} stdout F a\nnot a record\n{TS} stdout P half");
        let (lines, bad) = decode(data.as_bytes(), None);
        assert_eq!(
            texts(&lines),
            vec![
                (Stream::Stdout, "a".into(), true),
                (Stream::Stdout, "half".into(), false)
            ]
        );
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn keeps_non_utf8_bytes() {
        let mut data = format!("{TS} stdout F ").into_bytes();
        data.extend_from_slice(&[0xff, 0xfe, b'\n']);
        let (lines, _) = decode(&data, None);
        assert_eq!(lines[0].text, vec![0xff, 0xfe]);
    }

    #[test]
    fn stream_names() {
        assert_eq!(Stream::parse("stdout"), Some(Stream::Stdout));
        assert_eq!(Stream::parse("stderr"), Some(Stream::Stderr));
        assert_eq!(Stream::parse("both"), None);
    }
}
