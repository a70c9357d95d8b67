//! crictl-style JSON (PodSandboxConfig, ContainerConfig) into the CRI v1 prost
//! structs. k8s-cri's types do derive serde, but with every field required and
//! enums as bare integers, so crictl's files (sparse, `"network": "NODE"`) would
//! not load: read them by hand instead, like protojson does:
//! - keys in proto (`log_directory`) or JSON (`logDirectory`) spelling;
//! - enums by name (`"NODE"`) or number; int64 as number or string;
//! - an unknown key is an error: a typo must not silently drop a setting.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, bail, Result};
use k8s_cri::v1 as cri;
use serde_json::Value;

/// A JSON object whose keys were checked against the fields we support.
struct Obj<'a> {
    path: String,
    fields: BTreeMap<String, &'a Value>,
}

fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: &str, allowed: &[&str]) -> Result<Obj<'a>> {
        let map = v
            .as_object()
            .ok_or_else(|| anyhow!("{path}: expected an object"))?;
        let mut fields = BTreeMap::new();
        for (key, value) in map {
            let name = snake_case(key);
            if !allowed.contains(&name.as_str()) {
                bail!(
                    "{path}: unsupported field {key:?} (supported: {})",
                    allowed.join(", ")
                );
            }
            if fields.insert(name, value).is_some() {
                bail!("{path}: field {key:?} given twice");
            }
        }
        Ok(Obj {
            path: path.to_string(),
            fields,
        })
    }

    /// The value of `key`, with null treated as absent (protojson does too).
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.fields.get(key).copied().filter(|v| !v.is_null())
    }

    fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn str(&self, key: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(String::new()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{}: expected a string", self.at(key))),
        }
    }

    fn bool(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| anyhow!("{}: expected a boolean", self.at(key))),
        }
    }

    fn i64(&self, key: &str) -> Result<i64> {
        let Some(v) = self.get(key) else { return Ok(0) };
        // protojson writes 64-bit integers as strings; accept both.
        let n = match v {
            Value::String(s) => s.parse().ok(),
            _ => v.as_i64(),
        };
        n.ok_or_else(|| anyhow!("{}: expected an integer", self.at(key)))
    }

    fn u32(&self, key: &str) -> Result<u32> {
        let n = self.i64(key)?;
        u32::try_from(n).map_err(|_| anyhow!("{}: {n} is out of range", self.at(key)))
    }

    fn i32(&self, key: &str) -> Result<i32> {
        let n = self.i64(key)?;
        i32::try_from(n).map_err(|_| anyhow!("{}: {n} is out of range", self.at(key)))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.list(key)?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| anyhow!("{}: expected a list of strings", self.at(key)))
    }

    fn list(&self, key: &str) -> Result<&'a [Value]> {
        match self.get(key) {
            None => Ok(&[]),
            Some(v) => v
                .as_array()
                .map(Vec::as_slice)
                .ok_or_else(|| anyhow!("{}: expected a list", self.at(key))),
        }
    }

    fn map(&self, key: &str) -> Result<HashMap<String, String>> {
        let Some(v) = self.get(key) else {
            return Ok(HashMap::new());
        };
        let bad = || anyhow!("{}: expected an object of strings", self.at(key));
        let obj = v.as_object().ok_or_else(bad)?;
        obj.iter()
            .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(bad)?.to_string())))
            .collect()
    }

    fn obj(&self, key: &str, allowed: &[&str]) -> Result<Option<Obj<'a>>> {
        self.get(key)
            .map(|v| Obj::new(v, &self.at(key), allowed))
            .transpose()
    }

    /// A proto enum: its name (`from_name`) or its number (checked by `valid`).
    fn enumeration(
        &self,
        key: &str,
        from_name: fn(&str) -> Option<i32>,
        valid: fn(i32) -> bool,
    ) -> Result<i32> {
        let n = match self.get(key) {
            None => return Ok(0),
            Some(Value::String(s)) => from_name(s),
            Some(_) => Some(self.i32(key)?),
        };
        n.filter(|&n| valid(n))
            .ok_or_else(|| anyhow!("{}: not a valid enum value", self.at(key)))
    }
}

