//! Arbitrary bytes as an agent's side of the handshake: the host must either
//! connect, or fail with an error, never panic or hang.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (mut ours, theirs) = tokio::io::duplex(1 << 16);
        let data = data.to_vec();
        let feeder = tokio::spawn(async move {
            let _ = ours.write_all(&data).await;
            let _ = ours.shutdown().await;
            ours
        });
        let _ = vxn_runtime_core::AgentClient::connect(theirs, Duration::from_millis(200)).await;
        let _ = feeder.await;
    });
});
