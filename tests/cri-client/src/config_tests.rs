use super::*;
use serde_json::json;

fn pod_json() -> Value {
    // The shape of crictl's sandbox-config.json examples, every supported field set.
    json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u-1", "attempt": 2},
        "hostname": "web-host",
        "log_directory": "/tmp/pod-logs",
        "dns_config": {"servers": ["10.0.0.53"], "searches": ["svc.local"], "options": ["ndots:2"]},
        "port_mappings": [
            {"protocol": "UDP", "container_port": 53, "host_port": 5353, "host_ip": "127.0.0.1"},
            {"container_port": 80}
        ],
        "labels": {"app": "web"},
        "annotations": {"vxn.io/x": "y"},
        "linux": {
            "cgroup_parent": "/vxn",
            "security_context": {"namespace_options": {"network": "NODE", "pid": 1, "ipc": "POD"}}
        }
    })
}

#[test]
fn parses_a_full_pod_config() {
    let pod = pod_config(&pod_json()).unwrap();
    let md = pod.metadata.unwrap();
    assert_eq!(
        (md.name.as_str(), md.namespace.as_str(), md.uid.as_str()),
        ("web", "default", "u-1")
    );
    assert_eq!(md.attempt, 2);
    assert_eq!(pod.hostname, "web-host");
    assert_eq!(pod.log_directory, "/tmp/pod-logs");
    let dns = pod.dns_config.unwrap();
    assert_eq!(dns.servers, ["10.0.0.53"]);
    assert_eq!(dns.searches, ["svc.local"]);
    assert_eq!(dns.options, ["ndots:2"]);
    assert_eq!(pod.port_mappings.len(), 2);
    assert_eq!(pod.port_mappings[0].protocol, cri::Protocol::Udp as i32);
    assert_eq!(pod.port_mappings[0].container_port, 53);
    assert_eq!(pod.port_mappings[0].host_port, 5353);
    assert_eq!(pod.port_mappings[0].host_ip, "127.0.0.1");
    assert_eq!(pod.port_mappings[1].protocol, cri::Protocol::Tcp as i32);
    assert_eq!(pod.labels["app"], "web");
    assert_eq!(pod.annotations["vxn.io/x"], "y");
    let linux = pod.linux.unwrap();
    assert_eq!(linux.cgroup_parent, "/vxn");
    let ns = linux.security_context.unwrap().namespace_options.unwrap();
    assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
    assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
    assert_eq!(ns.ipc, cri::NamespaceMode::Pod as i32);
}

#[test]
fn minimal_pod_config_defaults_the_rest() {
    let pod = pod_config(&json!({"metadata": {"name": "p"}})).unwrap();
    assert_eq!(pod.metadata.unwrap().name, "p");
    assert!(pod.linux.is_none() && pod.dns_config.is_none());
    assert!(pod.port_mappings.is_empty() && pod.labels.is_empty());
    // null is absent, as in protojson.
    assert!(pod_config(&json!({"hostname": null}))
        .unwrap()
        .hostname
        .is_empty());
}

#[test]
fn accepts_json_camel_case_names() {
    let pod = pod_config(&json!({
        "logDirectory": "/l",
        "linux": {"cgroupParent": "/c", "securityContext": {"namespaceOptions": {"network": 2}}}
    }))
    .unwrap();
    assert_eq!(pod.log_directory, "/l");
    let linux = pod.linux.unwrap();
    assert_eq!(linux.cgroup_parent, "/c");
    let ns = linux.security_context.unwrap().namespace_options.unwrap();
    assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
}

