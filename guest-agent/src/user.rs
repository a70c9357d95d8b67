//! Resolving the OCI user against the container's own /etc/passwd and
//! /etc/group (never the agent's: the agent has none). The image is hostile:
//! the files are read inside the container root, only if they are regular
//! files of bounded size (a FIFO there must not hang the agent).

use std::os::fd::BorrowedFd;
use std::path::Path;

use vxn_wire::protocol::{AgentError, ErrorKind, UserSpec};

use crate::safe_path::{self, ReadError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

#[derive(Debug)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Files larger than this are not read (a hostile image could ship a huge one).
const MAX_DB: u64 = 4 << 20;

/// The file's text; "" when the image has none (numeric ids need no entry).
fn read_db(root: BorrowedFd, file: &str) -> Result<String, AgentError> {
    match safe_path::read_regular(root, Path::new(file), MAX_DB) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(ReadError::Missing) => Ok(String::new()),
        Err(ReadError::NotRegular) => Err(invalid(format!(
            "{file} in the image is not a regular file"
        ))),
        Err(ReadError::TooLarge(n)) => Err(invalid(format!(
            "{file} in the image is too large ({n} bytes, at most {MAX_DB})"
        ))),
        Err(ReadError::Io(e)) => Err(invalid(format!("read {file} in the image: {e}"))),
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].into(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].into(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].into(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(Into::into)
                    .collect(),
            })
        })
        .collect()
}

fn invalid(msg: String) -> AgentError {
    AgentError::new(ErrorKind::InvalidArgument, msg)
}

/// Resolve `spec` like runc: numeric ids need no entry; names must exist.
/// A user's primary group and home come from passwd. Supplementary groups:
/// with a group given (an OCI spec always gives one) exactly the spec's, as
/// runc sets them: the engine already chose them from the image's groups, or
/// chose not to (CRI's SupplementalGroupsPolicy Strict). Without one (a user
/// name alone), the spec's plus initgroups(3)'s: the primary group and the
/// groups that list the user as a member.
pub fn resolve(root: BorrowedFd, spec: &UserSpec) -> Result<Credentials, AgentError> {
    let passwd = parse_passwd(&read_db(root, "/etc/passwd")?);
    let groups = parse_group(&read_db(root, "/etc/group")?);
    let user_str = spec.user.as_deref().unwrap_or("0");
    let by_id = spec.uid.or_else(|| user_str.parse::<u32>().ok());
    let entry = match by_id {
        Some(uid) => passwd.iter().find(|p| p.uid == uid),
        None => Some(passwd.iter().find(|p| p.name == user_str).ok_or_else(|| {
            invalid(format!(
                "unable to find user {user_str}: no matching entries in passwd file"
            ))
        })?),
    };
    let uid = match (by_id, entry) {
        (Some(uid), _) => uid,
        (None, Some(e)) => e.uid,
        (None, None) => 0,
    };
    let gid = match (spec.gid, spec.group.as_deref()) {
        (Some(gid), _) => gid,
        (None, Some(g)) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    invalid(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        },
        (None, None) => entry.map(|e| e.gid).unwrap_or(0),
    };
    let mut all: Vec<u32> = spec.additional_gids.clone();
    let group_given = spec.gid.is_some() || spec.group.is_some();
    if let Some(e) = entry.filter(|_| !group_given) {
        // initgroups(3) semantics: the primary group is a supplementary one too.
        all.push(gid);
        all.extend(
            groups
                .iter()
                .filter(|g| g.members.contains(&e.name))
                .map(|g| g.gid),
        );
    }
    all.sort_unstable();
    all.dedup();
    let home = entry
        .map(|e| e.home.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok(Credentials {
        uid,
        gid,
        groups: all,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::fd::{AsFd, OwnedFd};

    fn fd(d: &tempfile::TempDir) -> OwnedFd {
        std::fs::File::open(d.path()).unwrap().into()
    }

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nbad line\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nuser:x:1000:\nextra:x:2000:user,other\n",
        )
        .unwrap();
        d
    }

    fn spec(user: Option<&str>, group: Option<&str>) -> UserSpec {
        UserSpec {
            user: user.map(Into::into),
            group: group.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn names_and_numbers_resolve() {
        let r = rootfs();
        let c = resolve(fd(&r).as_fd(), &spec(Some("user"), None)).unwrap();
        assert_eq!(
            (c.uid, c.gid, c.groups.clone(), c.home.as_str()),
            (1000, 1000, vec![1000, 2000], "/home/user")
        );
        let c = resolve(fd(&r).as_fd(), &spec(Some("1000"), Some("extra"))).unwrap();
        assert_eq!((c.uid, c.gid), (1000, 2000));
        let c = resolve(fd(&r).as_fd(), &spec(Some("4242"), Some("4343"))).unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_str()), (4242, 4343, "/"));
        let c = resolve(fd(&r).as_fd(), &spec(None, None)).unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_str()), (0, 0, "/root"));
    }

    #[test]
    fn ids_from_the_oci_spec_need_no_entry_and_win_over_names() {
        let r = rootfs();
        let ids = |uid, gid| UserSpec {
            uid: Some(uid),
            gid: Some(gid),
            ..Default::default()
        };
        let c = resolve(fd(&r).as_fd(), &ids(1000, 1000)).unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_str()), (1000, 1000, "/home/user"));
        // The spec's groups, exactly: not the image's 2000 that lists the user
        // (CRI's SupplementalGroupsPolicy Strict; Merge puts it in the spec).
        assert_eq!(c.groups, Vec::<u32>::new());
        let strict = UserSpec {
            additional_gids: vec![1234],
            ..ids(1000, 1000)
        };
        let c = resolve(fd(&r).as_fd(), &strict).unwrap();
        assert_eq!(c.groups, vec![1234]);
        let c = resolve(fd(&r).as_fd(), &ids(4242, 7)).unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_str()), (4242, 7, "/"));
        let both = UserSpec {
            user: Some("nobody-here".into()),
            ..ids(1000, 2000)
        };
        let c = resolve(fd(&r).as_fd(), &both).unwrap();
        assert_eq!((c.uid, c.gid), (1000, 2000));
    }

    #[test]
    fn unknown_names_are_errors() {
        let r = rootfs();
        assert!(resolve(fd(&r).as_fd(), &spec(Some("nobody"), None))
            .unwrap_err()
            .message
            .contains("nobody"));
        assert!(resolve(fd(&r).as_fd(), &spec(None, Some("wheel"))).is_err());
    }

    #[test]
    fn a_passwd_that_is_no_regular_file_is_refused_at_once() {
        let r = rootfs();
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
        nix::unistd::mkfifo(&r.path().join("etc/passwd"), mode).unwrap();
        let e = resolve(fd(&r).as_fd(), &spec(Some("1000"), None)).unwrap_err();
        assert!(
            e.message
                .contains("/etc/passwd in the image is not a regular file"),
            "{e}"
        );
        // A symlink out of the image resolves inside it: here, to nothing.
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/../../../../etc/passwd", r.path().join("etc/passwd")).unwrap();
        assert!(
            resolve(fd(&r).as_fd(), &spec(Some("root"), None)).is_err(),
            "the host's passwd was read"
        );
    }
}
