//! Driving the `xl` toolstack. Every call is a child process we wait for
//! ourselves; callers inside a shim must not run a global SIGCHLD reaper.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum XlError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("xl {args} failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("xl {args} did not finish within {timeout:?}")]
    Timeout { args: String, timeout: Duration },
}

/// How to reach `xl` (tests point this at a fake).
#[derive(Debug, Clone)]
pub struct Xl {
    program: String,
    timeout: Duration,
}

impl Default for Xl {
    fn default() -> Self {
        Self {
            program: std::env::var("VXN_XL").unwrap_or_else(|_| "xl".into()),
            timeout: Duration::from_secs(120),
        }
    }
}

/// Output of a successful call.
pub struct XlOutput {
    pub stdout: String,
}

impl Xl {
    pub fn new(program: impl Into<String>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            timeout,
        }
    }

    pub async fn run(&self, args: &[&str]) -> Result<XlOutput, XlError> {
        let joined = args.join(" ");
        let child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| XlError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| XlError::Timeout {
                args: joined.clone(),
                timeout: self.timeout,
            })?
            .map_err(|source| XlError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // xl prints progress noise; the last lines carry the reason.
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(4)..].join(" | ");
            return Err(XlError::Failed {
                args: joined,
                status: out.status.to_string(),
                stderr: tail,
            });
        }
        Ok(XlOutput {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }

    /// `xl create -p CONFIG`: the domain exists, paused.
    pub async fn create_paused(&self, config: &Path) -> Result<(), XlError> {
        self.run(&["create", "-p", &config.to_string_lossy()])
            .await
            .map(drop)
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

    pub async fn unpause(&self, name: &str) -> Result<(), XlError> {
        self.run(&["unpause", name]).await.map(drop)
    }

    pub async fn pause(&self, name: &str) -> Result<(), XlError> {
        self.run(&["pause", name]).await.map(drop)
    }

    /// Destroy `name`; a domain that is already gone is not an error.
    pub async fn destroy(&self, name: &str) -> Result<(), XlError> {
        match self.run(&["destroy", name]).await {
            Ok(_) => Ok(()),
            Err(_) if !self.exists(name).await => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn domid(&self, name: &str) -> Option<u32> {
        self.run(&["domid", name])
            .await
            .ok()?
            .stdout
            .trim()
            .parse()
            .ok()
    }

    pub async fn exists(&self, name: &str) -> bool {
        self.domid(name).await.is_some()
    }
}

/// The value of `key` in `xl info` output (`key : value` lines).
pub fn parse_info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_info_field;

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
}
