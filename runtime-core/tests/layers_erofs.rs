//! The image cache and the writable layer against the real tools: an EROFS
//! image of a two-layer overlay (a whiteout, an opaque directory) and an
//! ext4 writable layer. Root only (mknod, xattrs, overlay and bind mounts);
//! skipped without root, mkfs.erofs or fsck.erofs.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use vxn_runtime_core::storage::layers::cache::ImageCache;
use vxn_runtime_core::storage::layers::{gc, upper, Layers};

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root (mknod, trusted xattrs, mounts)");
        return false;
    }
    for tool in ["mkfs.erofs", "fsck.erofs", "debugfs"] {
        if Command::new(tool).arg("--help").output().is_err() {
            eprintln!("skipping: {tool} is not installed (erofs-utils, e2fsprogs)");
            return false;
        }
    }
    true
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn whiteout(p: &Path) {
    // SAFETY: valid path; a 0/0 character device is overlayfs's whiteout.
    assert_eq!(
        unsafe { libc::mknod(c(p).as_ptr(), libc::S_IFCHR | 0o600, 0) },
        0
    );
}

fn opaque(p: &Path) {
    let v = b"y";
    // SAFETY: valid path, name and value buffers.
    let r = unsafe {
        libc::setxattr(
            c(p).as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

fn mounted_under(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_string_lossy();
    info.lines().any(|l| l.contains(d.as_ref()))
}

#[tokio::test]
async fn builds_one_erofs_of_two_layers_with_a_whiteout_and_shares_it() {
    if !can_run() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (base, top) = (t.path().join("1/fs"), t.path().join("2/fs"));
    std::fs::create_dir_all(base.join("d")).unwrap();
    std::fs::create_dir_all(top.join("d")).unwrap();
    std::fs::write(base.join("gone"), b"base").unwrap();
    std::fs::write(base.join("kept"), b"base").unwrap();
    std::fs::write(base.join("d/hidden"), b"base").unwrap();
    std::fs::write(top.join("new"), b"top").unwrap();
    std::fs::write(top.join("d/shown"), b"top").unwrap();
    whiteout(&top.join("gone"));
    opaque(&top.join("d"));

    let cache = ImageCache::new(t.path().join("cache"), 0);
    let layers = Layers {
        lower: vec![top.clone(), base.clone()],
        upper: None,
    };
    let (c1, c2) = (t.path().join("c1"), t.path().join("c2"));
    for d in [&c1, &c2] {
        std::fs::create_dir_all(d.join("state")).unwrap();
    }
    let link1 = c1.join("lower.erofs");
    let taken = cache
        .take(&layers, &link1, &c1.join("state"))
        .await
        .unwrap();
    assert!(taken.built && taken.bytes > 0);
    assert!(
        !mounted_under(&cache.dir),
        "the merge mount was left behind"
    );

    let out = t.path().join("extracted");
    let st = Command::new("fsck.erofs")
        .arg(format!("--extract={}", out.display()))
        .arg(&link1)
        .status()
        .unwrap();
    assert!(st.success());
    let read = |p: &str| std::fs::read_to_string(out.join(p)).ok();
    assert_eq!(read("kept").as_deref(), Some("base"));
    assert_eq!(read("new").as_deref(), Some("top"));
    assert_eq!(read("d/shown").as_deref(), Some("top"));
    assert!(!out.join("gone").exists(), "the whiteout was not applied");
    assert!(
        !out.join("d/hidden").exists(),
        "the opaque directory was not applied"
    );

    // The second container of the image finds it built: the same file.
    let link2 = c2.join("lower.erofs");
    let again = cache
        .take(&layers, &link2, &c2.join("state"))
        .await
        .unwrap();
    assert!(!again.built);
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&link1), ino(&link2));

    // Budget 0: kept while a container uses it, even a dead shim's one...
    let entry = cache.entry(&layers.key().unwrap());
    std::fs::remove_dir(c1.join("state")).unwrap(); // c1's shim died; c2 lives
    gc::collect(&cache);
    assert!(entry.exists());
    // ... and removed once none does. A collection skips an entry whose lock
    // is held, and the other test's process spawns hold a copy of our lock's
    // fd between their fork and exec: a run may find it busy for a moment.
    std::fs::remove_file(&link2).unwrap();
    for _ in 0..100 {
        gc::collect(&cache);
        if !entry.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!entry.exists());
}

#[tokio::test]
async fn the_writable_layer_carries_the_snapshots_upper_and_a_work_dir() {
    if !can_run() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let snap = t.path().join("snap");
    std::fs::create_dir_all(snap.join("etc")).unwrap();
    std::fs::write(snap.join("etc/written"), b"before start").unwrap();
    let work = t.path().join("c");
    std::fs::create_dir_all(&work).unwrap();
    let (image, bytes) = upper::build(Some(&snap), &work, 16).await.unwrap();
    assert!(bytes >= 16 << 20);
    assert!(!mounted_under(&work), "the snapshot bind was left behind");
    assert!(!work.join(upper::STAGING).exists());
    // The snapshot itself is untouched.
    assert!(snap.join("etc/written").is_file());
    let ls = |dir: &str| {
        let o = Command::new("debugfs")
            .args(["-R", &format!("ls -l {dir}")])
            .arg(&image)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let root = ls("/");
    assert!(root.contains("upper") && root.contains("work"), "{root}");
    assert!(ls("/upper/etc").contains("written"));
    // An empty snapshot (the usual case) still gets both directories.
    let work2 = t.path().join("c2");
    std::fs::create_dir_all(&work2).unwrap();
    let (image2, _) = upper::build(None, &work2, 16).await.unwrap();
    assert!(image2.is_file());
}
