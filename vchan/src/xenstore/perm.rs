//! xenstore node permissions, written `<letter><domid>` (`b0`, `r5`).

use std::fmt;

use super::error::XsError;

/// One entry of a node's permission list, written as `<letter><domid>`.
/// The first entry names the owner and the access of domains not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    pub access: Access,
    pub domid: u32,
}

/// `n` none, `r` read, `w` write, `b` both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    None,
    Read,
    Write,
    Both,
}

impl Perm {
    pub fn new(access: Access, domid: u32) -> Perm {
        Perm { access, domid }
    }

    /// Parses `"r5"`, `"b0"`, ...
    pub fn parse(s: &str) -> Result<Perm, XsError> {
        let bad = || XsError::Protocol(format!("bad permission {s:?}"));
        let mut chars = s.chars();
        let access = match chars.next() {
            Some('n') => Access::None,
            Some('r') => Access::Read,
            Some('w') => Access::Write,
            Some('b') => Access::Both,
            _ => return Err(bad()),
        };
        let digits = chars.as_str();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let domid = digits.parse().map_err(|_| bad())?;
        Ok(Perm { access, domid })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = match self.access {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        };
        write!(f, "{c}{}", self.domid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        assert_eq!(Perm::parse("r5").unwrap(), Perm::new(Access::Read, 5));
        assert_eq!(Perm::parse("n0").unwrap(), Perm::new(Access::None, 0));
        assert_eq!(Perm::new(Access::Both, 0).to_string(), "b0");
        assert_eq!(Perm::new(Access::Write, 12).to_string(), "w12");
        for bad in ["x1", "r", "", "r-1", "r+1", "b1x", "r99999999999"] {
            assert!(Perm::parse(bad).is_err(), "{bad}");
        }
    }
}