/// `namespace_options` of a pod's or a container's security context.
fn namespace_options(sc: &Obj) -> Result<Option<cri::NamespaceOption>> {
    Ok(
        match sc.obj("namespace_options", &["network", "pid", "ipc"])? {
            None => None,
            Some(ns) => Some(cri::NamespaceOption {
                network: namespace_mode(&ns, "network")?,
                pid: namespace_mode(&ns, "pid")?,
                ipc: namespace_mode(&ns, "ipc")?,
                ..Default::default()
            }),
        },
    )
}

fn namespace_mode(o: &Obj, key: &str) -> Result<i32> {
    o.enumeration(
        key,
        |s| cri::NamespaceMode::from_str_name(s).map(|m| m as i32),
        |n| cri::NamespaceMode::try_from(n).is_ok(),
    )
}

pub fn pod_config(v: &Value) -> Result<cri::PodSandboxConfig> {
    let pod = Obj::new(
        v,
        "pod",
        &[
            "metadata",
            "hostname",
            "log_directory",
            "dns_config",
            "port_mappings",
            "labels",
            "annotations",
            "linux",
        ],
    )?;
    let metadata = match pod.obj("metadata", &["name", "namespace", "uid", "attempt"])? {
        None => None,
        Some(m) => Some(cri::PodSandboxMetadata {
            name: m.str("name")?,
            namespace: m.str("namespace")?,
            uid: m.str("uid")?,
            attempt: m.u32("attempt")?,
        }),
    };
    let dns_config = match pod.obj("dns_config", &["servers", "searches", "options"])? {
        None => None,
        Some(d) => Some(cri::DnsConfig {
            servers: d.strings("servers")?,
            searches: d.strings("searches")?,
            options: d.strings("options")?,
        }),
    };
    let mut port_mappings = Vec::new();
    for (i, pm) in pod.list("port_mappings")?.iter().enumerate() {
        let path = format!("pod.port_mappings[{i}]");
        let pm = Obj::new(
            pm,
            &path,
            &["protocol", "container_port", "host_port", "host_ip"],
        )?;
        port_mappings.push(cri::PortMapping {
            protocol: pm.enumeration(
                "protocol",
                |s| cri::Protocol::from_str_name(s).map(|p| p as i32),
                |n| cri::Protocol::try_from(n).is_ok(),
            )?,
            container_port: pm.i32("container_port")?,
            host_port: pm.i32("host_port")?,
            host_ip: pm.str("host_ip")?,
        });
    }
    let linux = match pod.obj("linux", &["security_context", "cgroup_parent"])? {
        None => None,
        Some(l) => Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: l.str("cgroup_parent")?,
            security_context: match l.obj("security_context", &["namespace_options"])? {
                None => None,
                Some(sc) => Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: namespace_options(&sc)?,
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
    };
    Ok(cri::PodSandboxConfig {
        metadata,
        hostname: pod.str("hostname")?,
        log_directory: pod.str("log_directory")?,
        dns_config,
        port_mappings,
        labels: pod.map("labels")?,
        annotations: pod.map("annotations")?,
        linux,
        windows: None,
    })
}

pub fn container_config(v: &Value) -> Result<cri::ContainerConfig> {
    let c = Obj::new(
        v,
        "container",
        &[
            "metadata",
            "image",
            "command",
            "args",
            "working_dir",
            "envs",
            "mounts",
            "labels",
            "annotations",
            "log_path",
            "stdin",
            "stdin_once",
            "tty",
            "linux",
        ],
    )?;
    let metadata = match c.obj("metadata", &["name", "attempt"])? {
        None => None,
        Some(m) => Some(cri::ContainerMetadata {
            name: m.str("name")?,
            attempt: m.u32("attempt")?,
        }),
    };
    let image = match c.obj("image", &["image"])? {
        None => None,
        Some(i) => Some(cri::ImageSpec {
            image: i.str("image")?,
            ..Default::default()
        }),
    };
    let mut envs = Vec::new();
    for (i, kv) in c.list("envs")?.iter().enumerate() {
        let kv = Obj::new(kv, &format!("container.envs[{i}]"), &["key", "value"])?;
        envs.push(cri::KeyValue {
            key: kv.str("key")?,
            value: kv.str("value")?,
        });
    }
    let mut mounts = Vec::new();
    for (i, m) in c.list("mounts")?.iter().enumerate() {
        let m = Obj::new(
            m,
            &format!("container.mounts[{i}]"),
            &[
                "container_path",
                "host_path",
                "readonly",
                "selinux_relabel",
                "propagation",
            ],
        )?;
        mounts.push(cri::Mount {
            container_path: m.str("container_path")?,
            host_path: m.str("host_path")?,
            readonly: m.bool("readonly")?,
            selinux_relabel: m.bool("selinux_relabel")?,
            propagation: m.enumeration(
                "propagation",
                |s| cri::MountPropagation::from_str_name(s).map(|p| p as i32),
                |n| cri::MountPropagation::try_from(n).is_ok(),
            )?,
            ..Default::default()
        });
    }
    Ok(cri::ContainerConfig {
        metadata,
        image,
        command: c.strings("command")?,
        args: c.strings("args")?,
        working_dir: c.str("working_dir")?,
        envs,
        mounts,
        labels: c.map("labels")?,
        annotations: c.map("annotations")?,
        log_path: c.str("log_path")?,
        stdin: c.bool("stdin")?,
        stdin_once: c.bool("stdin_once")?,
        tty: c.bool("tty")?,
        linux: c
            .obj("linux", &["resources", "security_context"])?
            .map(linux_container)
            .transpose()?,
        ..Default::default()
    })
}

fn linux_container(l: Obj) -> Result<cri::LinuxContainerConfig> {
    let resources = match l.obj(
        "resources",
        &[
            "cpu_period",
            "cpu_quota",
            "cpu_shares",
            "memory_limit_in_bytes",
        ],
    )? {
        None => None,
        Some(r) => Some(cri::LinuxContainerResources {
            cpu_period: r.i64("cpu_period")?,
            cpu_quota: r.i64("cpu_quota")?,
            cpu_shares: r.i64("cpu_shares")?,
            memory_limit_in_bytes: r.i64("memory_limit_in_bytes")?,
            ..Default::default()
        }),
    };
    let security_context = match l.obj(
        "security_context",
        &[
            "privileged",
            "capabilities",
            "run_as_user",
            "readonly_rootfs",
            "no_new_privs",
            "seccomp",
            "namespace_options",
            "masked_paths",
            "readonly_paths",
        ],
    )? {
        None => None,
        Some(sc) => Some(cri::LinuxContainerSecurityContext {
            privileged: sc.bool("privileged")?,
            capabilities: match sc
                .obj("capabilities", &["add_capabilities", "drop_capabilities"])?
            {
                None => None,
                Some(caps) => Some(cri::Capability {
                    add_capabilities: caps.strings("add_capabilities")?,
                    drop_capabilities: caps.strings("drop_capabilities")?,
                    ..Default::default()
                }),
            },
            run_as_user: match sc.obj("run_as_user", &["value"])? {
                None => None,
                Some(u) => Some(cri::Int64Value {
                    value: u.i64("value")?,
                }),
            },
            readonly_rootfs: sc.bool("readonly_rootfs")?,
            no_new_privs: sc.bool("no_new_privs")?,
            // kubelet always sends these (CONTAINER and its default paths);
            // unset, CRI's defaults are POD and no paths at all.
            namespace_options: namespace_options(&sc)?,
            masked_paths: sc.strings("masked_paths")?,
            readonly_paths: sc.strings("readonly_paths")?,
            // profile_type: 0 RuntimeDefault, 1 Unconfined, 2 Localhost (localhost_ref: a path)
            seccomp: match sc.obj("seccomp", &["profile_type", "localhost_ref"])? {
                None => None,
                Some(p) => Some(cri::SecurityProfile {
                    profile_type: i32::try_from(p.i64("profile_type")?)
                        .map_err(|_| anyhow::anyhow!("seccomp.profile_type is out of range"))?,
                    localhost_ref: p.str("localhost_ref")?,
                }),
            },
            ..Default::default()
        }),
    };
    Ok(cri::LinuxContainerConfig {
        resources,
        security_context,
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
