//! The read-only subcommands: listings, status as JSON, stats. Tables are
//! tab-separated with full IDs and no header, for scripts.

use anyhow::{Context, Result};
use k8s_cri::v1 as cri;
use serde_json::{json, Map, Value};

use crate::client::{call, request, Cri};

fn container_state(s: i32) -> &'static str {
    cri::ContainerState::try_from(s).map_or("UNKNOWN_STATE", |s| s.as_str_name())
}

fn sandbox_state(s: i32) -> &'static str {
    cri::PodSandboxState::try_from(s).map_or("UNKNOWN_STATE", |s| s.as_str_name())
}

/// crictl's short state names for the tables.
fn short_state(s: &str) -> &str {
    match s {
        "SANDBOX_READY" => "Ready",
        "SANDBOX_NOTREADY" => "NotReady",
        "CONTAINER_CREATED" => "Created",
        "CONTAINER_RUNNING" => "Running",
        "CONTAINER_EXITED" => "Exited",
        _ => "Unknown",
    }
}

pub async fn pods(c: &mut Cri, quiet: bool) -> Result<()> {
    let req = request(cri::ListPodSandboxRequest { filter: None }, c.timeout);
    let mut items = call("ListPodSandbox", c.timeout, c.runtime.list_pod_sandbox(req))
        .await?
        .items;
    items.sort_by_key(|p| std::cmp::Reverse(p.created_at)); // newest first, as crictl
    for p in items {
        if quiet {
            println!("{}", p.id);
            continue;
        }
        let md = p.metadata.unwrap_or_default();
        let state = short_state(sandbox_state(p.state));
        let handler = if p.runtime_handler.is_empty() {
            "-"
        } else {
            &p.runtime_handler
        };
        println!(
            "{}\t{state}\t{}\t{}\t{}\t{handler}",
            p.id, md.name, md.namespace, md.attempt
        );
    }
    Ok(())
}

pub async fn ps(c: &mut Cri, all: bool, quiet: bool, pod: Option<String>) -> Result<()> {
    // Without -a only running containers, as crictl.
    let state = (!all).then_some(cri::ContainerStateValue {
        state: cri::ContainerState::ContainerRunning as i32,
    });
    let filter = cri::ContainerFilter {
        state,
        pod_sandbox_id: pod.unwrap_or_default(),
        ..Default::default()
    };
    let req = request(
        cri::ListContainersRequest {
            filter: Some(filter),
        },
        c.timeout,
    );
    let mut list = call("ListContainers", c.timeout, c.runtime.list_containers(req))
        .await?
        .containers;
    list.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    for ct in list {
        if quiet {
            println!("{}", ct.id);
            continue;
        }
        let md = ct.metadata.unwrap_or_default();
        let image = ct
            .image
            .map(|i| i.image)
            .filter(|i| !i.is_empty())
            .unwrap_or(ct.image_ref);
        let state = short_state(container_state(ct.state));
        println!(
            "{}\t{state}\t{}\t{}\t{}\t{image}",
            ct.id, md.name, md.attempt, ct.pod_sandbox_id
        );
    }
    Ok(())
}

