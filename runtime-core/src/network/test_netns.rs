//! A named network namespace for tests that need a real one (root and
//! iproute2), removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    /// A fresh `vxn-TAG-PID`; None (the test skips) when not root.
    pub fn new(tag: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return None;
        }
        let ns = Self {
            name: format!("vxn-{tag}-{}", std::process::id()),
        };
        let _ = Command::new("ip")
            .args(["netns", "delete", &ns.name])
            .output();
        run(&["netns", "add", &ns.name]);
        Some(ns)
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        run(&[&["-n", self.name.as_str()], args].concat());
    }
}

fn run(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}
