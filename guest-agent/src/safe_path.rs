//! Paths inside a container root that the image controls.
//!
//! Lookups go through openat2(2) with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS:
//! a symlink (absolute or with `..`) resolves as if the container root were
//! `/`, and a /proc magic link (`/proc/1/root`) does not jump out at all.
//! Creating (a mount target, a cwd) walks one component at a time with
//! O_NOFOLLOW and resolves each symlink's text itself, from the root: the
//! kernel never follows a link, a dangling one is created inside the root
//! (as runc's securejoin does), and `..` stops at the root.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one walk, like the kernel's limit.
const MAX_SYMLINKS: usize = 40;

use nix::errno::Errno;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cstr(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)
}

/// openat2 confined to `root`.
pub fn open_in(root: BorrowedFd, rel: &Path, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
    let path = cstr(&relative(rel)?)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: openat2 with a valid dirfd, NUL-terminated path and open_how.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a new fd we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        match Errno::last() {
            // The kernel asks for a retry when a rename raced the lookup.
            Errno::EAGAIN | Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// `rel` as a path relative to the root ("." for the root itself); absolute
/// paths are taken as rooted at the container root, `..` is refused outright.
fn relative(rel: &Path) -> Result<PathBuf, Errno> {
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(Errno::EINVAL),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    Ok(out)
}

fn openat_nofollow(dir: &OwnedFd, name: &OsStr, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
    let c = cstr(Path::new(name))?;
    // SAFETY: openat relative to a directory fd we hold; the new fd is ours.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[derive(PartialEq, Eq)]
enum Kind {
    Dir,
    Link,
    Other,
}

fn kind(fd: &OwnedFd) -> Result<Kind, Errno> {
    Ok(match fstat(fd)?.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Link,
        _ => Kind::Other,
    })
}

/// Directories walked from the root: their fds and their real names.
struct Walk {
    fds: Vec<OwnedFd>,
    names: Vec<OsString>,
}

impl Walk {
    fn start(root: BorrowedFd) -> Result<Self, Errno> {
        let fd = open_in(root, Path::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok(Self {
            fds: vec![fd],
            names: Vec::new(),
        })
    }

    fn dir(&self) -> &OwnedFd {
        &self.fds[self.fds.len() - 1]
    }

    fn real_path(&self) -> PathBuf {
        self.names.iter().collect()
    }

    /// Follow `path` (relative to the current directory, or to the root if
    /// absolute) through directories, creating missing ones with `mode`.
    fn go(&mut self, path: &Path, mode: Option<u32>, links: &mut usize) -> Result<(), Errno> {
        let mut todo: VecDeque<OsString> = VecDeque::new();
        push_front(&mut todo, path, self);
        while let Some(c) = todo.pop_front() {
            if c == ".." {
                if self.fds.len() > 1 {
                    self.fds.pop();
                    self.names.pop();
                }
                continue;
            }
            let found = match openat_nofollow(self.dir(), &c, libc::O_PATH, 0) {
                Err(Errno::ENOENT) if mode.is_some() => {
                    let name = cstr(Path::new(&c))?;
                    // SAFETY: mkdirat in a directory fd we hold; never follows the last component.
                    let made = unsafe {
                        libc::mkdirat(self.dir().as_raw_fd(), name.as_ptr(), mode.unwrap_or(0o755))
                    };
                    if made < 0 && Errno::last() != Errno::EEXIST {
                        return Err(Errno::last());
                    }
                    openat_nofollow(self.dir(), &c, libc::O_PATH, 0)?
                }
                r => r?,
            };
            match kind(&found)? {
                Kind::Dir => {
                    self.fds.push(found);
                    self.names.push(c);
                }
                Kind::Link => {
                    *links += 1;
                    if *links > MAX_SYMLINKS {
                        return Err(Errno::ELOOP);
                    }
                    let target =
                        nix::fcntl::readlinkat(Some(self.dir().as_raw_fd()), c.as_os_str())?;
                    push_front(&mut todo, Path::new(&target), self);
                }
                Kind::Other => return Err(Errno::ENOTDIR),
            }
        }
        Ok(())
    }
}

/// Queue `path`'s components before the rest; an absolute path restarts at the root.
fn push_front(todo: &mut VecDeque<OsString>, path: &Path, walk: &mut Walk) {
    if path.is_absolute() {
        walk.fds.truncate(1);
        walk.names.clear();
    }
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    for p in parts.into_iter().rev() {
        todo.push_front(p);
    }
}

/// The directory `rel` under `root`, created (with `mode`) where missing;
/// returned as an O_PATH fd. Never leaves the root.
pub fn mkdir_all(root: BorrowedFd, rel: &Path, mode: u32) -> Result<OwnedFd, Errno> {
    let mut w = Walk::start(root)?;
    w.go(rel, Some(mode), &mut 0)?;
    w.fds.pop().ok_or(Errno::ENOENT)
}

/// A non-directory at `rel` to bind a file onto: an existing file (never a
/// directory), or a new empty one, made where its symlinks lead inside the
/// root. O_PATH fd.
pub fn mkfile(root: BorrowedFd, rel: &Path, mode: u32) -> Result<OwnedFd, Errno> {
    let mut path = PathBuf::from("/").join(rel);
    let mut links = 0;
    loop {
        let name = path.file_name().ok_or(Errno::EISDIR)?.to_os_string();
        let mut w = Walk::start(root)?;
        w.go(
            path.parent().unwrap_or(Path::new("/")),
            Some(0o755),
            &mut links,
        )?;
        match openat_nofollow(w.dir(), &name, libc::O_PATH, 0) {
            Ok(fd) => match kind(&fd)? {
                Kind::Dir => return Err(Errno::EISDIR),
                Kind::Other => return Ok(fd),
                Kind::Link => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::ELOOP);
                    }
                    let target =
                        nix::fcntl::readlinkat(Some(w.dir().as_raw_fd()), name.as_os_str())?;
                    let target = Path::new(&target);
                    path = if target.is_absolute() {
                        target.to_path_buf()
                    } else {
                        PathBuf::from("/").join(w.real_path()).join(target)
                    };
                }
            },
            Err(Errno::ENOENT) => {
                // O_NONBLOCK: should a FIFO appear here meanwhile, opening it must not hang.
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NONBLOCK;
                drop(openat_nofollow(w.dir(), &name, flags, mode)?);
                return openat_nofollow(w.dir(), &name, libc::O_PATH, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

fn fstat(fd: &OwnedFd) -> Result<libc::stat, Errno> {
    // SAFETY: fstat into a zeroed struct on a valid fd.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut st) < 0 {
            return Err(Errno::last());
        }
        Ok(st)
    }
}

/// Why a file of the image could not be read as data.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    Missing,
    NotRegular,
    TooLarge(u64),
    Io(Errno),
}

/// The contents of the regular file `rel`, at most `max` bytes. A FIFO, a
/// device or a socket is refused before anything is read (it could block
/// the agent or never end).
pub fn read_regular(root: BorrowedFd, rel: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
    let fd = match open_in(root, rel, flags, 0) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let st = fstat(&fd).map_err(ReadError::Io)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(ReadError::NotRegular);
    }
    if st.st_size as u64 > max {
        return Err(ReadError::TooLarge(st.st_size as u64));
    }
    let mut out = Vec::new();
    std::fs::File::from(fd)
        .take(max)
        .read_to_end(&mut out)
        .map_err(|e| ReadError::Io(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    Ok(out)
}

/// `/proc/self/fd/N` for an fd: how mount(2) is pointed at a target that was
/// resolved safely (the kernel follows this magic link to exactly that inode).
pub fn proc_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn root() -> (tempfile::TempDir, tempfile::TempDir, OwnedFd) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let fd = std::fs::File::open(root.path()).unwrap().into();
        (root, outside, fd)
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let (root, outside, fd) = root();
        // An absolute symlink and a `..` one, both aiming outside.
        std::os::unix::fs::symlink(outside.path(), root.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../tmp", root.path().join("up")).unwrap();
        mkdir_all(fd.as_fd(), Path::new("/abs/made"), 0o755).unwrap();
        mkdir_all(fd.as_fd(), Path::new("up/made"), 0o755).unwrap();
        assert!(!outside.path().join("made").exists());
        // Both landed under the root, where the link targets resolve from it.
        let inner = root
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("made");
        assert!(inner.is_dir(), "{}", inner.display());
        assert!(root.path().join("tmp/made").is_dir());
        mkfile(fd.as_fd(), Path::new("/abs/file"), 0o644).unwrap();
        assert!(!outside.path().join("file").exists());
        // `..` stops at the root.
        mkdir_all(fd.as_fd(), Path::new("../../x"), 0o755).unwrap();
        assert!(root.path().join("x").is_dir());
        // A dangling link for a file target: the file is made inside the root.
        std::os::unix::fs::symlink("/../../etc/vxn-escape", root.path().join("hosts")).unwrap();
        mkfile(fd.as_fd(), Path::new("/hosts"), 0o644).unwrap();
        assert!(root.path().join("etc/vxn-escape").is_file());
        assert!(!Path::new("/etc/vxn-escape").exists());
    }

    #[test]
    fn magic_links_do_not_jump_out() {
        let (root, _outside, fd) = root();
        // A real procfs inside the "image": its magic links are read as text, never followed.
        std::fs::create_dir(root.path().join("proc")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root/etc", root.path().join("escape")).unwrap();
        let procfd: OwnedFd = std::fs::File::open("/proc").unwrap().into();
        let w = mkdir_all(procfd.as_fd(), Path::new("self/root/vxn-magic"), 0o755);
        // /proc/self/root reads as "/": the walk stays in /proc, where nothing can be made.
        assert!(w.is_err());
        assert!(!Path::new("/vxn-magic").exists());
        assert!(mkdir_all(fd.as_fd(), Path::new("escape/x"), 0o755).is_ok());
        assert!(root.path().join("proc/self/root/etc/x").is_dir());
        // Through the host's real /proc, the magic link is refused.
        let procfd: OwnedFd = std::fs::File::open("/proc/self").unwrap().into();
        assert_eq!(
            open_in(procfd.as_fd(), Path::new("root/etc"), libc::O_PATH, 0).unwrap_err(),
            Errno::ELOOP
        );
    }

    #[test]
    fn only_regular_files_are_read() {
        let (root, _outside, fd) = root();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        nix::unistd::mkfifo(
            &root.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let t = std::time::Instant::now();
        assert_eq!(
            read_regular(fd.as_fd(), Path::new("/etc/passwd"), 1024),
            Err(ReadError::NotRegular)
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        std::fs::write(root.path().join("etc/group"), "x".repeat(2048)).unwrap();
        assert_eq!(
            read_regular(fd.as_fd(), Path::new("/etc/group"), 1024),
            Err(ReadError::TooLarge(2048))
        );
        assert_eq!(
            read_regular(fd.as_fd(), Path::new("/etc/none"), 1024),
            Err(ReadError::Missing)
        );
        std::fs::write(root.path().join("etc/hosts"), "ok").unwrap();
        assert_eq!(
            read_regular(fd.as_fd(), Path::new("/etc/hosts"), 1024).unwrap(),
            b"ok"
        );
        // A directory where a file is wanted is refused, not bound over.
        assert_eq!(
            mkfile(fd.as_fd(), Path::new("/etc"), 0o644).unwrap_err(),
            Errno::EISDIR
        );
    }
}
