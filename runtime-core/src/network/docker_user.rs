//! A Docker host's FORWARD drop, lifted for vxn's bridge.
//!
//! dockerd (with its default `"iptables": true`) loads `br_netfilter`, so frames
//! bridged on vxn's bridge cross iptables' FORWARD chain, and sets that chain's
//! policy to DROP when it turns forwarding on. vxn's own nftables table cannot
//! accept what another base chain drops: container to container on the bridge
//! and container to outside would be dropped. Docker's place for a host's own
//! rules is the `DOCKER-USER` chain (dockerd keeps what is in it and jumps to it
//! first from FORWARD), so `vxnctl network up` puts the bridge's rules there
//! (making the chain when dockerd is installed but has not run yet) and `down`
//! takes them out. A host without iptables or Docker is left alone.

use std::path::Path;
use std::time::Duration;

use crate::command;

const CHAIN: &str = "DOCKER-USER";
const TIMEOUT: Duration = Duration::from_secs(20);
/// `iptables -w`: wait this long for the xtables lock dockerd also takes.
const LOCK_WAIT_SECS: &str = "5";
/// Where Debian and Docker's packages install these.
const SEARCH_PATH: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"];

/// The bridge's rules in order, each as iptables' arguments after the chain's
/// name. New connections from the bridge into Docker's own bridges are dropped,
/// as Docker's isolation chains (which come after DOCKER-USER) drop them between
/// its networks; anything else from the bridge is forwarded (vxn's nftables table
/// and each vif's anti-spoofing filter decide the rest), and replies come back.
fn rules(bridge: &str) -> Vec<Vec<String>> {
    let comment = format!("vxn bridge {bridge}");
    let rule = |a: &[&str], verdict: &str| -> Vec<String> {
        a.iter()
            .copied()
            .chain([
                "-m",
                "comment",
                "--comment",
                comment.as_str(),
                "-j",
                verdict,
            ])
            .map(String::from)
            .collect()
    };
    let new_into = |docker_bridge: &str| {
        rule(
            &[
                "-i",
                bridge,
                "-o",
                docker_bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
            ],
            "DROP",
        )
    };
    vec![
        new_into("docker0"),
        // Docker's user networks: br-<network id>
        new_into("br-+"),
        rule(&["-i", bridge], "ACCEPT"),
        rule(
            &[
                "-o",
                bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
            ],
            "ACCEPT",
        ),
    ]
}

fn installed(program: &str) -> bool {
    SEARCH_PATH
        .iter()
        .any(|d| Path::new(d).join(program).is_file())
}

async fn iptables(args: &[&str], rule: &[String]) -> Result<(), String> {
    let mut argv: Vec<&str> = vec!["-w", LOCK_WAIT_SECS];
    argv.extend_from_slice(args);
    argv.extend(rule.iter().map(String::as_str));
    command::run("iptables", &argv, TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn chain_exists() -> bool {
    iptables(&["-S", CHAIN], &[]).await.is_ok()
}

async fn has_rule(rule: &[String]) -> bool {
    iptables(&["-C", CHAIN], rule).await.is_ok()
}

/// Put the bridge's rules in `DOCKER-USER` (each once); `Ok(None)`: no Docker
/// here (no iptables, no chain and no dockerd), nothing to do.
pub async fn allow_bridge(bridge: &str) -> Result<Option<String>, String> {
    if !installed("iptables") {
        return Ok(None);
    }
    if !chain_exists().await {
        if !installed("dockerd") {
            return Ok(None);
        }
        // dockerd has not run yet: it finds the chain and jumps to it.
        iptables(&["-N", CHAIN], &[]).await?;
    }
    // In order, at the chain's top, whatever was there (the drops must come first)
    remove_bridge(bridge).await?;
    for rule in rules(bridge).iter().rev() {
        iptables(&["-I", CHAIN, "1"], rule).await?;
    }
    Ok(Some(format!(
        "{bridge} forwarded past Docker's FORWARD policy (iptables chain {CHAIN})"
    )))
}

/// Take the bridge's rules out of `DOCKER-USER` (every copy); the chain is
/// dockerd's and stays. `Ok(false)`: there were none.
pub async fn remove_bridge(bridge: &str) -> Result<bool, String> {
    if !installed("iptables") || !chain_exists().await {
        return Ok(false);
    }
    let mut removed = false;
    for rule in rules(bridge) {
        // bounded: a copy per `iptables -I` someone else may have added too
        for _ in 0..16 {
            if !has_rule(&rule).await {
                break;
            }
            iptables(&["-D", CHAIN], &rule).await?;
            removed = true;
        }
    }
    Ok(removed)
}

/// For `vxnctl network status`: whether the bridge's rules are in place where
/// Docker's chain exists.
pub async fn status(bridge: &str) -> Option<String> {
    if !installed("iptables") || !chain_exists().await {
        return None;
    }
    let all = rules(bridge);
    let mut present = 0;
    for rule in &all {
        present += usize::from(has_rule(rule).await);
    }
    Some(match present {
        n if n == all.len() => format!("Docker's FORWARD ({CHAIN}): {bridge} allowed"),
        0 => format!("Docker's FORWARD ({CHAIN}): {bridge} not allowed (vxnctl network up)"),
        _ => format!("Docker's FORWARD ({CHAIN}): {bridge} half allowed (vxnctl network up)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_bridges_are_closed_to_new_connections_before_the_bridge_is_let_through() {
        let r: Vec<String> = rules("xenbr0").iter().map(|r| r.join(" ")).collect();
        let c = "-m comment --comment vxn bridge xenbr0";
        assert_eq!(
            r,
            [
                format!("-i xenbr0 -o docker0 -m conntrack --ctstate NEW {c} -j DROP"),
                format!("-i xenbr0 -o br-+ -m conntrack --ctstate NEW {c} -j DROP"),
                format!("-i xenbr0 {c} -j ACCEPT"),
                format!("-o xenbr0 -m conntrack --ctstate RELATED,ESTABLISHED {c} -j ACCEPT"),
            ]
        );
    }
}
