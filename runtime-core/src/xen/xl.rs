//! Driving the `xl` toolstack. Every call is a child process we wait for
//! ourselves (callers inside a shim must not run a global SIGCHLD reaper),
//! with a timeout, killed if the caller gives up or the shim dies.

use std::path::Path;
use std::time::Duration;

use crate::command::{self, CommandError};

#[derive(Debug, thiserror::Error)]
pub enum XlError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("a domain named {0} exists already")]
    NameTaken(String),
    #[error("domain {name} still exists after {attempts} attempts to destroy it: {last}")]
    Survived {
        name: String,
        attempts: u32,
        last: String,
    },
}

/// How to reach `xl` (tests point this at a fake).
#[derive(Debug, Clone)]
pub struct Xl {
    program: String,
    timeout: Duration,
    destroy_backoff: Duration,
}

impl Default for Xl {
    fn default() -> Self {
        Self {
            program: std::env::var("VXN_XL").unwrap_or_else(|_| "xl".into()),
            timeout: Duration::from_secs(120),
            destroy_backoff: DESTROY_BACKOFF,
        }
    }
}

/// Output of a successful call.
pub struct XlOutput {
    pub stdout: String,
}

/// Attempts and pauses of [`Xl::destroy`]: libxl can fail a destroy while a
/// backend is still tearing down; a later attempt usually succeeds.
const DESTROY_ATTEMPTS: u32 = 4;
const DESTROY_BACKOFF: Duration = Duration::from_millis(500);

