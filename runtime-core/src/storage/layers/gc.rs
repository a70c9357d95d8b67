//! Collecting the image cache: an entry no live container uses goes when its
//! layers are gone (the image can never be asked for again), and the least
//! recently used unused ones go while the cache is over its size budget.
//! Runs after each container's delete; an entry whose lock is held (being
//! built or taken) is left for the next run.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use super::cache::{ImageCache, KeyLock};
use super::{is_key, LayerId};
use crate::storage::mounts::unmount_all;

/// What the collector knows of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub bytes: u64,
    /// Last taken.
    pub mtime: SystemTime,
    pub in_use: bool,
    pub layers_exist: bool,
}

/// The keys to remove: see the module doc. Never an entry in use.
pub fn choose(entries: &[Entry], max_bytes: u64) -> Vec<String> {
    let (dead, alive): (Vec<&Entry>, Vec<&Entry>) = entries
        .iter()
        .filter(|e| !e.in_use)
        .partition(|e| !e.layers_exist);
    let mut doomed: Vec<String> = dead.iter().map(|e| e.key.clone()).collect();
    let mut total: u64 = entries
        .iter()
        .filter(|e| e.in_use || e.layers_exist)
        .map(|e| e.bytes)
        .sum();
    let mut lru = alive;
    lru.sort_by_key(|e| (e.mtime, e.key.clone()));
    for e in lru {
        if total <= max_bytes {
            break;
        }
        total = total.saturating_sub(e.bytes);
        doomed.push(e.key.clone());
    }
    doomed
}

/// Whether a reference file's text still names a live use of the entry whose
/// inode is `ino`: its owner (state directory) exists and its link is the entry.
pub fn reference_is_live(text: &str, dev: u64, ino: u64) -> bool {
    let mut lines = text.lines();
    let (Some(owner), Some(link)) = (lines.next(), lines.next()) else {
        return false;
    };
    Path::new(owner).is_dir()
        && std::fs::symlink_metadata(link).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Drop the key's stale references; whether a live one is left.
fn prune_refs(cache: &ImageCache, key: &str, dev: u64, ino: u64) -> bool {
    let dir = cache.refs_dir(key);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return false;
    };
    let mut live = false;
    for r in rd.flatten() {
        let text = std::fs::read_to_string(r.path()).unwrap_or_default();
        if reference_is_live(&text, dev, ino) {
            live = true;
        } else {
            let _ = std::fs::remove_file(r.path());
        }
    }
    live
}

/// Whether the very layer directories the entry was built from are still
/// there (a path made anew is another layer: its image can never be asked for).
fn layers_exist(cache: &ImageCache, key: &str) -> bool {
    cache
        .recorded(key)
        .is_some_and(|ids| !ids.is_empty() && ids.iter().all(LayerId::holds))
}

fn remove_entry(cache: &ImageCache, key: &str) {
    let _ = std::fs::remove_file(cache.entry(key));
    let _ = std::fs::remove_file(cache.lowers_path(key));
    let _ = std::fs::remove_dir_all(cache.refs_dir(key));
}

/// Leftovers of a build that died (its lock is ours now).
fn remove_leftovers(cache: &ImageCache, key: &str) {
    let _ = std::fs::remove_file(cache.dir.join(format!("{key}.erofs.tmp")));
    let merge = cache.dir.join(format!("{key}.merge"));
    if merge.exists() && unmount_all(&merge).is_ok() {
        let _ = std::fs::remove_dir(&merge);
    }
}

/// The key a cache file belongs to (`<key>.erofs`, `.erofs.tmp`, `.merge`,
/// `.lock`, `.lowers`, `.refs`), if it is one of ours.
fn key_of(name: &str) -> Option<&str> {
    let (key, rest) = name.split_at_checked(64)?;
    let ours = [
        ".erofs",
        ".erofs.tmp",
        ".merge",
        ".lock",
        ".lowers",
        ".refs",
    ]
    .contains(&rest);
    (ours && is_key(key)).then_some(key)
}