#[test]
fn rejects_unknown_fields_and_wrong_types_with_a_path() {
    let err = pod_config(&json!({"hostnme": "x"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pod") && err.contains("hostnme"), "{err}");
    let err =
        pod_config(&json!({"linux": {"security_context": {"namespace_options": {"net": 0}}}}))
            .unwrap_err()
            .to_string();
    assert!(
        err.starts_with("pod.linux.security_context.namespace_options"),
        "{err}"
    );
    let err = pod_config(&json!({"metadata": {"attempt": -1}}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pod.metadata.attempt"), "{err}");
    let err = pod_config(&json!({"labels": {"a": 1}}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pod.labels"), "{err}");
    let err = pod_config(&json!({"hostname": 3})).unwrap_err().to_string();
    assert!(err.contains("pod.hostname"), "{err}");
    assert!(pod_config(&json!([])).is_err());
    assert!(pod_config(&json!({"logDirectory": "a", "log_directory": "b"})).is_err());
}

#[test]
fn rejects_bad_enum_values() {
    let bad = |v: Value| {
        pod_config(&json!({"linux": {"security_context": {"namespace_options": {"pid": v}}}}))
            .is_err()
    };
    assert!(bad(json!("HOST")));
    assert!(bad(json!(9)));
    assert!(bad(json!(true)));
    let err = pod_config(&json!({"port_mappings": [{"protocol": "ICMP"}]}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pod.port_mappings[0].protocol"), "{err}");
}

#[test]
fn parses_a_full_container_config() {
    let c = container_config(&json!({
        "metadata": {"name": "busybox", "attempt": 1},
        "image": {"image": "docker.io/library/busybox:1.35"},
        "command": ["/bin/sh"],
        "args": ["-c", "echo hi"],
        "working_dir": "/work",
        "envs": [{"key": "A", "value": "1"}, {"key": "B"}],
        "mounts": [{
            "container_path": "/data", "host_path": "/srv/data", "readonly": true,
            "selinux_relabel": true, "propagation": "PROPAGATION_BIDIRECTIONAL"
        }],
        "labels": {"l": "1"},
        "annotations": {"a": "2"},
        "log_path": "busybox.log",
        "stdin": true, "stdin_once": true, "tty": true,
        "linux": {
            "resources": {
                "cpu_period": 100000, "cpu_quota": "50000", "cpu_shares": 512,
                "memory_limit_in_bytes": 268435456
            },
            "security_context": {
                "privileged": true,
                "capabilities": {"add_capabilities": ["NET_ADMIN"], "drop_capabilities": ["ALL"]},
                "run_as_user": {"value": 1000},
                "readonly_rootfs": true
            }
        }
    }))
    .unwrap();
    let md = c.metadata.unwrap();
    assert_eq!((md.name.as_str(), md.attempt), ("busybox", 1));
    assert_eq!(c.image.unwrap().image, "docker.io/library/busybox:1.35");
    assert_eq!(c.command, ["/bin/sh"]);
    assert_eq!(c.args, ["-c", "echo hi"]);
    assert_eq!(c.working_dir, "/work");
    assert_eq!(c.envs.len(), 2);
    assert_eq!(
        (c.envs[0].key.as_str(), c.envs[0].value.as_str()),
        ("A", "1")
    );
    assert_eq!(
        (c.envs[1].key.as_str(), c.envs[1].value.as_str()),
        ("B", "")
    );
    let m = &c.mounts[0];
    assert_eq!(
        (m.container_path.as_str(), m.host_path.as_str()),
        ("/data", "/srv/data")
    );
    assert!(m.readonly && m.selinux_relabel);
    assert_eq!(
        m.propagation,
        cri::MountPropagation::PropagationBidirectional as i32
    );
    assert_eq!(c.labels["l"], "1");
    assert_eq!(c.annotations["a"], "2");
    assert_eq!(c.log_path, "busybox.log");
    assert!(c.stdin && c.stdin_once && c.tty);
    let linux = c.linux.unwrap();
    let r = linux.resources.unwrap();
    assert_eq!(
        (r.cpu_period, r.cpu_quota, r.cpu_shares),
        (100000, 50000, 512)
    );
    assert_eq!(r.memory_limit_in_bytes, 268435456);
    let sc = linux.security_context.unwrap();
    assert!(sc.privileged && sc.readonly_rootfs);
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.add_capabilities, ["NET_ADMIN"]);
    assert_eq!(caps.drop_capabilities, ["ALL"]);
    assert_eq!(sc.run_as_user.unwrap().value, 1000);
}

#[test]
fn a_containers_security_context_as_kubelet_sends_it() {
    let c = container_config(&json!({"metadata": {"name": "c"}, "image": {"image": "i"},
        "linux": {"security_context": {"namespace_options": {"pid": "CONTAINER"},
            "masked_paths": ["/proc/kcore"], "readonly_paths": ["/proc/sys"], "no_new_privs": true,
            "seccomp": {"profile_type": 2, "localhost_ref": "/p.json"}}}}))
    .unwrap();
    let sc = c.linux.unwrap().security_context.unwrap();
    assert_eq!(
        sc.namespace_options.unwrap().pid,
        cri::NamespaceMode::Container as i32
    );
    assert_eq!(sc.masked_paths, ["/proc/kcore"]);
    assert_eq!(sc.readonly_paths, ["/proc/sys"]);
    assert!(sc.no_new_privs);
    let p = sc.seccomp.unwrap();
    assert_eq!((p.profile_type, p.localhost_ref.as_str()), (2, "/p.json"));
}

#[test]
fn minimal_container_config_and_errors() {
    let c = container_config(&json!({"metadata": {"name": "c"}, "image": {"image": "i"}})).unwrap();
    assert!(c.linux.is_none() && c.mounts.is_empty() && !c.tty);
    let err = container_config(&json!({"mounts": [{"container_path": "/x", "ro": true}]}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("container.mounts[0]") && err.contains("\"ro\""),
        "{err}"
    );
    let err = container_config(&json!({"command": ["a", 1]}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("container.command"), "{err}");
    let err = container_config(&json!({"linux": {"resources": {"cpu_quota": 1.5}}}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("container.linux.resources.cpu_quota"), "{err}");
    let err = container_config(&json!({"envs": [{"name": "A"}]}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("container.envs[0]"), "{err}");
}

#[test]
fn snake_case_conversion() {
    assert_eq!(snake_case("memoryLimitInBytes"), "memory_limit_in_bytes");
    assert_eq!(snake_case("log_path"), "log_path");
    assert_eq!(snake_case("hostIp"), "host_ip");
}