impl Xl {
    pub fn new(program: impl Into<String>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            timeout,
            destroy_backoff: DESTROY_BACKOFF,
        }
    }

    pub async fn run(&self, args: &[&str]) -> Result<XlOutput, XlError> {
        let out = command::run(&self.program, args, self.timeout).await?;
        Ok(XlOutput { stdout: out.stdout })
    }

    /// `xl create -p CONFIG`: the domain exists, paused. With `unmonitored`
    /// (`-e`) no `xl` process stays behind to watch the domain; the caller
    /// then watches for its death itself and destroys it.
    pub async fn create_paused(&self, config: &Path, unmonitored: bool) -> Result<(), XlError> {
        let config = config.to_string_lossy();
        let mut args = vec!["create", "-p"];
        if unmonitored {
            args.push("-e");
        }
        args.push(&config);
        self.run(&args).await.map(drop)
    }

    /// Whether domain `domid` still runs: `Some(false)` once it has shut
    /// down, crashed or is dying (or is gone), from `xl list`'s state flags.
    pub async fn is_running(&self, domid: u32) -> Result<bool, XlError> {
        let id = domid.to_string();
        let out = command::run_status(&self.program, &["list", id.as_str()], self.timeout).await?;
        if !out.status.success() {
            if out.stderr.contains("not found") || out.stderr.contains("invalid domain") {
                return Ok(false);
            }
            return Err(XlError::Command(CommandError::Failed {
                command: format!("{} list {id}", self.program),
                status: out.status.to_string(),
                stderr: command::tail(&out.stderr, 4),
            }));
        }
        Ok(parse_running(&out.stdout, domid))
    }

    /// Memory Xen has free for new domains (`xl info`), in MiB.
    pub async fn free_memory_mib(&self) -> Option<u64> {
        let out = self.run(&["info"]).await.ok()?;
        parse_info_field(&out.stdout, "free_memory")?.parse().ok()
    }

    /// `xl mem-set`: the domain's balloon target, within its maxmem.
    pub async fn mem_set(&self, name: &str, mib: u64) -> Result<(), XlError> {
        self.run(&["mem-set", name, &format!("{mib}m")])
            .await
            .map(drop)
    }

    /// `xl vcpu-set`: how many of the domain's vcpus are online, within its maxvcpus.
    pub async fn vcpu_set(&self, name: &str, vcpus: u32) -> Result<(), XlError> {
        self.run(&["vcpu-set", name, &vcpus.to_string()])
            .await
            .map(drop)
    }

    /// `xl block-attach`: a disk into the running domain (blkfront sees it hot-plugged).
    pub async fn block_attach(&self, name: &str, spec: &str) -> Result<(), XlError> {
        self.run(&["block-attach", name, spec]).await.map(drop)
    }

    /// `xl block-detach`: the guest must have stopped using it.
    pub async fn block_detach(&self, name: &str, vdev: &str) -> Result<(), XlError> {
        self.run(&["block-detach", name, vdev]).await.map(drop)
    }

    /// The vdevs attached to a domain (`xl block-list`: Vdev BE handle state evt-ch ring-ref BE-path).
    pub async fn block_list(&self, name: &str) -> Result<Vec<u32>, XlError> {
        let out = self.run(&["block-list", name]).await?;
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect())
    }

    /// `xl network-attach`: one more vif. `spec` is the domain config's
    /// `key=value,...`; the command takes each pair as an argument of its own.
    pub async fn network_attach(&self, name: &str, spec: &str) -> Result<(), XlError> {
        let mut args = vec!["network-attach", name];
        args.extend(spec.split(','));
        self.run(&args).await.map(drop)
    }

    /// `xl network-detach`, by MAC or devid.
    pub async fn network_detach(&self, name: &str, vif: &str) -> Result<(), XlError> {
        self.run(&["network-detach", name, vif]).await.map(drop)
    }

    /// The vifs of a domain as (devid, MAC) (`xl network-list`: Idx BE Mac
    /// handle state evt-ch tx-/rx-ring-ref BE-path).
    pub async fn network_list(&self, name: &str) -> Result<Vec<(u32, String)>, XlError> {
        let out = self.run(&["network-list", name]).await?;
        Ok(parse_network_list(&out.stdout))
    }

    /// `xl rename`: the domain keeps its id, its devices and its UUID.
    /// libxl refuses a name another domain has (checked in the same xenstore
    /// transaction as the rename): that is `NameTaken`, with no lookup first.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), XlError> {
        let args = ["rename", from, to];
        let out = command::run_status(&self.program, &args, self.timeout).await?;
        if out.status.success() {
            return Ok(());
        }
        if out.stderr.contains("already exists") {
            return Err(XlError::NameTaken(to.into()));
        }
        Err(XlError::Command(CommandError::Failed {
            command: format!("{} rename {from} {to}", self.program),
            status: out.status.to_string(),
            stderr: command::tail(&out.stderr, 4),
        }))
    }

    pub async fn unpause(&self, name: &str) -> Result<(), XlError> {
        self.run(&["unpause", name]).await.map(drop)
    }

    pub async fn pause(&self, name: &str) -> Result<(), XlError> {
        self.run(&["pause", name]).await.map(drop)
    }

    /// Destroy `name` and make sure it is gone: retried, then reported. A
    /// domain that is already gone is not an error.
    /// A name that is not there may be a create killed before it named its
    /// domain: that nameless one goes too (a domain found by its name was
    /// named, so no create of that name left one).
    pub async fn destroy(&self, name: &str) -> Result<(), XlError> {
        let mut last = String::new();
        for attempt in 1..=DESTROY_ATTEMPTS {
            match self.run(&["destroy", name]).await {
                Ok(_) if !self.exists(name).await? => return Ok(()),
                Ok(_) => last = "xl destroy succeeded but the domain is still listed".into(),
                Err(e) => {
                    if !self.exists(name).await? {
                        if attempt == 1 {
                            self.destroy_unnamed(name).await;
                        }
                        return Ok(());
                    }
                    last = e.to_string();
                }
            }
            tracing::warn!(domain = name, attempt, error = %last, "destroy did not take, retrying");
            tokio::time::sleep(self.destroy_backoff * attempt).await;
        }
        Err(XlError::Survived {
            name: name.into(),
            attempts: DESTROY_ATTEMPTS,
            last,
        })
    }

    /// An `xl create` killed between making the domain and naming it leaves
    /// a nameless "(null)" domain that no destroy by name finds; vxn gives
    /// each domain a UUID derived from its name, so it is found by that.
    async fn destroy_unnamed(&self, name: &str) {
        let uuid = super::config::uuid_for(name);
        let Ok(out) = self.run(&["list", "-v"]).await else {
            return;
        };
        for domid in unnamed_with_uuid(&out.stdout, &uuid) {
            tracing::warn!(
                domain = name,
                domid,
                "destroying the nameless domain a killed create left"
            );
            let _ = self.run(&["destroy", &domid.to_string()]).await;
        }
    }

    pub async fn domid(&self, name: &str) -> Result<Option<u32>, XlError> {
        // `xl domid` exits 1 with "Can't get domid of domain NAME" for a missing one.
        let out = command::run_status(&self.program, &["domid", name], self.timeout).await?;
        if out.status.success() {
            return Ok(out.stdout.trim().parse().ok());
        }
        if out.stderr.contains("Can't get domid") || out.stderr.contains("not found") {
            return Ok(None);
        }
        Err(XlError::Command(CommandError::Failed {
            command: format!("{} domid {name}", self.program),
            status: out.status.to_string(),
            stderr: command::tail(&out.stderr, 4),
        }))
    }

    /// Whether a domain of that name exists. Errors (xl itself failing) are
    /// not "no": callers must not act on a domain they could not check.
    pub async fn exists(&self, name: &str) -> Result<bool, XlError> {
        Ok(self.domid(name).await?.is_some())
    }

    /// Names of every domain (`xl list`), Domain-0 included.
    pub async fn list(&self) -> Result<Vec<String>, XlError> {
        let out = self.run(&["list"]).await?;
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect())
    }
}

