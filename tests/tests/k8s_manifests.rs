//! The Kubernetes files in images/k8s/ (issue 11, part 3) hold together. They have not
//! been tried on a cluster (none here); this checks what can be checked without one:
//! every YAML document parses (Python's yaml.safe_load_all, Debian's python3-yaml: the
//! workspace has no YAML crate), has the kind, apiVersion and required fields it should,
//! volume and mount names match, `$(VAR)` in a subPathExpr is defined in its container,
//! and the names and paths agree across files: the image the DaemonSet runs is the one
//! Dockerfile.node builds, the plugin lands where the runtime looks, the network
//! configuration it installs is the one the NetworkAttachmentDefinition names and
//! docknet-cni accepts, the run directory is docknetd's and the pods' hostPath, the pipe
//! owner is the pods' user, and the pods mount `pods/$(POD_UID)/IFNAME` for the interface
//! name they ask Multus for. Needs python3 with yaml; prints why and passes otherwise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use docknet_tests::image::workspace;
use docknet_tests::TempDir;
use serde_json::Value;

fn k8s_dir() -> PathBuf {
    workspace().join("images/k8s")
}

/// Every document of a YAML file, as JSON (through python3's yaml.safe_load_all).
/// `None` (with the reason printed) when python3 or its yaml module is missing.
fn load_yaml(test: &str, path: &Path) -> Option<Vec<Value>> {
    let script = "import json, sys, yaml\n\
                  docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
                  print(json.dumps(docs))";
    let out = match Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipping {test}: cannot run python3 ({e}; apt-get install python3-yaml)");
            return None;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("No module named 'yaml'") {
        eprintln!("skipping {test}: python3 has no yaml module (apt-get install python3-yaml)");
        return None;
    }
    assert!(
        out.status.success(),
        "{} is not valid YAML:\n{stderr}",
        path.display()
    );
    let docs: Value = serde_json::from_slice(&out.stdout).expect("python3 printed JSON");
    Some(docs.as_array().expect("a list of documents").clone())
}

fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

fn arr<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not a list: {v}"))
}

/// The pod template's containers and init containers.
fn containers(pod: &Value) -> Vec<&Value> {
    let mut v: Vec<&Value> = arr(&pod["containers"], "containers").iter().collect();
    if let Some(init) = pod["initContainers"].as_array() {
        v.extend(init);
    }
    v
}

/// Checks a workload's pod template: labels, containers, volumes and mounts.
fn check_workload(doc: &Value) {
    let name = s(&doc["metadata"]["name"], "metadata.name");
    let spec = &doc["spec"];
    let selector = spec["selector"]["matchLabels"]
        .as_object()
        .unwrap_or_else(|| panic!("{name}: no spec.selector.matchLabels"));
    let labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in selector {
        assert_eq!(
            &labels[k], v,
            "{name}: selector {k} does not match the template"
        );
    }
    let pod = &spec["template"]["spec"];
    let volumes: BTreeSet<&str> = arr(&pod["volumes"], "volumes")
        .iter()
        .map(|v| s(&v["name"], "volume name"))
        .collect();
    let mut mounted = BTreeSet::new();
    for c in containers(pod) {
        let cname = s(&c["name"], "container name");
        s(&c["image"], "image");
        let env: BTreeSet<&str> = c["env"]
            .as_array()
            .map(|e| e.iter().map(|e| s(&e["name"], "env name")).collect())
            .unwrap_or_default();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vol = s(&m["name"], "mount name");
            assert!(
                volumes.contains(vol),
                "{name}/{cname}: mount {vol} names no volume ({volumes:?})"
            );
            assert!(
                s(&m["mountPath"], "mountPath").starts_with('/'),
                "{name}/{cname}: {m}"
            );
            mounted.insert(vol);
            if let Some(expr) = m["subPathExpr"].as_str() {
                for var in expr.split("$(").skip(1) {
                    let var = var.split(')').next().unwrap();
                    assert!(
                        env.contains(var),
                        "{name}/{cname}: subPathExpr uses $({var}), not in env {env:?}"
                    );
                }
            }
        }
    }
    assert_eq!(
        mounted, volumes,
        "{name}: every volume is mounted somewhere"
    );
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    arr(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn mount<'a>(c: &'a Value, volume: &str) -> &'a Value {
    arr(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"] == volume)
        .unwrap_or_else(|| panic!("{}: no mount of {volume}", c["name"]))
}