/// One collection run (blocking: call it off the runtime). Keys whose lock is
/// held (a build or a take in progress) are left for the next run; a key with
/// no image is what a build killed midway left: all of it goes.
pub fn collect(cache: &ImageCache) {
    let Ok(rd) = std::fs::read_dir(&cache.dir) else {
        return;
    };
    let keys: std::collections::BTreeSet<String> = rd
        .flatten()
        .filter_map(|f| key_of(&f.file_name().to_string_lossy()).map(String::from))
        .collect();
    let mut held = Vec::new();
    let mut entries = Vec::new();
    for key in &keys {
        let key = key.as_str();
        let Ok(Some(lock)) = KeyLock::try_lock(&cache.lock_path(key)) else {
            continue; // busy: next time
        };
        remove_leftovers(cache, key);
        let Ok(m) = std::fs::metadata(cache.entry(key)) else {
            remove_entry(cache, key);
            lock.remove(&cache.lock_path(key));
            continue;
        };
        entries.push(Entry {
            key: key.to_string(),
            bytes: m.blocks() * 512,
            mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            in_use: prune_refs(cache, key, m.dev(), m.ino()),
            layers_exist: layers_exist(cache, key),
        });
        held.push(lock);
    }
    for key in choose(&entries, cache.max_bytes) {
        tracing::info!(key = %key, "image cache: entry removed");
        remove_entry(cache, &key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn e(key: &str, mib: u64, age: u64, in_use: bool, layers_exist: bool) -> Entry {
        Entry {
            key: key.into(),
            bytes: mib << 20,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(1000 - age),
            in_use,
            layers_exist,
        }
    }

    #[test]
    fn unused_entries_of_gone_layers_go_and_used_ones_never() {
        let v = [
            e("gone", 10, 0, false, false),
            e("gone-but-used", 10, 0, true, false),
            e("fine", 10, 0, false, true),
        ];
        assert_eq!(choose(&v, 1 << 40), vec!["gone"]);
    }

    #[test]
    fn over_budget_the_least_recently_used_unused_go_first() {
        let v = [
            e("new", 100, 1, false, true),
            e("old", 100, 50, false, true),
            e("older-in-use", 100, 99, true, true),
            e("mid", 100, 10, false, true),
        ];
        // 400 MiB, budget 250: two go, oldest unused first.
        assert_eq!(choose(&v, 250 << 20), vec!["old", "mid"]);
        assert!(choose(&v, 400 << 20).is_empty());
        // In use alone over budget: nothing else can help, nothing in use goes.
        assert_eq!(choose(&v, 0).len(), 3);
    }

    #[test]
    fn no_entry_one_entry_and_many_are_each_collected_right() {
        assert!(choose(&[], 0).is_empty());
        assert!(choose(&[e("only", 10, 5, false, true)], 20 << 20).is_empty());
        assert_eq!(
            choose(&[e("only", 10, 5, false, true)], 5 << 20),
            vec!["only"]
        );
        assert!(choose(&[e("only", 10, 5, true, false)], 0).is_empty());
    }

    /// An entry on disk: `mib` of image, taken `age` seconds ago, its layers there or not.
    fn on_disk(
        cache: &ImageCache,
        layers: &Path,
        n: u8,
        mib: usize,
        age: u64,
        layers_exist: bool,
    ) -> String {
        let key = format!("{:064x}", n);
        let entry = cache.entry(&key);
        std::fs::write(&entry, vec![1u8; mib << 20]).unwrap();
        let f = std::fs::File::options().write(true).open(&entry).unwrap();
        f.set_modified(SystemTime::now() - std::time::Duration::from_secs(age))
            .unwrap();
        let lower = layers.join(format!("layer{n}"));
        std::fs::create_dir_all(&lower).unwrap();
        let id = LayerId::of(&lower).unwrap();
        if !layers_exist {
            std::fs::remove_dir(&lower).unwrap();
        }
        std::fs::write(cache.lowers_path(&key), serde_json::to_vec(&[id]).unwrap()).unwrap();
        key
    }

    #[test]
    fn a_build_killed_midway_leaves_nothing_after_a_collection() {
        let d = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(d.path().to_path_buf(), 100);
        let key = format!("{:064x}", 7);
        // What a shim SIGKILLed during a build leaves: the lock file, the
        // unfinished image and the (here unmounted) merge directory.
        std::fs::write(cache.lock_path(&key), "").unwrap();
        std::fs::write(d.path().join(format!("{key}.erofs.tmp")), "half").unwrap();
        std::fs::create_dir(d.path().join(format!("{key}.merge"))).unwrap();
        std::fs::write(d.path().join("unrelated"), "").unwrap();
        // A build in progress (its lock held) is left alone.
        let busy = format!("{:064x}", 8);
        let held = KeyLock::try_lock(&cache.lock_path(&busy)).unwrap().unwrap();
        std::fs::write(d.path().join(format!("{busy}.erofs.tmp")), "building").unwrap();
        collect(&cache);
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!("{busy}.erofs.tmp"),
                format!("{busy}.lock"),
                "unrelated".into()
            ]
        );
        drop(held);
    }

    #[test]
    fn collecting_a_missing_an_empty_a_one_entry_and_a_full_cache() {
        let d = tempfile::tempdir().unwrap();
        let layers = d.path().join("layers");
        // A fresh machine: no cache directory yet.
        let cache = ImageCache::new(d.path().join("cache"), 2);
        collect(&cache);
        assert!(!cache.dir.exists());
        // Empty.
        std::fs::create_dir(&cache.dir).unwrap();
        collect(&cache);
        // One entry, within budget: kept; its layers gone: removed.
        let one = on_disk(&cache, &layers, 1, 1, 10, true);
        collect(&cache);
        assert!(cache.entry(&one).exists());
        std::fs::remove_dir_all(layers.join("layer1")).unwrap();
        collect(&cache);
        assert!(!cache.entry(&one).exists() && !cache.lowers_path(&one).exists());
        // Many, 3 MiB over a 2 MiB budget: the least recently taken goes.
        let keys: Vec<String> = [(2, 30), (3, 20), (4, 10)]
            .iter()
            .map(|&(n, age)| on_disk(&cache, &layers, n, 1, age, true))
            .collect();
        collect(&cache);
        let left: Vec<bool> = keys.iter().map(|k| cache.entry(k).exists()).collect();
        assert_eq!(left, [false, true, true]);
    }

    #[test]
    fn a_reference_lives_only_with_its_owner_and_its_link() {
        let d = tempfile::tempdir().unwrap();
        let entry = d.path().join("k.erofs");
        std::fs::write(&entry, b"x").unwrap();
        let owner = d.path().join("state");
        std::fs::create_dir(&owner).unwrap();
        let link = d.path().join("lower.erofs");
        std::fs::hard_link(&entry, &link).unwrap();
        let m = std::fs::metadata(&entry).unwrap();
        let text = format!("{}\n{}\n", owner.display(), link.display());
        assert!(reference_is_live(&text, m.dev(), m.ino()));
        // A dead shim's container: its state directory is gone.
        std::fs::remove_dir(&owner).unwrap();
        assert!(!reference_is_live(&text, m.dev(), m.ino()));
        std::fs::create_dir(&owner).unwrap();
        // The link now names another image (the same name reused).
        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, b"y").unwrap();
        assert!(!reference_is_live(&text, m.dev(), m.ino()));
        assert!(!reference_is_live("garbage", m.dev(), m.ino()));
    }
}