/// From `xl list -v` (Name ID Mem VCPUs State Time UUID ...): the ids of
/// the nameless domains carrying `uuid`.
fn unnamed_with_uuid(list: &str, uuid: &str) -> Vec<u32> {
    list.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 7 && f[0] == "(null)" && f.contains(&uuid))
                .then(|| f[1].parse().ok())
                .flatten()
        })
        .collect()
}

/// From `xl list` output (Name ID Mem VCPUs State Time): whether the row of
/// `domid` is there and its state has none of s(hutdown), c(rashed), d(ying).
fn parse_running(list: &str, domid: u32) -> bool {
    list.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // The name may hold no spaces (xl refuses them), so columns are fixed.
        f.len() >= 6
            && f[f.len() - 5].parse() == Ok(domid)
            && !f[f.len() - 2].contains(['s', 'c', 'd'])
    })
}

/// The value of `key` in `xl info` output (`key : value` lines).
fn parse_network_list(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let idx = cols.next()?.parse().ok()?;
            let mac = cols.nth(1)?.to_ascii_lowercase();
            Some((idx, mac))
        })
        .collect()
}

pub fn parse_info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

impl From<XlError> for crate::hypervisor::VmError {
    fn from(e: XlError) -> Self {
        match e {
            XlError::NameTaken(name) => Self::Exists(name),
            e => Self::Backend(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vifs_are_listed_by_devid_and_mac() {
        let list = "Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path\n\
            0   0  00:16:3E:4f:c8:01     0     4     17   768/769         /local/domain/0/backend/vif/3/0\n\
            1   0  02:42:ac:12:00:03     1     4     18   1280/1281       /local/domain/0/backend/vif/3/1\n";
        assert_eq!(
            super::parse_network_list(list),
            vec![
                (0, "00:16:3e:4f:c8:01".to_string()),
                (1, "02:42:ac:12:00:03".to_string())
            ]
        );
        assert!(super::parse_network_list("Idx BE Mac\n").is_empty());
    }

    #[test]
    fn a_nameless_domain_is_found_by_its_uuid() {
        let list = "Name ID Mem VCPUs State Time(s) UUID Reason-Code Security Label\n\
            Domain-0 0 2048 2 r----- 10.0 00000000-0000-0000-0000-000000000000 - -\n\
            (null) 166 0 0 --p--- 0.0 fbccf356-3bd5-42a1-a038-9beb449d946d - -\n\
            vxn-a 170 128 1 -b---- 1.0 fbccf356-3bd5-42a1-a038-9beb449d946d - -\n\
            (null) 171 0 0 --p--- 0.0 11111111-3bd5-42a1-a038-9beb449d946d - -\n";
        assert_eq!(
            super::unnamed_with_uuid(list, "fbccf356-3bd5-42a1-a038-9beb449d946d"),
            vec![166]
        );
        assert!(super::unnamed_with_uuid(list, "nope").is_empty());
    }

    use super::*;

    #[test]
    fn reads_xl_info_fields() {
        let info = "host                   : vxn-dom0\ntotal_memory           : 4095\nfree_memory            : 3028\nxen_commandline        : dom0_mem=1024M,max:1024M\n";
        assert_eq!(parse_info_field(info, "free_memory"), Some("3028"));
        assert_eq!(
            parse_info_field(info, "xen_commandline"),
            Some("dom0_mem=1024M,max:1024M")
        );
        assert_eq!(parse_info_field(info, "free"), None);
    }

    #[test]
    fn reads_domain_states() {
        let head = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n";
        let row = |state: &str| {
            format!("{head}vxn-default-t1                               7   256     1     {state}       1.2\n")
        };
        assert!(parse_running(&row("-b----"), 7));
        assert!(parse_running(&row("--p---"), 7));
        assert!(parse_running(&row("r-----"), 7));
        assert!(!parse_running(&row("---s--"), 7));
        assert!(!parse_running(&row("----c-"), 7));
        assert!(!parse_running(&row("-----d"), 7));
        assert!(!parse_running(&row("-b----"), 8));
        assert!(!parse_running(head, 7));
    }

    /// A fake `xl` that logs its arguments to `calls` and runs `body` (sh).
    fn logging_xl(dir: &Path, body: &str) -> Xl {
        let script = dir.join("xl");
        let log = dir.join("calls");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$*\" >> {}\n{body}\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        Xl::new(script.to_string_lossy(), Duration::from_secs(5))
    }

    fn calls(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("calls")).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_rename_onto_a_taken_name_is_name_taken_without_a_lookup_first() {
        let dir = tempfile::tempdir().unwrap();
        // libxl's words (Xen 4.17)
        let xl = logging_xl(
            dir.path(),
            "echo 'libxl: error: libxl_domain.c:81:libxl__domain_rename: Domain 14:Domain with name \"$3\" already exists.' >&2; echo \"Can't rename domain '$2'.\" >&2; exit 1",
        );
        let e = xl.rename("vxn--pool-a", "vxn-default-b").await.unwrap_err();
        assert!(
            matches!(&e, XlError::NameTaken(n) if n == "vxn-default-b"),
            "{e}"
        );
        assert_eq!(calls(dir.path()), "rename vxn--pool-a vxn-default-b\n");
        // any other failure is the command's
        let xl = logging_xl(
            dir.path(),
            "echo 'nope is an invalid domain identifier' >&2; exit 1",
        );
        let e = xl.rename("nope", "vxn-default-b").await.unwrap_err();
        assert!(matches!(e, XlError::Command(_)), "{e}");
    }

    #[tokio::test]
    async fn a_named_domain_is_destroyed_without_a_search_for_nameless_ones() {
        let dir = tempfile::tempdir().unwrap();
        // destroyed at once: gone by the next lookup
        let xl = logging_xl(
            dir.path(),
            "case $1 in domid) echo \"Can't get domid of domain $2\" >&2; exit 1;; esac",
        );
        xl.destroy("vxn-default-a").await.unwrap();
        assert_eq!(
            calls(dir.path()),
            "destroy vxn-default-a\ndomid vxn-default-a\n"
        );
        // no domain of that name: a killed create's nameless one is looked for
        let dir = tempfile::tempdir().unwrap();
        let xl = logging_xl(
            dir.path(),
            "case $1 in destroy) echo \"$2 is an invalid domain identifier (rc=-6)\" >&2; exit 1;; domid) echo \"Can't get domid of domain $2\" >&2; exit 1;; esac",
        );
        xl.destroy("vxn-default-a").await.unwrap();
        assert_eq!(
            calls(dir.path()),
            "destroy vxn-default-a\ndomid vxn-default-a\nlist -v\n"
        );
    }

    /// A fake `xl` whose destroy fails and whose domain never goes away.
    fn fake_xl(dir: &Path, domid_ok: bool) -> Xl {
        let domid = if domid_ok {
            "echo 7"
        } else {
            "echo \"Can't get domid of domain $2\" >&2; exit 1"
        };
        let body = format!(
            "case $1 in\n destroy) echo 'libxl: error: destroy failed' >&2; exit 1;;\n domid) {domid};;\nesac"
        );
        Xl {
            destroy_backoff: Duration::from_millis(10),
            ..logging_xl(dir, &body)
        }
    }

    #[tokio::test]
    async fn a_destroy_that_does_not_take_is_reported_not_ok() {
        let dir = tempfile::tempdir().unwrap();
        let e = fake_xl(dir.path(), true)
            .destroy("vxn-x")
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("still exists after 4 attempts") && msg.contains("destroy failed"),
            "{msg}"
        );
        // Already gone: destroy succeeds without retrying.
        fake_xl(dir.path(), false).destroy("vxn-x").await.unwrap();
    }
}
