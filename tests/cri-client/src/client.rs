//! The gRPC connection to the CRI server (containerd's CRI plugin) over its
//! Unix socket, and the deadline every call runs under: a test must fail with
//! a message, never hang on a stuck runtime.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};
use tower::service_fn;

pub const DEFAULT_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
    /// The deadline of one call (the global `--timeout`).
    pub timeout: Duration,
}

/// `unix:///path` or a bare absolute path, as crictl takes them; nothing else
/// (containerd's CRI listens on a Unix socket only).
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if !path.starts_with('/') {
        bail!("endpoint {endpoint:?}: only unix:///absolute/path is supported");
    }
    Ok(PathBuf::from(path))
}

pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Cri> {
    let path = socket_path(endpoint)?;
    // The URI only fills HTTP/2's :authority: the connector ignores it and
    // dials the socket.
    let http = Endpoint::from_static("http://localhost").connect_timeout(timeout);
    let channel = http.connect_with_connector(service_fn(move |_: Uri| {
        let path = path.clone();
        async move { UnixStream::connect(path).await.map(TokioIo::new) }
    }));
    let channel = tokio::time::timeout(timeout, channel)
        .await
        .map_err(|_| anyhow!("connect {endpoint}: timed out after {}s", timeout.as_secs()))?
        .with_context(|| format!("connect {endpoint}"))?;
    Ok(Cri {
        runtime: RuntimeServiceClient::new(channel.clone()),
        image: ImageServiceClient::new(channel),
        timeout,
    })
}

/// A request carrying its deadline, so the server gives up too (grpc-timeout).
pub fn request<T>(msg: T, limit: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(limit);
    req
}

/// Awaits one call under `limit`; the error names the call and carries the
/// gRPC status message (what a test greps for) and code.
pub async fn call<T>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Err(_) => bail!("{what}: timed out after {}s", limit.as_secs()),
        Ok(Err(status)) => Err(status_error(what, &status)),
        Ok(Ok(resp)) => Ok(resp.into_inner()),
    }
}

fn status_error(what: &str, status: &Status) -> anyhow::Error {
    let msg = status.message();
    if msg.is_empty() {
        anyhow!("{what}: {:?}", status.code())
    } else {
        anyhow!("{what}: {msg} ({:?})", status.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        assert_eq!(
            socket_path("/run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
        assert!(socket_path("unix://relative.sock").is_err());
    }

    #[test]
    fn status_messages() {
        let e = status_error(
            "StartContainer",
            &Status::not_found("container \"x\" not found"),
        );
        assert_eq!(
            e.to_string(),
            "StartContainer: container \"x\" not found (NotFound)"
        );
        let e = status_error("Version", &Status::unimplemented(""));
        assert_eq!(e.to_string(), "Version: Unimplemented");
    }

    #[tokio::test]
    async fn connect_to_a_missing_socket_fails_with_the_path() {
        let err = match connect("/nonexistent/vxn-crictl.sock", Duration::from_secs(5)).await {
            Err(e) => format!("{e:#}"),
            Ok(_) => panic!("connected to a missing socket"),
        };
        assert!(err.contains("/nonexistent/vxn-crictl.sock"), "{err}");
    }
}