/// The value after `flag` in an argument list.
fn flag_value<'a>(args: &'a [Value], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    s(&args[i + 1], flag)
}

#[test]
fn k8s_manifests_parse_and_agree() {
    let test = "k8s_manifests_parse_and_agree";
    let dir = k8s_dir();
    let mut all = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("images/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(
        files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        [
            "dn-httpd-deployment.yaml",
            "dn-httpd-nat.yaml",
            "docknet-node.yaml",
            "network-attachment.yaml"
        ]
    );
    let mut nat_docs = Vec::new();
    for f in &files {
        let Some(docs) = load_yaml(test, f) else {
            return;
        };
        if f.ends_with("dn-httpd-nat.yaml") {
            nat_docs = docs;
            continue;
        }
        assert!(!docs.is_empty(), "{}: no documents", f.display());
        for d in docs {
            s(&d["apiVersion"], "apiVersion");
            s(&d["kind"], "kind");
            s(&d["metadata"]["name"], "metadata.name");
            all.push(d);
        }
    }
    let find = |kind: &str, api: &str| -> &Value {
        let found: Vec<&Value> = all.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "one {kind} expected");
        assert_eq!(found[0]["apiVersion"], api, "{kind}");
        found[0]
    };
    let config_map = find("ConfigMap", "v1");
    let daemonset = find("DaemonSet", "apps/v1");
    let nad = find("NetworkAttachmentDefinition", "k8s.cni.cncf.io/v1");
    let deployment = find("Deployment", "apps/v1");
    assert_eq!(all.len(), 4, "unexpected documents");
    check_workload(daemonset);
    check_workload(deployment);

    // The node: docknetd privileged on the host network, its run directory the host's
    // /run/docknet with Bidirectional propagation (its tmpfs of pipes reaches the host).
    let node = &daemonset["spec"]["template"]["spec"];
    assert_eq!(node["hostNetwork"], true);
    let docknetd = arr(&node["containers"], "containers")
        .iter()
        .find(|c| c["name"] == "docknetd")
        .expect("container docknetd");
    assert_eq!(docknetd["securityContext"]["privileged"], true);
    let command = arr(&docknetd["command"], "docknetd command");
    assert_eq!(command[0], "/usr/local/bin/docknetd");
    let run_dir = flag_value(command, "--run-dir");
    let run_mount = mount(docknetd, "run-docknet");
    assert_eq!(run_mount["mountPath"], run_dir);
    assert_eq!(run_mount["mountPropagation"], "Bidirectional");
    let host_run = &volume(node, "run-docknet")["hostPath"];
    assert_eq!(host_run["path"], run_dir);

    // The installer: the plugin into the node's /opt/cni/bin, the configuration into
    // Multus's directory, both from what the image holds.
    let install = arr(&node["initContainers"], "initContainers")
        .iter()
        .find(|c| c["name"] == "install-cni")
        .expect("init container install-cni");
    assert_eq!(install["image"], docknetd["image"], "one node image");
    let script = s(&arr(&install["command"], "command")[2], "install script");
    let bin_mount = s(&mount(install, "cni-bin")["mountPath"], "cni-bin mount");
    assert_eq!(volume(node, "cni-bin")["hostPath"]["path"], "/opt/cni/bin");
    assert!(
        script.contains("cp /usr/local/bin/docknet-cni "),
        "{script}"
    );
    assert!(
        script.contains(&format!("{bin_mount}/docknet-cni\n")),
        "the plugin is not installed into {bin_mount}: {script}"
    );
    let conf_mount = s(&mount(install, "cni-conf")["mountPath"], "cni-conf mount");
    assert_eq!(volume(node, "cni-conf")["hostPath"]["path"], "/etc/cni");
    let conf_name = s(&nad["metadata"]["name"], "NAD name");
    assert!(
        script.contains(&format!("{conf_mount}/multus/net.d/{conf_name}.conf\n")),
        "the configuration is not installed where Multus reads network {conf_name}: {script}"
    );
    assert_eq!(
        volume(node, "config")["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    assert!(
        nad["spec"]["config"].is_null(),
        "the NAD names the on-disk configuration"
    );

    // The image: what Dockerfile.node builds and copies where the DaemonSet runs it.
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile.node")).expect("Dockerfile.node");
    let image = s(&docknetd["image"], "image");
    assert!(
        dockerfile.contains(&format!("-t {image} ")),
        "Dockerfile.node does not build {image}"
    );
    let copy = dockerfile
        .lines()
        .find(|l| l.starts_with("COPY "))
        .expect("a COPY line");
    for b in ["docknetd", "docknetctl", "docknet-cni"] {
        assert!(
            copy.contains(&format!("target/release/{b} ")),
            "Dockerfile.node does not copy {b}: {copy}"
        );
    }
    assert!(copy.ends_with(" /usr/local/bin/"), "{copy}");
    assert!(dockerfile.contains("containernetworking-plugins"));
    let probe = arr(&docknetd["readinessProbe"]["exec"]["command"], "probe");
    assert_eq!(probe[0], "/usr/local/bin/docknetctl");
    assert_eq!(flag_value(probe, "--run-dir"), run_dir);

    // The network configuration: the NAD's name, docknetd's run directory, the pods'
    // user as the pipes' owner, host-local with the node's subnet.
    let data = &config_map["data"];
    let subnet = s(&data["subnet.default"], "subnet.default");
    let (net, prefix) = subnet.split_once('/').expect("a CIDR");
    net.parse::<std::net::Ipv4Addr>().expect("subnet address");
    prefix.parse::<u8>().expect("subnet prefix");
    let conf_text = s(&data[format!("{conf_name}.conf")], "the configuration");
    assert!(conf_text.contains("\"SUBNET\""), "no SUBNET placeholder");
    let conf: Value =
        serde_json::from_str(&conf_text.replace("SUBNET", subnet)).expect("configuration JSON");
    assert_eq!(conf["name"], conf_name);
    assert_eq!(conf["type"], "docknet-cni");
    assert_eq!(conf["runDir"], run_dir);
    assert_eq!(conf["ipam"]["type"], "host-local");
    assert_eq!(conf["ipam"]["subnet"], subnet);
    let pod = &deployment["spec"]["template"]["spec"];
    let user = &pod["securityContext"];
    assert_eq!(
        conf["owner"],
        format!("{}:{}", user["runAsUser"], user["runAsGroup"]),
        "the pipes' owner is the pods' user"
    );

    // docknet-cni accepts it: ADD gets past the configuration checks (code 7 would name
    // a bad key) to docknetd, which is not running here (code 11).
    let tmp = TempDir::new();
    let mut local = conf.clone();
    local["runDir"] = tmp.path().join("run").display().to_string().into();
    local["stateDir"] = tmp.path().join("state").display().to_string().into();
    let vars = [
        ("CNI_COMMAND", "ADD".to_string()),
        ("CNI_CONTAINERID", "manifest-check".to_string()),
        ("CNI_NETNS", "/proc/self/ns/net".to_string()),
        ("CNI_IFNAME", "net1".to_string()),
        ("CNI_PATH", "/usr/lib/cni".to_string()),
    ];
    let (_, answer, _) = docknet_tests::pods::run_cni(&vars, &local);
    assert_eq!(
        answer["code"], 11,
        "docknet-cni on the installed configuration: {answer}"
    );

    // The pods: the network asked from Multus, its interface name in the subPathExpr,
    // the pod UID from the downward API, the run directory as the hostPath.
    let networks = s(
        &deployment["spec"]["template"]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"],
        "networks annotation",
    );
    let (network, ifname) = networks.split_once('@').expect("NETWORK@IFNAME");
    assert_eq!(network, conf_name);
    let web = &arr(&pod["containers"], "containers")[0];
    let pipe_mount = mount(web, "docknet");
    assert_eq!(pipe_mount["mountPath"], "/run/docknet/pipe");
    assert_eq!(
        pipe_mount["subPathExpr"],
        format!("pods/$(POD_UID)/{ifname}")
    );
    let pod_uid = arr(&web["env"], "env")
        .iter()
        .find(|e| e["name"] == "POD_UID")
        .expect("POD_UID");
    assert_eq!(
        pod_uid["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.uid"
    );
    assert_eq!(volume(pod, "docknet")["hostPath"]["path"], run_dir);
    assert!(
        user["runAsUser"].as_u64().is_some_and(|u| u != 0),
        "the pods run as a non-root user"
    );

    check_nat_example(&nat_docs, &conf, subnet);
}

/// `dn-httpd-nat.yaml`: one Deployment per member and the NAT's, each asking Multus for
/// a fixed address in the node's subnet; the NAT's a forwarder with the VIP; the
/// ConfigMap's nat.json names exactly the members' addresses; the NAT reads it where the
/// ConfigMap is mounted.
fn check_nat_example(docs: &[Value], conf: &Value, subnet: &str) {
    assert_eq!(
        conf["capabilities"]["ips"], true,
        "Multus's ips need the capability"
    );
    let (net, prefix) = subnet.split_once('/').expect("a CIDR");
    let net: u32 = net.parse::<std::net::Ipv4Addr>().expect("subnet").into();
    let prefix: u32 = prefix.parse().expect("prefix");
    let mask = u32::MAX << (32 - prefix);
    let selection = |d: &Value| -> Value {
        let a = s(
            &d["spec"]["template"]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"],
            "networks annotation",
        );
        let v: Value = serde_json::from_str(a).expect("a JSON network selection");
        let v = arr(&v, "network selection");
        assert_eq!(v.len(), 1, "{a}");
        assert_eq!(v[0]["name"], conf["name"]);
        assert_eq!(v[0]["interface"], "net1");
        v[0].clone()
    };
    let fixed = |sel: &Value| -> String {
        let ip = s(&arr(&sel["ips"], "ips")[0], "ips[0]");
        let (a, p) = ip.split_once('/').expect("ips as CIDR");
        assert_eq!(p.parse::<u32>().expect("prefix"), prefix, "{ip}");
        let a32: u32 = a.parse::<std::net::Ipv4Addr>().expect("address").into();
        assert_eq!(a32 & mask, net, "{ip} is not in {subnet}");
        assert_ne!(a32, net + 1, "{ip} is the master's");
        a.to_string()
    };
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("ConfigMap");
    let nat: Value =
        serde_json::from_str(s(&cm["data"]["nat.json"], "nat.json")).expect("nat.json");
    assert_eq!(
        nat["mode"], "fullnat",
        "DNAT needs fast channels docknet-cni cannot make"
    );
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert_eq!(docs.len(), deployments.len() + 1, "unexpected documents");
    let mut members = Vec::new();
    let mut vip = None;
    for d in &deployments {
        check_workload(d);
        assert_eq!(d["spec"]["replicas"], 1, "one pod per fixed address");
        assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
        let sel = selection(d);
        let ip = fixed(&sel);
        let pod = &d["spec"]["template"]["spec"];
        let c = &arr(&pod["containers"], "containers")[0];
        assert_eq!(mount(c, "docknet")["subPathExpr"], "pods/$(POD_UID)/net1");
        if c["image"] == "dn-nat:latest" {
            assert_eq!(sel["cni-args"]["forwarder"], true);
            let args = arr(&c["args"], "args");
            let cfg = flag_value(args, "--config");
            let m = s(&mount(c, "config")["mountPath"], "config mount");
            assert_eq!(cfg, format!("{m}/nat.json"));
            assert_eq!(
                volume(pod, "config")["configMap"]["name"],
                cm["metadata"]["name"]
            );
            assert!(vip.replace(ip).is_none(), "one NAT");
        } else {
            assert_eq!(c["image"], "dn-httpd:latest");
            members.push((s(&d["metadata"]["name"], "name").to_string(), ip));
        }
    }
    assert!(vip.is_some(), "no dn-nat Deployment");
    let backends: Vec<(String, String)> = arr(&nat["backends"], "backends")
        .iter()
        .map(|b| {
            (
                s(&b["name"], "name").to_string(),
                s(&b["ip"], "ip").to_string(),
            )
        })
        .collect();
    assert_eq!(
        backends, members,
        "nat.json's backends are the member Deployments"
    );
}
