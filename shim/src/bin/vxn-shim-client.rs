//! `vxn-shim-client`: talk to a running shim's ttrpc Task service directly,
//! for what `ctr` 1.6 cannot send. The requests are the ones containerd
//! forwards (CRI's UpdateContainerResources becomes exactly this Update).
//!
//!   vxn-shim-client update --bundle DIR --id ID [--memory-limit BYTES]
//!                          [--cpu-quota N --cpu-period N]
//!
//! The shim's address is read from the bundle's `address` file, or for a pod's
//! container under containerd 2.x (which runs no `start` for it) from the
//! `bootstrap.json` containerd wrote there (containerd's
//! bundle is /run/containerd/io.containerd.runtime.v2.task/<ns>/<id>).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use containerd_shim_protos::api::UpdateTaskRequest;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::TaskClient;
use containerd_shim_protos::ttrpc::context;
use containerd_shim_protos::ttrpc::r#async::Client;

/// The type containerd marshals `specs.LinuxResources` with (JSON value).
const LINUX_RESOURCES_TYPE: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

struct UpdateArgs {
    bundle: PathBuf,
    id: String,
    memory_limit: Option<i64>,
    cpu_quota: Option<i64>,
    cpu_period: Option<u64>,
}

fn usage() -> String {
    "usage: vxn-shim-client update --bundle DIR --id ID [--memory-limit BYTES] [--cpu-quota N --cpu-period N]".into()
}

fn parse(args: &[String]) -> Result<UpdateArgs, String> {
    let mut it = args.iter();
    if it.next().map(String::as_str) != Some("update") {
        return Err(usage());
    }
    let mut a = UpdateArgs {
        bundle: PathBuf::new(),
        id: String::new(),
        memory_limit: None,
        cpu_quota: None,
        cpu_period: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<i64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--bundle" => a.bundle = value.into(),
            "--id" => a.id = value.clone(),
            "--memory-limit" => a.memory_limit = Some(num(value)?),
            "--cpu-quota" => a.cpu_quota = Some(num(value)?),
            "--cpu-period" => a.cpu_period = Some(num(value)?.max(0) as u64),
            _ => return Err(format!("unknown flag {flag}\n{}", usage())),
        }
    }
    if a.id.is_empty() || a.bundle.as_os_str().is_empty() {
        return Err(usage());
    }
    Ok(a)
}

fn resources_json(a: &UpdateArgs) -> serde_json::Value {
    let mut r = serde_json::Map::new();
    if let Some(limit) = a.memory_limit {
        r.insert("memory".into(), serde_json::json!({ "limit": limit }));
    }
    if a.cpu_quota.is_some() || a.cpu_period.is_some() {
        r.insert(
            "cpu".into(),
            serde_json::json!({ "quota": a.cpu_quota, "period": a.cpu_period }),
        );
    }
    serde_json::Value::Object(r)
}

async fn update(a: UpdateArgs) -> Result<(), String> {
    let address = shim_address(&a.bundle)?;
    let client = Client::connect(address.trim())
        .await
        .map_err(|e| format!("connect {}: {e}", address.trim()))?;
    let req = UpdateTaskRequest {
        id: a.id.clone(),
        resources: MessageField::some(Any {
            type_url: LINUX_RESOURCES_TYPE.into(),
            value: resources_json(&a).to_string().into_bytes(),
            ..Default::default()
        }),
        ..Default::default()
    };
    TaskClient::new(client)
        .update(context::with_timeout(30_000_000_000), &req)
        .await
        .map(drop)
        .map_err(|e| match e {
            containerd_shim_protos::ttrpc::Error::RpcStatus(s) => {
                format!("{:?}: {}", s.code(), s.message())
            }
            other => other.to_string(),
        })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match parse(&args) {
        Ok(a) => update(a).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vxn-shim-client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The shim serving the task of this bundle: `address` (written by the shim's
/// `start`), else containerd 2.x's `bootstrap.json` (`{"address": ...}`).
fn shim_address(bundle: &std::path::Path) -> Result<String, String> {
    let file = bundle.join("address");
    if let Ok(a) = std::fs::read_to_string(&file) {
        return Ok(a.trim().to_string());
    }
    let json = bundle.join("bootstrap.json");
    let text = std::fs::read(&json)
        .map_err(|e| format!("{} (nor {}): {e}", file.display(), json.display()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    v.get("address")
        .and_then(|a| a.as_str())
        .map(String::from)
        .ok_or_else(|| format!("{}: no address", json.display()))
}
