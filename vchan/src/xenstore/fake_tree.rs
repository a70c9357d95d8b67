//! The fake xenstored's tree: nodes with permission lists, and watches.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::perm::{Access, Perm};
use super::wire::{encode_message, MsgType};

pub(super) struct Node {
    pub(super) value: Vec<u8>,
    pub(super) perms: Vec<Perm>,
}

pub(super) struct Watch {
    pub(super) conn: usize,
    pub(super) path: String,
    pub(super) token: String,
    pub(super) out: mpsc::UnboundedSender<Vec<u8>>,
}

#[derive(Default)]
pub(super) struct Store {
    pub(super) nodes: BTreeMap<String, Node>,
    pub(super) watches: Vec<Watch>,
}

pub(super) type Res = Result<Vec<u8>, &'static str>;

pub(super) fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

pub(super) fn under(path: &str, top: &str) -> bool {
    path == top || top == "/" || path.starts_with(&format!("{top}/"))
}

pub(super) fn allowed(perms: &[Perm], domid: u32, want: Access) -> bool {
    let Some(owner) = perms.first() else {
        return domid == 0;
    };
    if domid == 0 || domid == owner.domid {
        return true;
    }
    let a = perms[1..]
        .iter()
        .find(|p| p.domid == domid)
        .map_or(owner.access, |p| p.access);
    a == Access::Both || a == want
}

impl Store {
    /// Creates `path` and missing parents, or sets its value if it exists.
    pub(super) fn create(
        &mut self,
        path: &str,
        domid: u32,
        value: Option<Vec<u8>>,
    ) -> Result<(), &'static str> {
        if !path.starts_with('/') || path.ends_with('/') && path != "/" {
            return Err("EINVAL");
        }
        if let Some(n) = self.nodes.get_mut(path) {
            if !allowed(&n.perms, domid, Access::Write) {
                return Err("EACCES");
            }
            if let Some(v) = value {
                n.value = v;
                self.fire(path);
            }
            return Ok(());
        }
        let mut missing = vec![path.to_string()];
        let mut p = parent(path);
        let inherited = loop {
            let Some(pp) = p else { return Err("EINVAL") };
            if let Some(n) = self.nodes.get(pp) {
                if !allowed(&n.perms, domid, Access::Write) {
                    return Err("EACCES");
                }
                break n.perms.clone();
            }
            missing.push(pp.to_string());
            p = parent(pp);
        };
        let mut perms = inherited;
        if let Some(first) = perms.first_mut() {
            first.domid = domid;
        }
        for m in missing.iter().rev() {
            let perms = perms.clone();
            self.nodes.insert(
                m.clone(),
                Node {
                    value: vec![],
                    perms,
                },
            );
        }
        if let Some(n) = self.nodes.get_mut(path) {
            n.value = value.unwrap_or_default();
        }
        self.fire(path);
        Ok(())
    }

    /// Sends an event to every watch on `path`, an ancestor, or a descendant.
    pub(super) fn fire(&self, path: &str) {
        for w in &self.watches {
            if under(path, &w.path) || under(&w.path, path) {
                let body = format!("{path}\0{}\0", w.token);
                if let Ok(m) = encode_message(MsgType::WatchEvent as u32, 0, 0, body.as_bytes()) {
                    let _ = w.out.send(m);
                }
            }
        }
    }
}