/// The verbose `info` map: containerd puts JSON documents in it; embed those
/// as JSON (as crictl does) and anything else as a string.
fn info_json(info: std::collections::HashMap<String, String>) -> Value {
    let map: Map<String, Value> = info
        .into_iter()
        .map(|(k, v)| {
            let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
            (k, value)
        })
        .collect();
    Value::Object(map)
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn container_status(
    c: &mut Cri,
    id: String,
    verbose: bool,
) -> Result<cri::ContainerStatusResponse> {
    let req = request(
        cri::ContainerStatusRequest {
            container_id: id,
            verbose,
        },
        c.timeout,
    );
    call(
        "ContainerStatus",
        c.timeout,
        c.runtime.container_status(req),
    )
    .await
}

pub async fn inspect(c: &mut Cri, id: String) -> Result<()> {
    let r = container_status(c, id, true).await?;
    let s = r
        .status
        .context("ContainerStatus: the response has no status")?;
    let md = s.metadata.unwrap_or_default();
    let mounts: Vec<Value> = s
        .mounts
        .iter()
        .map(|m| json!({"container_path": m.container_path, "host_path": m.host_path, "readonly": m.readonly}))
        .collect();
    print_json(&json!({
        "id": s.id,
        "name": md.name,
        "attempt": md.attempt,
        "state": container_state(s.state),
        "created_at": s.created_at,
        "started_at": s.started_at,
        "finished_at": s.finished_at,
        "exit_code": s.exit_code,
        "reason": s.reason,
        "message": s.message,
        "image": s.image.map(|i| i.image).unwrap_or_default(),
        "image_ref": s.image_ref,
        "log_path": s.log_path,
        "labels": s.labels,
        "annotations": s.annotations,
        "mounts": mounts,
        "info": info_json(r.info),
    }))
}

pub async fn inspectp(c: &mut Cri, id: String) -> Result<()> {
    let req = request(
        cri::PodSandboxStatusRequest {
            pod_sandbox_id: id,
            verbose: true,
        },
        c.timeout,
    );
    let r = call(
        "PodSandboxStatus",
        c.timeout,
        c.runtime.pod_sandbox_status(req),
    )
    .await?;
    let s = r
        .status
        .context("PodSandboxStatus: the response has no status")?;
    let md = s.metadata.unwrap_or_default();
    let net = s.network.unwrap_or_default();
    let additional: Vec<String> = net.additional_ips.into_iter().map(|p| p.ip).collect();
    let ns = s
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .unwrap_or_default();
    let mode = |m: i32| cri::NamespaceMode::try_from(m).map_or("UNKNOWN", |m| m.as_str_name());
    print_json(&json!({
        "id": s.id,
        "name": md.name,
        "namespace": md.namespace,
        "uid": md.uid,
        "attempt": md.attempt,
        "state": sandbox_state(s.state),
        "created_at": s.created_at,
        "network": {"ip": net.ip, "additional_ips": additional},
        "namespace_options": {"network": mode(ns.network), "pid": mode(ns.pid), "ipc": mode(ns.ipc)},
        "runtime_handler": s.runtime_handler,
        "labels": s.labels,
        "annotations": s.annotations,
        "info": info_json(r.info),
    }))
}

/// A stats number, or "-" when the runtime did not report it.
fn num(v: Option<&cri::UInt64Value>) -> String {
    v.map_or("-".into(), |v| v.value.to_string())
}

fn print_container_stats(s: &cri::ContainerStats) {
    let id = s.attributes.as_ref().map_or("", |a| a.id.as_str());
    let cpu = num(s
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref()));
    let mem = num(s.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref()));
    let disk = num(s
        .writable_layer
        .as_ref()
        .and_then(|w| w.used_bytes.as_ref()));
    println!("{id}\t{cpu}\t{mem}\t{disk}");
}

pub async fn stats(c: &mut Cri, id: Option<String>) -> Result<()> {
    let t = c.timeout;
    // One ID: ContainerStats, so an unknown ID is an error rather than no output.
    let list = match id {
        Some(container_id) => {
            let req = request(cri::ContainerStatsRequest { container_id }, t);
            call("ContainerStats", t, c.runtime.container_stats(req))
                .await?
                .stats
                .into_iter()
                .collect()
        }
        None => {
            let req = request(cri::ListContainerStatsRequest { filter: None }, t);
            call("ListContainerStats", t, c.runtime.list_container_stats(req))
                .await?
                .stats
        }
    };
    list.iter().for_each(print_container_stats);
    Ok(())
}

pub async fn statsp(c: &mut Cri, id: Option<String>) -> Result<()> {
    let t = c.timeout;
    let list: Vec<cri::PodSandboxStats> = match id {
        Some(pod_sandbox_id) => {
            let req = request(cri::PodSandboxStatsRequest { pod_sandbox_id }, t);
            call("PodSandboxStats", t, c.runtime.pod_sandbox_stats(req))
                .await?
                .stats
                .into_iter()
                .collect()
        }
        None => {
            let req = request(cri::ListPodSandboxStatsRequest { filter: None }, t);
            call(
                "ListPodSandboxStats",
                t,
                c.runtime.list_pod_sandbox_stats(req),
            )
            .await?
            .stats
        }
    };
    for s in list {
        let id = s.attributes.map(|a| a.id).unwrap_or_default();
        let linux = s.linux.unwrap_or_default();
        let cpu = num(linux
            .cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref()));
        let mem = num(linux
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref()));
        println!("{id}\t{cpu}\t{mem}");
    }
    Ok(())
}

pub async fn images(c: &mut Cri, quiet: bool) -> Result<()> {
    let req = request(cri::ListImagesRequest { filter: None }, c.timeout);
    let list = call("ListImages", c.timeout, c.image.list_images(req))
        .await?
        .images;
    let mut out: Vec<String> = Vec::new();
    for img in list {
        if quiet {
            out.push(img.id);
        } else if !img.repo_tags.is_empty() {
            out.extend(img.repo_tags);
        } else if !img.repo_digests.is_empty() {
            out.extend(img.repo_digests);
        } else {
            out.push(img.id);
        }
    }
    out.sort();
    out.dedup();
    out.iter().for_each(|r| println!("{r}"));
    Ok(())
}
